"""The paper's recipes against the paper: the fidelity table holds (a drifting recipe fails here), every recipe for a
table or figure plans, the generated recipes match their sources, and the grid's shape runs on CPU with tiny models,
the judge path included."""
import json, subprocess, sys
from collections import Counter
from pathlib import Path

import pytest, yaml

from mixcot_nb.core import RecipeError
from mixcot_nb.pipeline import load_experiment, plan, run_experiment

PAPER = Path(__file__).resolve().parent.parent/"recipes"/"paper"
sys.path.insert(0, str(PAPER))
import fidelity, variants                                          # noqa: E402  (recipes/paper/*.py)
sys.path.insert(0, str(PAPER/"train"))
import generate                                                    # noqa: E402
EXPERIMENTS = ["grid.yaml", *variants.VARIANTS]


def test_recipes_match_the_fidelity_table():
    rows = fidelity.table()
    assert len(rows) > 40 and not fidelity.drift(rows)
    assert {r["recipe"] for r in rows} == set(EXPERIMENTS)           # every recipe for a table or figure is in it
    for r in rows: assert r["same"] is True or isinstance(r["same"], str) and r["same"], r["setting"]


def test_a_drifting_recipe_fails(tmp_path):
    "The Mix arms back at a smaller batch: the table's rows no longer hold, and say which and why."
    grid = yaml.safe_load((PAPER/"grid.yaml").read_text())
    grid["arm_train"]["mix-long"]["sft"]["gradient_accumulation_steps"] = 1
    (tmp_path/"grid.yaml").write_text(yaml.safe_dump(grid))
    rows = [r | {"recipe": str(tmp_path/"grid.yaml")} for r in yaml.safe_load((PAPER/"fidelity.yaml").read_text())
            if r["recipe"] == "grid.yaml"]
    bad = fidelity.drift([r | {"recipe_value": fidelity.value(r["recipe"], r["unit"], r["path"])} for r in rows])
    assert len(bad) == 2 and "recipe says 20, the table 80 (Mix arms' global batch)" in bad[0]
    assert "recipe says 20, the table 80 (Mix arms' global batch (LoRA students, 14B and up))" in bad[1]   # theirs too


def test_mix_arm_settings_win_over_a_students_own(tmp_path):
    "A LoRA student's Mix arms train at the authors' batch 80 with the LoRA learning rate; a student's own per-arm pin wins."
    assert fidelity.value("grid.yaml", "train:qwen2.5-14b:mix-long", "sft.learning_rate") == 1e-4
    grid = yaml.safe_load((PAPER/"grid.yaml").read_text())
    lora = next(s for s in grid["students"] if s["name"] == "qwen2.5-14b")
    lora["arm_train"] = {"mix-long": {"sft": {"per_device_train_batch_size": 1}}}
    (tmp_path/"grid.yaml").write_text(yaml.safe_dump(grid))
    rows = [r | {"recipe": str(tmp_path/"grid.yaml")} for r in yaml.safe_load((PAPER/"fidelity.yaml").read_text()) if r["recipe"] == "grid.yaml"]
    bad = fidelity.drift([r | {"recipe_value": fidelity.value(r["recipe"], r["unit"], r["path"])} for r in rows])
    assert len(bad) == 1 and "recipe says 16, the table 80 (Mix arms' global batch (LoRA students, 14B and up))" in bad[0]


def test_the_grids_policy_is_named_and_checked(tmp_path):
    "The grid names its extraction policy; a wrong value is refused at planning time, naming the field."
    assert yaml.safe_load((PAPER/"grid.yaml").read_text())["eval"]["policy"] == "strict"
    assert all(yaml.safe_load((PAPER/v).read_text())["eval"]["policy"] == "strict" for v in variants.VARIANTS)
    grid = yaml.safe_load((PAPER/"grid.yaml").read_text())
    grid["eval"]["policy"] = "loose"
    (tmp_path/"grid.yaml").write_text(yaml.safe_dump(grid))
    unit = next(u for u in plan(load_experiment(tmp_path/"grid.yaml"), "grid.yaml") if u.stage == "eval")
    with pytest.raises(RecipeError, match=r"grid.yaml: eval.policy: Input should be 'strict' or 'lenient'"):
        unit.check()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_recipe_plans(name):
    "Each recipe loads and plans, and every unit's stage recipe validates (what `mixcot run --plan` checks, and more)."
    r = load_experiment(PAPER/name)
    units = plan(r, name)
    for u in units:
        if u.check: u.check()
    stages = Counter(u.stage for u in units)
    assert stages["train"] == len(r.students) * stages["mix"] and stages["report"] == 1


def test_plan_command_on_the_grid():
    out = subprocess.run([str(Path(sys.executable).parent/"mixcot"), "run", str(PAPER/"grid.yaml"), "--plan"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "train:qwen2.5-3b:mix-long" in out.stdout and "eval:llama3.3-70b:base" in out.stdout


def test_generated_recipes_are_up_to_date():
    "The per-arm training recipes are the grid's training units; the variants are the grid with their changes."
    for path, text in {**generate.recipes(), **variants.variants()}.items():
        assert path.read_text() == text, f"{path} is stale: rerun {'generate.py' if path.parent.name != 'paper' else 'variants.py'}"
    assert len(list((PAPER/"train").glob("*/*.yaml"))) == 60


# ---- the grid's shape on CPU ---------------------------------------------------------------------------------------

def tiny_grid(run_dir, data, student, judge) -> dict:
    "recipes/paper/grid.yaml with its models made tiny and local: the same teachers' roles, arms, pairing, Mix-arm settings, grading."
    g = yaml.safe_load((PAPER/"grid.yaml").read_text())
    files = {"long": "longcot_style_math500/math500_even.jsonl", "short": "shortcot_qwen25_14b_instruct/math500.jsonl"}
    files |= {"large": files["short"], "small": files["long"]}      # two real response files serve the four roles
    g["teachers"] = [{"name": name, "import_from": {"path": str(data/files[role]), "problem_field": "question", "response_field": "code"}}
                     for role, name in g["roles"].items()]
    g.update(run_dir=str(run_dir), problems={"dataset": "math500", "path": str(data/"math500"), "limit": 40},
             students=[{"name": "tiny", "model_name_or_path": str(student), "params": 1e6}])
    for k in ("launcher", "resources"): g.pop(k, None)
    g["train"]["eos_check"] = 0
    g["train"]["sft"] |= {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 4096, "bf16": False,
                          "gradient_checkpointing": False, "save_steps": 100}
    g["arm_train"]["mix-long"]["sft"] |= {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_length": 384}
    g["eval"] |= {"engine": {"engine": "transformers"}, "benchmarks": ["math500", "gsm8k"], "limit": 2, "max_new_tokens": 48,
                  "data": {"math500": str(data/"math500"), "gsm8k": str(data/"gsm8k")},
                  "judge": {"engine": "transformers", "model": str(judge)}}
    return g


def test_grid_shape_on_cpu_through_the_judge(tmp_path, data, tiny_model, judge_model):
    g = tiny_grid(tmp_path/"run", data, tiny_model, judge_model)
    paper = yaml.safe_load((PAPER/"grid.yaml").read_text())
    assert g["arms"] == paper["arms"] and g["roles"] == paper["roles"] and g["mix"] == paper["mix"]
    assert {k: g["eval"][k] for k in ("stop", "stops", "judge_skip", "temperature")} == {k: paper["eval"][k] for k in ("stop", "stops", "judge_skip", "temperature")}
    r = load_experiment_from(tmp_path/"tiny.yaml", g)
    assert Counter(u.stage for u in plan(r)) == {"sample": 4, "mix": 6, "train": 6, "eval": 7, "report": 1}
    out = run_experiment(r, progress=False)
    assert len(out["ran"]) == 24
    run = tmp_path/"run"
    pools = {a: json.loads((run/"mixes"/a/"stats.json").read_text())["pool"] for a in g["arms"]}
    for pair in (("long", "short", "mix-long"), ("large", "small", "mix-large")):
        assert len({pools[a]["hash"] for a in pair}) == 1 and pools[pair[0]]["problems"] > 2     # one pool per pair
    mix = json.loads((run/"models"/"tiny__mix-long"/"train_summary.json").read_text())
    pure = json.loads((run/"models"/"tiny__long"/"train_summary.json").read_text())
    assert mix["truncated"] > 0 and mix["dropped_overlength"] == 0 and pure.get("truncated", 0) == 0   # the Mix arms cut, as the authors'
    for m in (mix, pure): assert m["held_out"] == 1 and m["eval_loss"] > 0                  # the authors' 1% split, its loss logged
    records = {b: [json.loads(l) for a in ["base", *g["arms"]] for l in (run/"evals"/f"tiny__{a}"/f"{b}.jsonl").read_text().splitlines()]
               for b in ("math500", "gsm8k")}
    assert any(x["decided_by"] == "judge" for x in records["math500"])                             # the judge ruled on rule misses
    assert not any(x["decided_by"] == "judge" for x in records["gsm8k"])                           # ... never on GSM8K
    config = json.loads((run/"evals"/"tiny__mix-long"/"eval_config.json").read_text())
    assert config["stop"] == ["Problem:"] and config["stops"] == {"gsm8k": ["Q:"]} and config["judge"]["model"] == str(judge_model)
    assert config["judge_skip"] == ["gsm8k"]
    assert (run/"report"/"report.md").exists()


def load_experiment_from(path:Path, recipe:dict):
    path.write_text(yaml.safe_dump(recipe))
    return load_experiment(path)
