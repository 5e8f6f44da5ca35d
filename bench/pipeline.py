"""Orchestration overhead of `mixcot run` on a tiny grid, against calling the stage functions directly in sequence.

    python bench/pipeline.py [--repeats 2] [--out bench/results/pipeline.json]

The grid: two tiny local students (Qwen2 and Llama, built here) x two arms (long; a 1:4 long/short mix) x MATH500 (4
problems, 8 new tokens), the demo's two real teachers imported from ../shared/data. Targets (issue 7): `mixcot run`
within 5% of the direct sequence; a rerun with nothing to do under 5 s (wall time of the `mixcot` command, Python
start-up and imports included).
"""
import argparse, json, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import yaml

from mixcot_nb.testing import build_tiny_chat_model
from mixcot_nb.core import example_data_dir
from mixcot_nb.evaluation import EvalRecipe, run_evaluation
from mixcot_nb.mixing import MixRecipe, run_mixing
from mixcot_nb.pipeline import ExperimentRecipe, run_experiment
from mixcot_nb.report import build_report
from mixcot_nb.sampling import SampleRecipe, run_sampling
from mixcot_nb.training import TrainRecipe, run_training

DATA = example_data_dir()
SFT = {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 4096, "logging_steps": 1,
       "save_steps": 2, "report_to": "none", "bf16": False}
EVAL = {"benchmarks": ["math500"], "data": {"math500": str(DATA/"math500")}, "limit": 4, "max_new_tokens": 8}


def grid(run_dir, students:dict) -> dict:
    teacher = lambda name, f: {"name": name, "import_from": {"path": str(DATA/f), "problem_field": "question", "response_field": "code"}}
    return {"run_dir": str(run_dir), "problems": {"dataset": "math500", "path": str(DATA/"math500"), "limit": 16},
            "teachers": [teacher("short-14b", "shortcot_qwen25_14b_instruct/math500.jsonl"),
                         teacher("long-style", "longcot_style_math500/math500_even.jsonl")],
            "roles": {"long": "long-style", "short": "short-14b"},
            "arms": ["long", {"name": "mix", "sources": [{"teacher": "long-style", "weight": 1.0}, {"teacher": "short-14b", "weight": 4.0}]}],
            "students": [{"name": n, "model_name_or_path": str(p)} for n, p in students.items()],
            "train": {"eos_check": 0, "sft": SFT}, "eval": EVAL}


def direct(g:dict) -> float:
    "The same work as `mixcot run`, calling each stage's function in sequence."
    t0 = time.perf_counter()
    r = ExperimentRecipe.model_validate(g)
    run_sampling(SampleRecipe(run_dir=r.run_dir, problems=r.problems, teachers=r.teachers), progress=False)
    mix = MixRecipe(run_dir=r.run_dir, roles=r.roles, arms=r.arms)
    run_mixing(mix, progress=False)
    for s in r.students:
        for arm in [a.name for a in mix.specs()]:
            out = Path(r.run_dir)/"models"/f"{s.name}__{arm}"
            t = run_training(TrainRecipe(model_name_or_path=s.model_name_or_path, dataset=str(Path(r.run_dir)/"mixes"/arm),
                                         output_dir=str(out), eos_check=0, sft=SFT), progress=False)
            run_evaluation(EvalRecipe(model=t.model_path, output_dir=str(Path(r.run_dir)/"evals"/f"{s.name}__{arm}"), **EVAL), progress=False)
    build_report(r.run_dir, students={s.name: s.params for s in r.students})
    return time.perf_counter() - t0


def piped(g:dict) -> tuple[float, float]:
    "Wall time of `run_experiment`, and the part of it spent outside the units' own work."
    t0 = time.perf_counter()
    run_experiment(ExperimentRecipe.model_validate(g), progress=False)
    wall = time.perf_counter() - t0
    units = [json.loads(f.read_text()) for f in (Path(g["run_dir"])/"units").glob("*.json")]
    return wall, wall - sum(u["seconds"] for u in units)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/results/pipeline.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    students = {"tiny-qwen": build_tiny_chat_model(root/"tiny-qwen", train_steps=20),
                "tiny-llama": build_tiny_chat_model(root/"tiny-llama", arch="llama", hidden_size=96, train_steps=20)}
    rows = []
    for i in range(args.repeats):          # alternate the order, so neither side always runs on a warmer machine
        for kind in (("direct", "pipeline") if i % 2 == 0 else ("pipeline", "direct")):
            g = grid(root/f"{kind}-{i}", students)
            if kind == "direct": rows.append({"kind": kind, "seconds": direct(g)})
            else:
                wall, outside = piped(g)
                rows.append({"kind": kind, "seconds": wall, "outside_units": outside})
            print(rows[-1], flush=True)
    g = grid(root/"pipeline-0", students)
    recipe = root/"grid.yaml"
    recipe.write_text(yaml.safe_dump(g))
    mixcot = Path(sys.executable).parent/"mixcot"
    noop = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = subprocess.run([str(mixcot), "run", str(recipe)], capture_output=True, text=True)
        noop.append(time.perf_counter() - t0)
        assert "nothing to do" in r.stdout, r.stdout + r.stderr
    total = lambda k: sum(r["seconds"] for r in rows if r["kind"] == k)
    result = {"runs": rows, "pipeline_over_direct": total("pipeline") / total("direct"),
              "outside_units_share": sum(r["outside_units"] for r in rows if r["kind"] == "pipeline") / total("pipeline"),
              "noop_rerun_seconds": noop}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
