"`mixcot run` end to end on a tiny grid: two tiny students x two arms x one benchmark, killed and resumed, rerun, changed."
import json, os, signal, subprocess, sys, time
from collections import Counter
from pathlib import Path

import pytest, yaml

from mixcot_nb.testing import build_tiny_chat_model

MIXCOT = Path(sys.executable).parent/"mixcot"


def mixcot(*args, **kw):
    return subprocess.run([str(MIXCOT), *map(str, args)], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def students(tmp_path_factory, data):
    "Two tiny students of different architectures and sizes, built locally and loaded by path."
    root = tmp_path_factory.mktemp("students")
    src = data/"math_hendrycks"/"train.jsonl"
    return {"tiny-qwen": build_tiny_chat_model(root/"tiny-qwen", train_steps=20, data_file=src),
            "tiny-llama": build_tiny_chat_model(root/"tiny-llama", arch="llama", hidden_size=96, train_steps=20, data_file=src)}


def grid(run_dir, data, students, mix_weight=4.0) -> dict:
    "The test grid: the demo's two real teachers, arms `long` and a custom long/short mix, MATH500 as the benchmark."
    teacher = lambda name, f: {"name": name, "import_from": {"path": str(data/f), "problem_field": "question",
                                                              "response_field": "code"}}
    return {
        "run_dir": str(run_dir),
        "problems": {"dataset": "math500", "path": str(data/"math500"), "limit": 8},
        "teachers": [teacher("short-14b", "shortcot_qwen25_14b_instruct/math500.jsonl"),
                     teacher("long-style", "longcot_style_math500/math500_even.jsonl")],
        "roles": {"long": "long-style", "short": "short-14b"},
        "arms": ["long", {"name": "mix", "sources": [{"teacher": "long-style", "weight": 1.0},
                                                     {"teacher": "short-14b", "weight": mix_weight}]}],
        "students": [{"name": n, "model_name_or_path": str(p), "params": 1e5 * (i + 1)} for i, (n, p) in enumerate(students.items())],
        "train": {"eos_check": 0, "sft": {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 4096,
                          "logging_steps": 1, "save_steps": 2, "report_to": "none", "bf16": False}},
        "eval": {"benchmarks": ["math500"], "data": {"math500": str(data/"math500")}, "limit": 2, "max_new_tokens": 8},
    }


def write(path, recipe) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def done_events(run_dir) -> Counter:
    lines = (Path(run_dir)/"units"/"events.jsonl").read_text().splitlines()
    return Counter((e["unit"], e["key"]) for e in map(json.loads, lines) if e["event"] == "done")


def test_grid_killed_resumed_rerun_changed(tmp_path, data, students):
    run_dir = tmp_path/"run"
    recipe = write(tmp_path/"grid.yaml", grid(run_dir, data, students))
    # kill the run with SIGKILL once the first training unit has started
    p = subprocess.Popen([str(MIXCOT), "run", str(recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = run_dir/"units"/"events.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if events.exists() and '"train:' in events.read_text(): break
        time.sleep(0.2)
    time.sleep(1.0)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL); p.wait()
    status = mixcot("status", run_dir)
    assert status.returncode == 0 and "KILLED" in status.stdout, status.stdout      # the unit's process is gone

    r = mixcot("run", recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((run_dir/"manifest.json").read_text())
    units = manifest["units"]
    assert len(units) == 2 + 2 + 4 + 4 + 1 and all(u["status"] == "done" for u in units.values())
    assert set(done_events(run_dir).values()) == {1}, "a unit finished twice"
    assert manifest["versions"]["torch"].startswith("2.13") and str(data/"math500") in manifest["data"]
    assert (run_dir/"report"/"report.md").exists()
    # each unit keeps its stage's typed summary as JSON, the same as the stage's own file
    from mixcot_nb.core import read_summary
    from mixcot_nb.mixing import MixSummary
    from mixcot_nb.pipeline import unit_file
    from mixcot_nb.sampling import SampleSummary
    from mixcot_nb.training import read_train_summary
    result = lambda uid: json.loads(unit_file(run_dir, uid, ".json").read_text())["result"]
    assert SampleSummary.model_validate(result("sample:long-style")) == SampleSummary.model_validate_json(
        (run_dir/"traces"/"long-style"/"stats.json").read_text())
    assert MixSummary.model_validate(result("mix:mix")) == MixSummary.model_validate_json((run_dir/"mixes"/"mix"/"stats.json").read_text())
    model = run_dir/"models"/"tiny-qwen__long"
    assert result("train:tiny-qwen:long")["model_path"] == read_train_summary(model/"train_summary.json").model_path
    evals = run_dir/"evals"/"tiny-qwen__long"
    assert result("eval:tiny-qwen:long")["benchmarks"]["math500"]["accuracy"] == read_summary(evals).benchmarks["math500"].accuracy

    r = mixcot("run", recipe)
    assert r.returncode == 0 and "nothing to do: all 13 units are up to date" in r.stdout, r.stdout + r.stderr[-2000:]

    before = {uid: u["key"] for uid, u in units.items()}
    write(recipe, grid(run_dir, data, students, mix_weight=3.0))
    r = mixcot("run", recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    after = {uid: u["key"] for uid, u in json.loads((run_dir/"manifest.json").read_text())["units"].items()}
    changed = sorted(u for u in before if before[u] != after[u])
    assert changed == ["eval:tiny-llama:mix", "eval:tiny-qwen:mix", "mix:mix", "report", "train:tiny-llama:mix",
                       "train:tiny-qwen:mix"]
    reran = {u for u, k in done_events(run_dir) if k == after[u] and k != before[u]}
    assert reran == set(changed)
    assert (run_dir/"stale"/f"mix__mix.{before['mix:mix']}"/"mix").is_dir(), "the old mix was not kept"


def test_only_runs_one_unit_and_names_missing_inputs(tmp_path, data, students):
    run_dir = tmp_path/"run"
    recipe = write(tmp_path/"grid.yaml", grid(run_dir, data, students))
    r = mixcot("run", recipe, "--only", "train:tiny-qwen:long")
    assert r.returncode == 2 and "unit train:tiny-qwen:long needs mix:long" in r.stderr, r.stderr
    r = mixcot("run", recipe, "--only", "sample:*")
    assert r.returncode == 0 and "ran 2 units" in r.stdout, r.stderr
    r = mixcot("run", recipe, "--only", "mix:long")
    assert r.returncode == 0 and "ran 1 units" in r.stdout
    events = [json.loads(l)["unit"] for l in (run_dir/"units"/"events.jsonl").read_text().splitlines()]
    assert events == ["sample:short-14b", "sample:short-14b", "sample:long-style", "sample:long-style", "mix:long", "mix:long"]
    plan = mixcot("run", recipe, "--plan").stdout.splitlines()
    assert [row.split("\t")[:2] for row in plan[:4]] == [["sample:short-14b", "done"], ["sample:long-style", "done"],
                                                         ["mix:long", "done"], ["mix:mix", "pending"]]


def test_recipe_errors_name_the_key(tmp_path, data, students):
    bad = grid(tmp_path/"run", data, students)
    bad["train"]["sft"]["learning_rat"] = 1e-3
    r = mixcot("run", write(tmp_path/"bad.yaml", bad))
    assert r.returncode == 2 and "bad.yaml: train.sft" in r.stderr and "learning_rat" in r.stderr, r.stderr
    bad = grid(tmp_path/"run", data, students)
    bad["students"][0]["nmae"] = "x"
    r = mixcot("run", write(tmp_path/"bad.yaml", bad))
    assert r.returncode == 2 and "students.0.nmae" in r.stderr, r.stderr


def test_paper_grid_recipe_validates():
    "Every unit of the paper's grid passes its stage's own recipe check (TRL field names, engines, arms)."
    from mixcot_nb.pipeline import load_experiment, plan
    recipe = Path(__file__).resolve().parent.parent/"recipes"/"paper"/"grid.yaml"
    units = plan(load_experiment(recipe), str(recipe))
    assert Counter(u.stage for u in units) == {"sample": 4, "mix": 6, "train": 60, "eval": 70, "report": 1}
    for u in units:
        if u.check: u.check()


def test_lab_full_recipe_is_the_whole_grid():
    "The full lab preset (issue 14): the sizes that fit 3 h x six arms and two ablation arms x three seeds, plus an ablation base on two arms."
    from mixcot_nb.lab import STUDENT_SIZES
    from mixcot_nb.pipeline import load_experiment, plan, replicas
    recipe = Path(__file__).resolve().parent.parent/"recipes"/"lab"/"full.yaml"
    r = load_experiment(recipe)
    sizes = [s.build["size"] for s in r.students]
    assert len(set(sizes)) >= 3 and sizes == sorted(sizes, key=list(STUDENT_SIZES).index)
    assert len(r.arms) == 8 and len(r.seeds) == 3 and r.world["n_train"] >= 1500 and r.world["n_test"] == 500
    [ablation] = [s for s in r.students if s.arms is not None]
    assert ablation.arms == ["long", "short"] and ablation.build["pretrain_long_share"] == 0
    units = plan(r, str(recipe))
    assert len(replicas(r)) == len(sizes) * 3
    trains = 8 * 3 * (len(sizes) - 1) + 2 * 3
    assert Counter(u.stage for u in units) == {"world": 1, "base": len(sizes), "sample": 6, "mix": 8,
                                               "train": trains, "eval": trains + len(sizes), "report": 1}
    for u in units:
        if u.check: u.check()


def test_lab_grid_end_to_end(tmp_path):
    "The lab preset at a reduced size through `mixcot run`, with two seeds and both budget rules: one base shared by every arm."
    recipe = yaml.safe_load((Path(__file__).resolve().parent.parent/"recipes"/"lab"/"quick.yaml").read_text())
    run = tmp_path/"lab"
    recipe.update(run_dir=str(run), students=recipe["students"][:1], arms=["long", "short"], eval_base=False, seeds=[0, 1],
                  budgets={"steps": {"sft": {"max_steps": 2}}, "tokens": {"token_budget": 3000}})
    recipe["world"].update(n_train=40, n_test=6)
    recipe["problems"]["path"] = str(run/"world"/"train.jsonl")
    recipe["eval"].update(data={"lab": str(run/"world"/"test.jsonl")}, max_new_tokens=16)
    recipe["students"][0]["build"]["pretrain_steps"] = 10
    sft = {k: v for k, v in recipe["train"]["sft"].items() if k != "max_steps"}
    recipe["train"] = {"eos_check": 0, "sft": {**sft, "save_steps": 2}}
    r = mixcot("run", write(tmp_path/"lab.yaml", recipe))
    assert r.returncode == 0, r.stderr[-3000:]
    units = json.loads((run/"manifest.json").read_text())["units"]
    replicas = [f"lab-xs.{b}.s{s}" for b in ("steps", "tokens") for s in (0, 1)]
    assert all(u["status"] == "done" for u in units.values()) and len(units) == 1 + 1 + 2 + 2 + 8 + 8 + 1
    assert {u for u in units if u.startswith("train:")} == {f"train:{x}:{a}" for x in replicas for a in ("long", "short")}
    events = [json.loads(l) for l in (run/"units"/"events.jsonl").read_text().splitlines()]
    assert [e["unit"] for e in events if e["event"] == "done" and e["unit"].startswith("base:")] == ["base:lab-xs"]
    for x in replicas:
        for arm in ("long", "short"):
            model = run/"models"/f"{x}__{arm}"
            train_recipe, summary = (json.loads((model/f).read_text()) for f in ("train_recipe.json", "train_summary.json"))
            assert train_recipe["model_name_or_path"] == str(run/"bases"/"lab-xs") and train_recipe["seed"] == int(x[-1])
            if ".steps." in x: assert summary["steps"] == 2
            else: assert abs(summary["tokens_seen"] - 3000) <= summary["tokens_per_epoch"] / summary["kept"] * 16 / 2 + 1
    summary = json.loads((run/"evals"/"lab-xs.tokens.s1__short"/"summary.json").read_text())
    assert summary["benchmarks"]["lab"]["n"] == 6
    pooled = (run/"report"/"gaps_pooled.csv").read_text().splitlines()
    assert len(pooled) == 3 and all(",2," in row for row in pooled[1:])        # one row per budget rule, two seeds each
    assert "pooled over seeds" in r.stdout and (run/"report"/"gaps_vs_size.png").stat().st_size > 0
    assert "Gaps over seeds" in (run/"report"/"report.md").read_text()
    again = mixcot("report", run, "--out", tmp_path/"again")      # the standalone report finds the replicas in the manifest
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path/"again"/"gaps_pooled.csv").read_text() == (run/"report"/"gaps_pooled.csv").read_text()


# --- launched training units, --plan on the paper grid, Slurm --------------------------------------------------------

def launched_grid(run_dir, data, students, **train) -> dict:
    "One student, one arm, sampled, mixed and trained only (no evaluation): the training unit is what is compared."
    g = grid(run_dir, data, {"tiny-qwen": students["tiny-qwen"]})
    g["arms"] = ["long"]
    g["train"]["sft"].update(learning_rate=3e-3, per_device_train_batch_size=2, **train.pop("sft", {}))
    return g | train


def test_training_unit_launched_on_two_processes_matches_one(tmp_path, data, students):
    "`mixcot run` starts the training unit as its own 2-process (gloo) accelerate launch; same losses as 1 process with 2x accumulation."
    only = ["--only", "sample:*", "--only", "mix:*", "--only", "train:*"]
    one = write(tmp_path/"one.yaml", launched_grid(tmp_path/"one", data, students, sft={"gradient_accumulation_steps": 2}))
    two = write(tmp_path/"two.yaml", launched_grid(tmp_path/"two", data, students, launcher={"num_processes": 2}))
    for recipe in (one, two):
        r = mixcot("run", recipe, *only, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((tmp_path/d/"models"/"tiny-qwen__long"/"train_summary.json").read_text()) for d in ("one", "two"))
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["steps"] == b["steps"] == 4
    la, lb = [l for _, l in a["loss_curve"]], [l for _, l in b["loss_curve"]]
    assert max(abs(x - y) for x, y in zip(la, lb)) < 0.05 * max(la), (la, lb)
    state = json.loads((tmp_path/"two"/"units"/"train__tiny-qwen__long.json").read_text())
    launch = state["launch"]
    assert state["status"] == "done" and launch["exit_status"] == 0 and launch["world_size"] == 2 and launch["strategy"] == "ddp"
    assert "accelerate.commands.launch" in launch["command"] and "world size 2" in Path(launch["log"]).read_text()   # `TrainSummary`'s line
    assert "launch" not in json.loads((tmp_path/"one"/"units"/"train__tiny-qwen__long.json").read_text())   # in-process
    plan = mixcot("run", two, "--plan").stdout
    assert "train:tiny-qwen:long\tdone\t2 x ddp\t" in plan


def _alive(marker:str) -> list[int]:
    "Processes whose command line mentions `marker`."
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try: cmd = (d/"cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError: continue
            if marker in cmd: out.append(int(d.name))
    return out


def test_launched_training_killed_resumes_from_newest_checkpoint(tmp_path, data, students):
    "kill -9 of `mixcot run` mid-training takes its launched ranks down with it; the rerun resumes from the newest checkpoint."
    run_dir = tmp_path/"run"
    recipe = write(tmp_path/"grid.yaml", launched_grid(run_dir, data, students, launcher={"num_processes": 2},
                                                       sft={"max_steps": 40, "save_steps": 3}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    only = ["--only", "sample:*", "--only", "mix:*", "--only", "train:*"]
    p = subprocess.Popen([str(MIXCOT), "run", str(recipe), *only], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model = run_dir/"models"/"tiny-qwen__long"
    deadline = time.time() + 300
    while not list(model.glob("checkpoint-*/trainer_state.json")):
        assert p.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL); p.wait()
    marker = str(run_dir/"logs"/"train__tiny-qwen__long.yaml")
    deadline = time.time() + 30
    while _alive(marker) and time.time() < deadline: time.sleep(0.2)
    assert not _alive(marker), "launched ranks outlived the killed orchestrator"
    newest = max(int(c.name.split("-")[1]) for c in model.glob("checkpoint-*") if (c/"trainer_state.json").exists())
    assert not (model/"train_summary.json").exists()
    r = mixcot("run", recipe, *only, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((model/"train_summary.json").read_text())
    assert int(Path(s["resumed_from"]).name.split("-")[1]) >= newest and s["steps"] == 40 and s["world_size"] == 2
    state = json.loads((run_dir/"units"/"train__tiny-qwen__long.json").read_text())
    assert state["starts"] == 2 and state["completions"] == 1 and state["launch"]["exit_status"] == 0
    assert Path(state["launch"]["log"]).read_text().count("=== ") == 2          # one log, both launches


def test_plan_shows_launcher_resources_and_memory_for_the_paper_grid():
    recipe = Path(__file__).resolve().parent.parent/"recipes"/"paper"/"grid.yaml"
    r = mixcot("run", recipe, "--plan", cwd=recipe.parent.parent.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row.split("\t")[0]: row.split("\t") for row in r.stdout.splitlines()}
    assert len(rows) == 4 + 6 + 60 + 70 + 1
    for uid, row in rows.items():
        assert "DOES NOT FIT" not in row[-1], row
        if uid.startswith("train:"):
            assert row[2].startswith("4 x zero3") and row[3].startswith("4 GPU") and " of 80 GB" in row[4], row
        if uid.startswith(("mix:", "report")): assert row[3].startswith("CPU"), row
    assert rows["train:llama3.3-70b:long"][2] == "4 x zero3+offload_optimizer+offload_param"
    assert rows["eval:llama3.3-70b:long"][3].startswith("4 GPU")        # tensor parallel 4, then the judge's 4 on the same GPUs
    assert rows["eval:llama3.3-70b:long"][2] == "judge after student"
    assert "KV cache" in rows["eval:qwen2.5-32b:long"][4] and "sequences of 16000 tokens" in rows["eval:qwen2.5-32b:long"][4]
    # the judge runs once the student's engine is released: its own phase, at its own settings (4 GPUs, float16, 32768 tokens)
    student, judge = rows["eval:qwen2.5-3b:long"][4].split("; then judge Qwen/Qwen2.5-32B-Instruct: ")
    assert student.startswith("per GPU weights 6.2 + KV cache") and judge.startswith("per GPU weights 16.4 + KV cache")
    assert judge.endswith("sequences of 32768 tokens") and all("then judge" in row[4] for uid, row in rows.items() if uid.startswith("eval:"))


def test_plan_flags_a_judge_that_does_not_fit():
    "The judge on one 40 GB GPU (its weights alone take 65 GB): the evaluation unit does not fit, though its student does."
    from mixcot_nb.pipeline import ResourceSpec, load_experiment, plan, plan_rows, unit_resources
    r = load_experiment(Path(__file__).resolve().parent.parent/"recipes"/"paper"/"grid.yaml")
    r = r.model_copy(update={"eval": {**r.eval, "judge": {**r.eval["judge"], "tensor_parallel_size": 1}},
                             "resources": {**r.resources, "gpu_memory_gb": 40}})
    unit = next(u for u in plan(r) if u.id == "eval:qwen2.5-0.5b:long")
    x = unit_resources(unit, ResourceSpec(**r.resources))
    assert x["memory"]["sequences"] >= 1 and x["memory"]["judge"]["sequences"] == 0 and x["fits"] is False
    row = next(row for row in plan_rows(r, [unit], {unit.id: "pending"}) if row.startswith(unit.id))
    assert row.endswith("DOES NOT FIT") and row.count("DOES NOT FIT") == 1


def test_slurm_scripts_wire_each_unit_to_its_own_inputs(tmp_path, data, students):
    "The generated scripts run under bash with an `sbatch` that records its calls: each unit waits on exactly its own inputs."
    run_dir = tmp_path/"run"
    g = grid(run_dir, data, students)
    g["launcher"] = {"num_processes": 2, "config_file": "recipes/accelerate/zero3.yaml"}
    g["resources"] = {"gpus_per_node": 4, "gpu_partition": "gpu", "cpu_partition": "cpu", "mem_gb": 400}
    recipe = write(tmp_path/"grid.yaml", g)
    r = mixcot("run", recipe, "--slurm", tmp_path/"slurm")
    assert r.returncode == 0, r.stderr[-2000:]
    bin_dir = tmp_path/"bin"; bin_dir.mkdir()
    (bin_dir/"sbatch").write_text('#!/bin/bash\nn=$(( $(wc -l < "$SBATCH_LOG" 2>/dev/null || echo 0) + 100 ))\n'
                                  'echo "$n $*" >> "$SBATCH_LOG"\necho $n\n')
    (bin_dir/"sbatch").chmod(0o755)
    log = tmp_path/"sbatch.log"
    res = subprocess.run(["bash", str(tmp_path/"slurm"/"submit.sh")], env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                         "SBATCH_LOG": str(log)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    calls = [line.split() for line in log.read_text().splitlines()]
    unit_of = {c[0]: Path(c[-1]).stem.replace("__", ":") for c in calls}
    deps = {Path(c[-1]).stem.replace("__", ":"): sorted(unit_of[j] for a in c if a.startswith("--dependency=afterok:")
                                                       for j in a.split(":", 1)[1].split(":")) for c in calls}
    from mixcot_nb.pipeline import load_experiment, plan
    units = plan(load_experiment(recipe), str(recipe))
    assert deps == {u.id: sorted(u.deps) for u in units}
    scripts = {f.stem.replace("__", ":"): f.read_text() for f in (tmp_path/"slurm").glob("*.sbatch")}
    for uid, text in scripts.items():
        assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0
        gpu = uid.startswith(("train:", "eval:"))        # the demo teachers are imported files: sampling needs no GPU
        assert ("--partition=gpu" in text) == gpu and ("--partition=cpu" in text) == (not gpu), (uid, text)
    assert "--gpus-per-node=2" in scripts["train:tiny-qwen:long"] and "--mem=200G" in scripts["train:tiny-qwen:long"]
    assert "--gpus" not in scripts["mix:long"] and "--mem=64G" in scripts["mix:long"]
    assert f"mixcot run {recipe.resolve()} --only 'train:tiny-qwen:long'" in scripts["train:tiny-qwen:long"]


def test_jobs_run_units_side_by_side_and_a_failure_stops_only_its_dependents(tmp_path, data, students):
    """`mixcot run --jobs 2`: units overlap in time; a teacher whose file is malformed fails with its line, the units that
    need it are not started, every other unit finishes; the mended file resumes the rest."""
    run_dir = tmp_path/"run"
    g = grid(run_dir, data, {"tiny-qwen": students["tiny-qwen"]})
    bad = tmp_path/"broken.jsonl"
    bad.write_text((data/"longcot_style_math500"/"math500_even.jsonl").read_text().splitlines()[0] + "\n{not json\n")
    g["teachers"].append({"name": "broken", "import_from": {"path": str(bad), "problem_field": "question", "response_field": "code"}})
    g["arms"] = ["long", {"name": "from-broken", "sources": [{"teacher": "broken", "weight": 1.0}]}]
    recipe = write(tmp_path/"grid.yaml", g)
    r = mixcot("run", recipe, "--jobs", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "sample:broken: exit" in r.stderr and "broken.jsonl:2" in r.stderr, r.stderr
    assert "mix:from-broken: not run: needs sample:broken" in r.stderr and "train:tiny-qwen:from-broken: not run" in r.stderr
    units = json.loads((run_dir/"manifest.json").read_text())["units"]
    done = {u for u, s in units.items() if s["status"] == "done"}
    assert {"sample:short-14b", "sample:long-style", "mix:long", "train:tiny-qwen:long", "eval:tiny-qwen:long"} <= done
    assert not done & {"mix:from-broken", "train:tiny-qwen:from-broken", "eval:tiny-qwen:from-broken", "report"}
    assert "JsonlError" in (run_dir/"units"/"sample__broken.log").read_text() or "broken.jsonl:2" in (run_dir/"units"/"sample__broken.log").read_text()
    events = [json.loads(l) for l in (run_dir/"units"/"events.jsonl").read_text().splitlines()]
    spans = {e["unit"]: [] for e in events}
    for e in events: spans[e["unit"]].append(e["time"])
    assert any(a != b and spans[a][0] < spans[b][0] < spans[a][-1] for a in spans for b in spans), "no two units overlapped"

    bad.write_text(bad.read_text().splitlines()[0] + "\n")
    r = mixcot("run", recipe, "--jobs", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    units = json.loads((run_dir/"manifest.json").read_text())["units"]
    assert all(u["status"] == "done" for u in units.values()) and (run_dir/"report"/"report.md").exists()
    assert set(done_events(run_dir).values()) == {1}, "a unit finished twice"
