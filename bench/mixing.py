"""Mix-Long over a large synthetic trace store, against merely loading the same JSONL files with `datasets`.

The store: two teachers ("long", "short"), one trace each per problem (by default 1,000,000 traces, 500,000 problems),
written as real trace-store files (`traces/<teacher>/shard-0-of-1.jsonl`, one `Trace` per line in `Trace.model_dump()`
field order) plus `problems/math_train.jsonl`. Texts are slices of a random math-flavoured corpus (LaTeX, newlines,
backslashes, so JSON escaping is realistic): long CoT about 4 KB (5% truncated at 8 KB), short CoT about 1.3 KB (1%
truncated at 4 KB); 78% / 76% of the untruncated responses are correct.

Each measurement runs in a fresh child process (imports done before the clock starts); the page cache is warmed by
reading every file once first, so both sides read from memory.
- load: `datasets.load_dataset("json", data_files=<the trace files>, split="train", cache_dir=<fresh dir>)`. This
  includes writing the Arrow cache, which `load_dataset` always does.
- mix: `build_mix(builtin_mix("mix-long", roles), run)`: read the run's problem file (500,000 problems, ~0.45 GB),
  scan both stores, filter, pool, assign, fetch the chosen texts, write the `datasets` folder, stats and the length
  histogram.
Peak memory is the child's own high-water mark (`VmHWM`; `ru_maxrss` would start at the parent's RSS); CPU seconds (user + system, all threads) are reported beside wall time, as
they are steadier than wall time on a shared machine.

Target (issue 4): mixing adds at most 1x the load time on top of it, i.e. mix_s / load_s <= 2.0 (the loose reading:
mix total <= load + 1 x load); the strict reading, mix_s <= load_s, is reported too. Peak RSS < 4 GiB.

Run: python bench/mixing.py [--traces N] [--repeat R] [--tmp DIR] [--keep] [--profile]
     (writes bench/results/mixing.json; needs about 3 KB of /tmp per trace, ~3 GB at the default size)
"""
import argparse, json, os, platform, random, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLES = {"long": "long", "short": "short"}
TEACHERS = {  # mean chars of an untruncated response, truncation rate, chars at truncation, accuracy when untruncated
    "long": dict(mean=3800, trunc=0.05, cap=8000, acc=0.78, max_tokens=16384),
    "short": dict(mean=1300, trunc=0.01, cap=4000, acc=0.76, max_tokens=4096)}
VOCAB = (["Let", "us", "compute", "the", "sum", "of", "so", "we", "get", "Therefore,", "Wait,", "hmm", "check",
          "again", "which", "gives", "and", "is", "equal", "to", "since", "if", "then", "a", "b", "x", "y", "n"]
         + ["$x^2$", "$\\frac{1}{2}$", "\\sqrt{3}", "$(a+b)^2 = a^2 + 2ab + b^2$", "\\cdot", "\\pi", "=", "+", "-",
            "\\\\", "\"", "\n", "\n\n", "1", "2", "3", "4", "5", "10", "12", "\\left(", "\\right)", "é", "≤"])


def corpus(seed:int, n_words:int=2_000_000) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choices(VOCAB, k=n_words))


def _write_teacher(root:str, teacher:str, pids:list[str], seed:int) -> int:
    "Write one teacher's traces; return bytes written."
    import numpy as np
    cfg, text = TEACHERS[teacher], corpus(seed)
    rng = np.random.default_rng(seed)
    n, sigma = len(pids), 0.5
    lengths = rng.lognormal(np.log(cfg["mean"]) - sigma ** 2 / 2, sigma, n).astype(int).clip(80, cfg["cap"] - 1)
    trunc = rng.random(n) < cfg["trunc"]
    correct = (rng.random(n) < cfg["acc"]) & ~trunc
    starts = rng.integers(0, len(text) - cfg["cap"], n)
    sampling = {"n": 1, "temperature": 0.7, "top_p": 0.95, "max_tokens": cfg["max_tokens"], "seed": seed, "stop": []}
    path = Path(root)/"traces"/teacher/"shard-0-of-1.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        buf = []
        for i, pid in enumerate(pids):
            L = cfg["cap"] if trunc[i] else int(lengths[i])
            body = text[starts[i]:starts[i] + L]
            ans = str(i % 97)
            resp = body if trunc[i] else f"{body}\n\nFinal Answer: \\boxed{{{ans if correct[i] else ans + '1'}}}"
            d = {"teacher": teacher, "problem_id": pid, "sample_idx": 0, "response": resp,
                 "answer": None if trunc[i] else (ans if correct[i] else ans + "1"), "correct": bool(correct[i]),
                 "decided_by": "no_answer" if trunc[i] else "normalised" if correct[i] else "math_verify",
                 "prompt_tokens": 95, "completion_tokens": len(resp) // 3 + 1,
                 "finish_reason": "length" if trunc[i] else "stop", "sampling": sampling,
                 "seconds": round(float(len(resp)) / 3000, 3)}
            buf.append(json.dumps(d, ensure_ascii=False))
            if len(buf) == 10_000:
                s = "\n".join(buf) + "\n"; f.write(s); size += len(s); buf = []
        if buf: s = "\n".join(buf) + "\n"; f.write(s); size += len(s)
    return size


def generate(root:Path, n_traces:int, seed:int=0) -> dict:
    "Write the synthetic store under `root`; return its file list and sizes."
    from concurrent.futures import ProcessPoolExecutor
    from mixcot_nb.core import problem_id
    n_problems = n_traces // len(TEACHERS)
    text, rng = corpus(seed + 99, 200_000), random.Random(seed)
    problems = []
    for i in range(n_problems):
        a = rng.randrange(len(text) - 900)
        p = f"Problem {i}: " + text[a:a + rng.randint(120, 400)]
        problems.append({"id": problem_id("math_train", p), "dataset": "math_train", "problem": p, "answer": str(i % 97),
                         "solution": text[a + 400:a + 400 + rng.randint(200, 600)], "level": f"Level {1 + i % 5}",
                         "subject": "Algebra", "source_id": f"train/algebra/{i}.json", "meta": {}})
    (root/"problems").mkdir(parents=True, exist_ok=True)
    with open(root/"problems"/"math_train.jsonl", "w", encoding="utf-8") as f:
        for p in problems: f.write(json.dumps(p, ensure_ascii=False) + "\n")
    pids = [p["id"] for p in problems]
    with ProcessPoolExecutor(min(2, os.cpu_count() or 1)) as ex:
        sizes = dict(zip(TEACHERS, ex.map(_write_teacher, [str(root)] * len(TEACHERS), list(TEACHERS),
                                          [pids] * len(TEACHERS), [seed + 1 + j for j in range(len(TEACHERS))])))
    return {"problems": n_problems, "trace_bytes": sizes,
            "files": [str(root/"traces"/t/"shard-0-of-1.jsonl") for t in TEACHERS]}


# ---- measurements, each in a fresh process -------------------------------------------------------------------------

def peak_rss_mib() -> float:
    "This process's peak RSS: `VmHWM`, not `ru_maxrss`, which Linux seeds with the parent's RSS at fork."
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024
    except OSError: pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind:str, root:str, files:list[str], cache:str, profile:bool) -> dict:
    import datasets
    from mixcot_nb.mixing import build_mix, builtin_mix
    datasets.disable_progress_bars()
    rss0 = peak_rss_mib()
    cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_SELF))
    cpu0, prof = cpu(), None
    if profile:
        import cProfile; prof = cProfile.Profile(); prof.enable()
    t0 = time.perf_counter()
    if kind == "load":
        ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache)
        out = {"rows": len(ds)}
    else:
        stats = build_mix(builtin_mix("mix-long", ROLES), root, progress=False)
        out = {"rows": stats.rows, "rows_per_source": stats.rows_per_source, "dropped": stats.dropped,
               "eligible_problems_per_source": stats.eligible_problems_per_source}
    out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, cpu() - cpu0
    if prof is not None:
        import io, pstats
        prof.disable(); s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(25)
        print(s.getvalue(), file=sys.stderr)
    out["peak_rss_mib"], out["rss_after_imports_mib"] = peak_rss_mib(), rss0
    return out


def measure(kind:str, root:Path, files:list[str], tmp:Path, profile:bool=False) -> dict:
    cache = Path(tempfile.mkdtemp(dir=tmp, prefix="hf-cache-"))
    try:
        cmd = [sys.executable, __file__, "--child", kind, "--root", str(root), "--cache", str(cache), *files]
        if profile: cmd.append("--profile")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0: raise RuntimeError(f"{kind} failed:\n{r.stderr[-4000:]}")
        if profile: print(r.stderr[-6000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out["cache_bytes"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        return out
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(root/"mixes", ignore_errors=True)


def warm(files):
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24): pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1, help="measure each side this many times (interleaved), keep the best")
    ap.add_argument("--tmp", default="/tmp", help="where to write the store (deleted at the end unless --keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--store", default=None, help="reuse a store written by an earlier --keep run")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one mix run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"/"mixing.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.root, args.files, args.cache, args.profile))); return

    tmp = Path(args.tmp)
    free = shutil.disk_usage(tmp).free
    need = args.traces * 3200 * 2            # the store, the datasets cache and the mix, with room to spare
    if args.store is None and free < need:
        sys.exit(f"{tmp}: {free / 2**30:.1f} GiB free, need about {need / 2**30:.1f} GiB for {args.traces} traces")
    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(dir=tmp, prefix="mixcot-bench-"))
    try:
        if args.store:
            files = sorted(str(f) for f in (root/"traces").glob("*/*.jsonl"))
            count = lambda f: sum(1 for _ in open(f, "rb"))
            args.traces = sum(count(f) for f in files)
            gen = {"problems": count(root/"problems"/"math_train.jsonl"), "files": files, "seconds": None,
                   "trace_bytes": {Path(f).parent.name: os.path.getsize(f) for f in files}}
        else:
            t0 = time.perf_counter()
            gen = generate(root, args.traces, args.seed)
            gen["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"wrote {args.traces} traces ({sum(gen['trace_bytes'].values()) / 2**30:.2f} GiB) for {gen['problems']} "
                  f"problems in {gen['seconds']}s under {root}")
        files = gen["files"]
        warm(files + [str(root/"problems"/"math_train.jsonl")])
        runs = {"load": [], "mix": []}
        for i in range(args.repeat):
            for kind in runs:
                runs[kind].append(measure(kind, root, files, tmp, profile=args.profile and kind == "mix" and i == 0))
                r = runs[kind][-1]
                print(f"  {kind}: {r['seconds']:.1f}s ({r['cpu_seconds']:.1f} CPU s), peak RSS {r['peak_rss_mib']:.0f} MiB")
        load, mix = (min(v, key=lambda r: r["seconds"]) for v in runs.values())
        ratio = mix["seconds"] / load["seconds"]
        res = dict(
            traces=args.traces, problems=gen["problems"], trace_gib=round(sum(gen["trace_bytes"].values()) / 2**30, 3),
            cpus=os.cpu_count(), python=platform.python_version(), generate_s=gen["seconds"], repeat=args.repeat,
            load=dict(what="datasets.load_dataset('json', data_files=trace files, fresh cache_dir); includes writing the "
                           "Arrow cache", seconds=round(load["seconds"], 2), peak_rss_mib=round(load["peak_rss_mib"]),
                      cpu_seconds=round(load["cpu_seconds"], 2), rss_after_imports_mib=round(load["rss_after_imports_mib"]), rows=load["rows"],
                      cache_gib=round(load["cache_bytes"] / 2**30, 3)),
            mix=dict(what="build_mix(builtin_mix('mix-long', roles), run) end to end, dataset folder written",
                     seconds=round(mix["seconds"], 2), cpu_seconds=round(mix["cpu_seconds"], 2), peak_rss_mib=round(mix["peak_rss_mib"]),
                     rss_after_imports_mib=round(mix["rss_after_imports_mib"]), rows=mix["rows"],
                     rows_per_source=mix["rows_per_source"], eligible_problems_per_source=mix["eligible_problems_per_source"],
                     dropped=mix["dropped"]),
            mix_over_load=round(ratio, 3),
            target_loose_mix_le_2x_load=ratio <= 2.0, target_strict_mix_le_load=ratio <= 1.0,
            target_peak_rss_lt_4gib=mix["peak_rss_mib"] < 4096,
            all_runs_s={k: [round(r["seconds"], 2) for r in v] for k, v in runs.items()},
            all_runs_cpu_s={k: [round(r["cpu_seconds"], 2) for r in v] for k, v in runs.items()},
            load_average_1m_at_end=round(os.getloadavg()[0], 2))
        print(f"\n{args.traces:,} traces ({res['trace_gib']} GiB JSONL), {gen['problems']:,} problems, {res['cpus']} CPUs, "
              f"best of {args.repeat}")
        print(f"{'':44} {'seconds':>8} {'CPU s':>7} {'peak RSS MiB':>13} {'rows':>9}")
        for name, r in [("datasets.load_dataset json (+ cache write)", load), ("build_mix mix-long", mix)]:
            print(f"{name:44} {r['seconds']:8.1f} {r['cpu_seconds']:7.1f} {r['peak_rss_mib']:13.0f} {r['rows']:9,}")
        print(f"mix / load = {ratio:.2f}  (<= 2.0, mixing adds <= 1x load: {ratio <= 2.0}; strict <= 1.0: {ratio <= 1.0}); "
              f"peak RSS < 4 GiB: {res['target_peak_rss_lt_4gib']}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print("wrote", args.out)
    finally:
        if not args.keep and not args.store: shutil.rmtree(root, ignore_errors=True)
        elif args.keep: print("kept the store at", root)


if __name__ == "__main__":
    main()
