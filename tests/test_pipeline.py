"`mixcot run` end to end on a tiny grid: two tiny students x two arms x one benchmark, killed and resumed, rerun, changed."
import json, signal, subprocess, sys, time
from collections import Counter
from pathlib import Path

import pytest, yaml

from mixcot_nb.backends import build_tiny_chat_model

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
    assert status.returncode == 0 and "RUN" in status.stdout, status.stdout

    r = mixcot("run", recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((run_dir/"manifest.json").read_text())
    units = manifest["units"]
    assert len(units) == 2 + 2 + 4 + 4 + 1 and all(u["status"] == "done" for u in units.values())
    assert set(done_events(run_dir).values()) == {1}, "a unit finished twice"
    assert manifest["versions"]["torch"].startswith("2.13") and str(data/"math500") in manifest["data"]
    assert (run_dir/"report"/"report.md").exists()

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
    assert plan[:4] == ["sample:short-14b\tdone", "sample:long-style\tdone", "mix:long\tdone", "mix:mix\tpending"]


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
    "The full lab preset: four sizes x six arms x three seeds x two budget rules, every unit valid, one base per size."
    from mixcot_nb.lab import STUDENT_SIZES
    from mixcot_nb.pipeline import load_experiment, plan, replicas
    recipe = Path(__file__).resolve().parent.parent/"recipes"/"lab"/"full.yaml"
    r = load_experiment(recipe)
    sizes = [s.build["size"] for s in r.students]
    assert len(set(sizes)) >= 4 and sizes == sorted(sizes, key=list(STUDENT_SIZES).index)
    assert len(r.arms) == 6 and len(r.seeds) == 3 and set(r.budgets) == {"steps", "tokens"}
    units = plan(r, str(recipe))
    assert len(replicas(r)) == len(sizes) * 3 * 2
    assert Counter(u.stage for u in units) == {"world": 1, "base": len(sizes), "sample": 4, "mix": 6,
                                               "train": 6 * len(replicas(r)), "eval": 6 * len(replicas(r)) + len(sizes), "report": 1}
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
