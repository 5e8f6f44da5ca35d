"""Wall time and peak memory of a lab preset, stage by stage, and training tokens/s per student size.

    python bench/lab.py [--recipe recipes/lab/quick.yaml] [--run-dir runs/bench-lab] [--out bench/results/lab.json]
    python bench/lab.py --from-run runs/lab-full [--out bench/results/lab-full.json]

Each stage runs as its own `mixcot run RECIPE --only <stage>:*` process, started fresh, so its wall time includes Python
start-up and imports and its peak resident memory (from `wait4`) is the stage's alone. The in-process time of every
unit is read back from the run's unit files. Target (issue 8): the quick preset within 15 minutes on this 2-core machine.
`--from-run` runs nothing: it sums the unit seconds of a finished run (e.g. the full preset, which may have run in parts
and resumed) per stage and per student, against the full preset's 2-hour target.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import yaml

STAGES = ["world", "base", "sample", "mix", "train", "eval", "report"]
QUICK_TARGET, FULL_TARGET = 900, 7200                  # seconds on this 2-core machine (issue 8)


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


def unit_times(run_dir:Path) -> dict[str, float]:
    "In-process seconds of every finished unit."
    states = [json.loads(f.read_text()) for f in sorted((run_dir/"units").glob("*.json"))]
    return {s["id"]: s["seconds"] for s in states if s.get("status") == "done"}


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
    units = unit_times(run_dir)
    stages = {s: stage_seconds(units, s) for s in STAGES}
    students = {}
    for k, v in units.items():
        if (s := student_of(k)): students[s] = round(students.get(s, 0) + v, 1)
    total, planned = sum(units.values()), len(json.loads((run_dir/"manifest.json").read_text())["units"])
    result = {"run_dir": str(run_dir), "cpus": os.cpu_count(), "units": len(units), "planned_units": planned,
              "unit_seconds": round(total, 1), "target_seconds": FULL_TARGET, "stages": stages, "students": students, "unit_times": units,
              "tokens_per_second_by_student": sizes_throughput(tokens_per_second(run_dir))}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    verdict = ("met" if total <= FULL_TARGET else "not met") if len(units) == planned else f"run unfinished, {planned - len(units)} units left"
    print(f"{len(units)} of {planned} units done, {total / 60:.1f} min of unit time (target {FULL_TARGET // 60} min: {verdict})")
    for s, v in stages.items(): print(f"{s:<8} {v / 60:>7.1f} min")
    for s, v in students.items(): print(f"{s:<12} {v / 60:>7.1f} min")
    for s in result["tokens_per_second_by_student"]:
        print(f"{s['student']:<12} {s['params']:>9,} params  {s['tokens_per_second']:>9,.0f} training tokens/s")
    print(f"written {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", type=Path, default=Path("recipes/lab/quick.yaml"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-lab"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--from-run", type=Path, default=None, help="summarize this finished run instead of running a preset")
    a = ap.parse_args()
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
    units = unit_times(a.run_dir)
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
