"""Wall time and peak memory of a lab preset, stage by stage, and training tokens/s per student size.

    python bench/lab.py [--recipe recipes/lab/quick.yaml] [--run-dir runs/bench-lab] [--out bench/results/lab.json]
    python bench/lab.py --from-run runs/lab-full [--out bench/results/lab-full.json]
    python bench/lab.py --precision [--sizes xxs,xs,s,m,l] [--out bench/results/lab-precision.json]

Each stage runs as its own `mixcot run RECIPE --only <stage>:*` process, started fresh, so its wall time includes Python
start-up and imports and its peak resident memory (from `wait4`) is the stage's alone. The in-process time of every
unit is read back from the run's unit files. Target (issue 8): the quick preset within 15 minutes on this 2-core machine.
`--from-run` runs nothing: it sums the unit seconds of a finished run (e.g. the full preset, which may have run in parts
and resumed) per stage and per student, and its busy wall time (the union of the units' running intervals: time between
sittings is left out, pauses and jobs beside it are not) against the full preset's 3-hour target (issue 14).
`--precision` measures bf16 autocast against fp32 (this CPU has AMX bf16) at each student size, one torch thread: training
tokens/s and greedy-generation tokens/s (one batch of 32 test prompts), and at one size the final training loss and greedy
accuracy after the same steps on the same batches from the same initial weights, and greedy tokens/s by batch size.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import yaml

STAGES = ["world", "base", "sample", "mix", "train", "eval", "report"]
QUICK_TARGET, FULL_TARGET = 900, 10800                 # seconds of wall time on this 2-core machine (issue 14)


def retarget(recipe_path:Path, run_dir:Path) -> Path:
    "A copy of the recipe whose run directory (and every path inside it) is `run_dir`."
    text, old = recipe_path.read_text(), yaml.safe_load(recipe_path.read_text())["run_dir"]
    out = Path(tempfile.mkdtemp())/recipe_path.name
    out.write_text(text.replace(old, str(run_dir)))
    return out


def run_stage(recipe:Path, stage:str) -> dict:
    "Run one stage in a fresh process; its wall seconds and peak resident memory (MiB)."
    pattern = stage if stage in ("world", "report") else f"{stage}:*"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mixcot_nb.cli", "run", str(recipe), "--only", pattern],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0: sys.exit(f"stage {stage} failed:\n{err[-3000:]}")
    return {"stage": stage, "wall_seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def done_units(run_dir:Path) -> list[dict]:
    "The state files of a run's finished units."
    states = [json.loads(f.read_text()) for f in sorted((run_dir/"units").glob("*.json"))]
    return [s for s in states if s.get("status") == "done"]


def unit_times(units:list[dict]) -> dict[str, float]:
    "In-process seconds of each finished unit."
    return {s["id"]: s["seconds"] for s in units}


def busy_seconds(units:list[dict]) -> float:
    "Wall seconds during which at least one of the finished `units` was running: the union of their intervals."
    total, end = 0.0, float("-inf")
    for a, b in sorted((s["started"], s["finished"]) for s in units):
        total += max(0.0, b - max(a, end)); end = max(end, b)
    return total


def tokens_per_second(run_dir:Path) -> list[dict]:
    "Training throughput of every (student, arm), with the student's parameter count."
    rows = []
    for f in sorted((run_dir/"models").glob("*/train_summary.json")):
        s = json.loads(f.read_text())
        student, arm = f.parent.name.split("__")
        base = json.loads((run_dir/"bases"/student.split(".")[0]/"mixcot_lab.json").read_text())
        rows.append({"student": student, "params": base["params"], "arm": arm, "steps": s["steps"], "tokens_seen": s["tokens_seen"],
                     "train_seconds": s["train_seconds"], "tokens_per_second": s["tokens_per_second"]})
    return rows


def stage_seconds(units:dict[str, float], stage:str) -> float:
    return round(sum(v for k, v in units.items() if k.split(":")[0] == stage), 1)


def student_of(unit_id:str) -> str|None:
    "The student a base, train or eval unit belongs to (`train:lab-s.steps.s0:long` -> `lab-s`)."
    stage, _, rest = unit_id.partition(":")
    return rest.split(":")[0].split(".")[0] if stage in ("base", "train", "eval") else None


def sizes_throughput(tps:list[dict]) -> list[dict]:
    "Training tokens/s per student: all its trainings' tokens over all their seconds."
    by_size = {}
    for r in tps: by_size.setdefault((r["student"].split(".")[0], r["params"]), []).append(r)
    return [{"student": s, "params": p, "trainings": len(rs),
             "tokens_per_second": round(sum(r["tokens_seen"] for r in rs) / sum(r["train_seconds"] for r in rs), 1)}
            for (s, p), rs in by_size.items()]


def summarize_run(run_dir:Path, out:Path):
    "Unit seconds of a finished run per stage and per student, and training tokens/s per student."
    done = done_units(run_dir)
    units, busy = unit_times(done), busy_seconds(done)
    stages = {s: stage_seconds(units, s) for s in STAGES}
    students = {}
    for k, v in units.items():
        if (s := student_of(k)): students[s] = round(students.get(s, 0) + v, 1)
    total, planned = sum(units.values()), len(json.loads((run_dir/"manifest.json").read_text())["units"])
    result = {"run_dir": str(run_dir), "cpus": os.cpu_count(), "units": len(units), "planned_units": planned,
              "unit_seconds": round(total, 1), "busy_wall_seconds": round(busy, 1), "target_seconds": FULL_TARGET,
              "stages": stages, "students": students, "unit_times": units,
              "tokens_per_second_by_student": sizes_throughput(tokens_per_second(run_dir))}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    verdict = ("met" if busy <= FULL_TARGET else "not met") if len(units) == planned else f"run unfinished, {planned - len(units)} units left"
    print(f"{len(units)} of {planned} units done, {total / 60:.1f} min of unit time, {busy / 60:.1f} min of busy wall time "
          f"(target {FULL_TARGET // 60} min of wall time: {verdict})")
    for s, v in stages.items(): print(f"{s:<8} {v / 60:>7.1f} min")
    for s, v in students.items(): print(f"{s:<12} {v / 60:>7.1f} min")
    for s in result["tokens_per_second_by_student"]:
        print(f"{s['student']:<12} {s['params']:>9,} params  {s['tokens_per_second']:>9,.0f} training tokens/s")
    print(f"written {out}")


def _batches(tok, pairs, steps, batch_size, seed):
    "Padded (ids, labels, mask) batches of chat rows, reply tokens only in the labels, drawn with `seed`."
    import random, torch
    rows = []
    for problem, reply in pairs:
        conv = [{"role": "user", "content": problem}]
        p = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True), add_special_tokens=False).input_ids
        f = tok(tok.apply_chat_template(conv + [{"role": "assistant", "content": reply}], tokenize=False), add_special_tokens=False).input_ids
        rows.append((f, [-100]*len(p) + f[len(p):]))
    rng, out = random.Random(seed), []
    for _ in range(steps):
        b = rng.sample(rows, batch_size)
        L = max(len(f) for f, _ in b)
        out.append((torch.tensor([f + [tok.pad_token_id]*(L-len(f)) for f, _ in b]),
                    torch.tensor([l + [-100]*(L-len(l)) for _, l in b]),
                    torch.tensor([[1]*len(f) + [0]*(L-len(f)) for f, _ in b])))
    return out


def _train(model, batches, bf16:bool, lr:float=3e-3) -> tuple[float, float]:
    "AdamW over `batches` (bf16 autocast or fp32); tokens/s and the mean loss of the last 10 steps."
    import torch
    opt, losses, tokens = torch.optim.AdamW(model.parameters(), lr=lr), [], 0
    model.train()
    t0 = time.perf_counter()
    for ids, labels, mask in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward(); opt.step(); opt.zero_grad()
        losses.append(loss.item()); tokens += int(mask.sum())
    model.eval()
    return tokens / (time.perf_counter() - t0), sum(losses[-10:]) / len(losses[-10:])


def _greedy(model, tok, prompts, bf16:bool, max_new:int) -> tuple[float, list[str]]:
    "Greedy generation of every prompt in one left-padded batch; new tokens/s and the texts."
    import torch
    seqs = [tok(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True),
                add_special_tokens=False).input_ids for p in prompts]
    L, pad = max(map(len, seqs)), tok.pad_token_id
    ids = torch.tensor([[pad]*(L-len(s)) + s for s in seqs])
    mask = torch.tensor([[0]*(L-len(s)) + [1]*len(s) for s in seqs])
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=pad)
    secs, texts = time.perf_counter() - t0, [tok.decode(r[L:], skip_special_tokens=True) for r in out]
    new = sum(int((r[L:] != pad).sum()) for r in out)
    return new / secs, texts


def precision(sizes:list[str], steps:int, conv_size:str, conv_steps:int, out:Path, gen_batches:list[int]=(1, 8, 32, 100)):
    "bf16 autocast against fp32 per size: training and greedy tokens/s; at `conv_size`, loss and accuracy after training."
    import copy, torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from mixcot_nb.grading import grade
    from mixcot_nb.backends import train_tokenizer
    from mixcot_nb.lab import STUDENT_SIZES, WorldSpec, count_params, make_world, pretrain_examples, world_texts
    torch.set_num_threads(1)
    world = Path(tempfile.mkdtemp())/"world"
    make_world(WorldSpec(n_train=300, n_test=100, min_steps=2, max_steps=4), world)
    pairs = pretrain_examples(world, "short", 2000, [1, 2, 3], ["forward", "inverse"], "{problem}")
    tok = train_tokenizer(world_texts(world, prompt="{problem}"))
    test = [json.loads(l) for l in (world/"test.jsonl").read_text().splitlines()]
    def model_of(size):
        c = STUDENT_SIZES[size]
        torch.manual_seed(0)
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                                            num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                                            num_key_value_heads=c["num_heads"], tie_word_embeddings=True, bos_token_id=None,
                                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    rows = []
    for size in sizes:
        m0 = model_of(size)
        r = {"size": size, "params": count_params(m0)}
        batches = _batches(tok, pairs, steps + 2, 32, 0)
        for name, bf16 in (("fp32", False), ("bf16", True)):
            m = copy.deepcopy(m0)
            _train(m, batches[:2], bf16)                       # warm-up steps, not timed
            r[f"train_tps_{name}"] = round(_train(m, batches[2:], bf16)[0])
            r[f"greedy_tps_{name}"] = round(_greedy(m, tok, [t["problem"] for t in test[:32]], bf16, 48)[0])
        r["train_ratio"] = round(r["train_tps_bf16"] / r["train_tps_fp32"], 2)
        r["greedy_ratio"] = round(r["greedy_tps_bf16"] / r["greedy_tps_fp32"], 2)
        rows.append(r)
        print(f"{size:<8} {r['params']:>9,} params  train {r['train_tps_fp32']:>7,} -> {r['train_tps_bf16']:>7,} tok/s ({r['train_ratio']}x)"
              f"  greedy {r['greedy_tps_fp32']:>6,} -> {r['greedy_tps_bf16']:>6,} tok/s ({r['greedy_ratio']}x)", flush=True)
    conv = {"size": conv_size, "steps": conv_steps}
    batches = _batches(tok, pairs, conv_steps, 32, 1)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        m = model_of(conv_size)
        conv[f"final_loss_{name}"] = round(_train(m, batches, bf16)[1], 4)
        texts = _greedy(m, tok, [t["problem"] for t in test], bf16, 96)[1]
        conv[f"accuracy_{name}"] = round(sum(grade(x, t["answer"]).correct for x, t in zip(texts, test)) / len(test), 3)
    print(f"{conv_size} after {conv_steps} steps: loss fp32 {conv['final_loss_fp32']} bf16 {conv['final_loss_bf16']}; "
          f"greedy accuracy on {len(test)} test problems fp32 {conv['accuracy_fp32']} bf16 {conv['accuracy_bf16']}")
    batches = {}                                   # greedy tokens/s of the trained model by generation batch size (fp32)
    for b in gen_batches:
        prompts = [t["problem"] for t in (test * (b // len(test) + 1))[:b]]
        batches[b] = round(sum(_greedy(m, tok, prompts[i:i + b], False, 96)[0] for i in range(0, len(prompts), b)))
    conv["greedy_tps_by_batch"] = batches
    print(f"{conv_size} greedy tokens/s by batch size: " + ", ".join(f"{b}: {v:,}" for b, v in batches.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "threads": 1, "steps": steps, "sizes": rows, "convergence": conv}, indent=1))
    print(f"written {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", type=Path, default=Path("recipes/lab/quick.yaml"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-lab"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--from-run", type=Path, default=None, help="summarize this finished run instead of running a preset")
    ap.add_argument("--precision", action="store_true", help="bf16 autocast against fp32, per size, instead of a preset")
    ap.add_argument("--sizes", default="xxs,xs,s,m,l", help="--precision: the student sizes")
    ap.add_argument("--steps", type=int, default=12, help="--precision: timed training steps per size")
    ap.add_argument("--conv-size", default="xs", help="--precision: the size trained to compare loss and accuracy")
    ap.add_argument("--conv-steps", type=int, default=400, help="--precision: its training steps")
    ap.add_argument("--gen-batches", default="1,8,32,100", help="--precision: generation batch sizes to time at --conv-size")
    a = ap.parse_args()
    if a.precision: return precision(a.sizes.split(","), a.steps, a.conv_size, a.conv_steps, a.out or Path("bench/results/lab-precision.json"),
                                     [int(b) for b in a.gen_batches.split(",")])
    if a.from_run: return summarize_run(a.from_run, a.out or Path("bench/results/lab-full.json"))
    a.out = a.out or Path("bench/results/lab.json")
    shutil.rmtree(a.run_dir, ignore_errors=True)
    recipe = retarget(a.recipe, a.run_dir.resolve())
    t0 = time.perf_counter()
    stages = []
    for stage in STAGES:
        stages.append(run_stage(recipe, stage))
        print(f"{stage:<7} {stages[-1]['wall_seconds']:>7.1f} s  peak {stages[-1]['peak_rss_mib']:>7.1f} MiB", flush=True)
    total = time.perf_counter() - t0
    units = unit_times(done_units(a.run_dir))
    for s in stages: s["unit_seconds"] = stage_seconds(units, s["stage"])
    tps = tokens_per_second(a.run_dir)
    sizes = sizes_throughput(tps)
    result = {"recipe": str(a.recipe), "cpus": os.cpu_count(), "total_wall_seconds": round(total, 1),
              "target_seconds": QUICK_TARGET, "stages": stages, "units": units, "training": tps, "tokens_per_second_by_student": sizes}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(f"total {total:.0f} s (target {QUICK_TARGET} s: {'met' if total <= QUICK_TARGET else 'not met'})")
    for s in sizes: print(f"{s['student']:<10} {s['params']:>9,} params  {s['tokens_per_second']:>9,.0f} training tokens/s")
    print(f"written {a.out}")


if __name__ == "__main__": main()
