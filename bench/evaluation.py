"""End-to-end evaluation throughput: items per second (generation + grading + records) with the transformers engine,
batched against one prompt at a time, on the tiny local chat model and MATH500 problems.

Both sides run `run_evaluation` on the same problems, greedy, into fresh output folders; the records must be identical (checked).
Baseline: `batch_size=1`. Also reported: the share of the time spent grading (`grade_records` alone on the same records).
A GPU machine with vLLM adds `--gpu`: vLLM against transformers on the same tiny model.

Run: python bench/evaluation.py [--problems 48] [--max-new-tokens 64] [--gpu]   (writes bench/results/evaluation.json)
"""
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path

from mixcot_nb.backends import make_engine
from mixcot_nb.testing import build_tiny_chat_model
from mixcot_nb.core import example_data_dir
from mixcot_nb.evaluation import EvalRecipe, grade_records, read_records, run_evaluation
from mixcot_nb.problems import load_problems

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/"bench"/"results"


def tiny_model() -> Path:
    "The tiny chat model bench/backends.py uses, cached under bench/results/models."
    return build_tiny_chat_model(RESULTS/"models"/"tiny-qwen2-h64", hidden_size=64, num_heads=2)


def one_run(engine_spec: dict, problems: int, max_new_tokens: int, tmp: Path, name: str) -> dict:
    recipe = EvalRecipe(model=str(tiny_model()), engine=engine_spec, benchmarks=["math500"],
                        data={"math500": str(example_data_dir()/"math500")}, limit=problems,
                        max_new_tokens=max_new_tokens, output_dir=str(tmp/name))
    engine = make_engine(recipe.engine_spec())                 # loading the model is not part of the timing
    engine.generate([[{"role": "user", "content": "warm up"}]], __import__("mixcot_nb.backends").backends.SamplingParams(max_tokens=4))
    t0 = time.perf_counter()
    summary = run_evaluation(recipe, progress=False, engine=engine).benchmarks["math500"]
    secs = time.perf_counter() - t0
    engine.close()
    recs = read_records(tmp/name/"math500.jsonl")
    by_id = {p.id: p for p in load_problems("math500", path=example_data_dir()/"math500", limit=problems)}
    t0 = time.perf_counter()
    grade_records([r.model_copy() for r in recs], by_id)
    grade_s = time.perf_counter() - t0
    return {"seconds": round(secs, 3), "items": len(recs), "items_per_s": round(len(recs) / secs, 2),
            "grading_seconds": round(grade_s, 3), "tokens": sum(r.completion_tokens for r in recs),
            "accuracy": summary.accuracy, "truncation_rate": summary.truncation_rate,
            "responses": [r.response for r in recs]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--gpu", action="store_true", help="vLLM against transformers on a CUDA GPU")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sides = {"one_at_a_time": {"engine": "transformers", "batch_size": 1},
             "batched_16": {"engine": "transformers", "batch_size": 16},
             "batched_48": {"engine": "transformers", "batch_size": 48}}
    if args.gpu:
        sides = {"transformers_16": {"engine": "transformers", "batch_size": 16, "device": "cuda"},
                 "vllm": {"engine": "vllm", "gpu_memory_utilization": 0.3}}
    base = next(iter(sides))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {k: one_run(v, args.problems, args.max_new_tokens, Path(tmp), k) for k, v in sides.items()}
    texts = {k: r.pop("responses") for k, r in runs.items()}
    same = all(t == texts[base] for t in texts.values())
    out = {"problems": args.problems, "max_new_tokens": args.max_new_tokens, "cpus": os.cpu_count(),
           "python": platform.python_version(), "baseline": base, "runs": runs,
           "speedup_vs_baseline": {k: round(r["items_per_s"] / runs[base]["items_per_s"], 2) for k, r in runs.items()},
           "identical_responses": same,
           "command": "python bench/evaluation.py " + " ".join(sys.argv[1:])}
    path = Path(args.out) if args.out else RESULTS/("evaluation_gpu.json" if args.gpu else "evaluation.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    print({k: (r["items_per_s"], r["grading_seconds"]) for k, r in runs.items()})
    if not args.gpu: assert same, "greedy responses differ between batched and unbatched runs"


if __name__ == "__main__":
    main()
