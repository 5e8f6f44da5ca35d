"The `mixcot` command in a subprocess, on real response files."
import json, subprocess, sys
from pathlib import Path

import pytest, yaml



def mixcot(*args, cwd=None):
    "Run the installed `mixcot` console script."
    exe = Path(sys.executable).parent/"mixcot"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_shows_an_example():
    r = mixcot("grade", "--help")
    assert r.returncode == 0 and "example" in r.stdout and "mixcot grade" in r.stdout


def test_grade_real_file(tmp_path, data):
    r = mixcot("grade", data/"shortcot_qwen25_math_rm_maj_example"/"math_cot_100.jsonl", "--label-field", "score",
               "--workers", "2", "--out", tmp_path/"out")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path/"out"/"summary.json").read_text())
    assert summary["n"] == 800 and summary["rows"] == 100 and summary["agreement"] > 0.9
    verdicts = [json.loads(l) for l in (tmp_path/"out"/"verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 800 and {v["sample"] for v in verdicts} == set(range(8))
    assert "agreement with 'score'" in r.stdout


def test_errors_name_file_line_field(tmp_path):
    bad = tmp_path/"bad.jsonl"
    bad.write_text('{"response": "\\\\boxed{2}", "answer": "2"}\n{"response": "\\\\boxed{2}"}\n')
    r = mixcot("grade", bad, "--answer-field", "answer", "--out", tmp_path/"o")
    assert r.returncode == 2 and "bad.jsonl:2: field 'answer': missing answer field" in r.stderr
    r = mixcot("grade", bad, "--benchmark", "math5000")
    assert r.returncode == 2 and "unknown dataset 'math5000'" in r.stderr
    r = mixcot("grade", tmp_path/"missing.jsonl")
    assert r.returncode == 2 and "missing.jsonl" in r.stderr



def test_sample_import_then_mix(tmp_path, data):
    "The two CLI stages on the real response files: import two teachers, then build the paper's arms."
    import yaml
    teachers = [dict(name=n, import_from=dict(path=str(data/f), problem_field="question", response_field="code"))
                for n, f in [("short", "shortcot_qwen25_14b_instruct/math500.jsonl"),
                             ("long", "longcot_style_math500/math500_even.jsonl")]]
    (tmp_path/"sample.yaml").write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), teachers=teachers,
                                                            problems=dict(dataset="math500", path=str(data/"math500")))))
    r = mixcot("sample", tmp_path/"sample.yaml")
    assert r.returncode == 0, r.stderr
    assert "short: 500 attempts" in r.stdout and "long: 250 attempts" in r.stdout
    (tmp_path/"mix.yaml").write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), roles=dict(long="long", short="short"),
                                                         arms=["long", "short", "mix-long"])))
    r = mixcot("mix", tmp_path/"mix.yaml", "--only", "mix-long")
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path/"run"/"mixes"/"mix-long"/"stats.json").read_text())
    assert stats["rows"] == stats["rows_per_source"]["long"] + stats["rows_per_source"]["short"]
    assert abs(stats["rows_per_source"]["long"] - 0.2 * stats["rows"]) <= 1
    r = mixcot("mix", tmp_path/"mix.yaml", "--only", "mix-large")
    assert r.returncode == 2 and "unknown arm(s) ['mix-large']" in r.stderr
    (tmp_path/"bad.yaml").write_text("run_dir: x\narms: [long]\nmax_tokens: lots\n")
    r = mixcot("mix", tmp_path/"bad.yaml")
    assert r.returncode == 2 and "bad.yaml: max_tokens: Input should be a valid integer" in r.stderr


def test_paper_mix_recipe_validates():
    from mixcot_nb.core import load_recipe
    from mixcot_nb.mixing import MixRecipe
    r = load_recipe(Path(__file__).parent.parent/"recipes"/"paper"/"mix.yaml", MixRecipe)
    assert [s.name for s in r.specs()] == ["long", "short", "large", "small", "mix-long", "mix-large"]
    assert r.specs()[4].weights == {"qwq-32b-long": 0.2, "qwen2.5-32b-short": 0.8}


def test_train_has_one_entry_point(tmp_path):
    "`mixcot train` and `python -m mixcot_nb.training` are one command: the same options and the same one-line errors."
    (tmp_path/"r.yaml").write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset": str(tmp_path/"none.jsonl"),
                                                   "output_dir": str(tmp_path/"out")}))
    bad = ["--set", "sft.learnin_rate=1e-5", "--no-progress"]
    a = mixcot("train", tmp_path/"r.yaml", *bad)
    b = subprocess.run([sys.executable, "-m", "mixcot_nb.training", str(tmp_path/"r.yaml"), *bad], capture_output=True, text=True)
    assert a.returncode == b.returncode == 2 and a.stderr == b.stderr, (a.stderr, b.stderr)
    assert a.stderr.startswith("mixcot train: error: ") and "did you mean: learning_rate" in a.stderr and "Traceback" not in a.stderr


def test_only_user_errors_are_one_line(capsys):
    "A fault the user can fix is one line and exit status 2; a bug's ValueError or KeyError keeps its traceback."
    from pydantic import ValidationError
    from mixcot_nb.cli import run_command
    from mixcot_nb.core import InputError, StrictModel

    class Spec(StrictModel): n: int

    def unwritable(out): raise InputError(f"--out {out}: the output folder is not writable")
    assert run_command("grade", unwritable, "runs/x") == 2
    assert capsys.readouterr().err == "mixcot grade: error: --out runs/x: the output folder is not writable\n"
    assert run_command("status", lambda p: open(p), "no/such/file.json") == 2
    assert "no/such/file.json" in capsys.readouterr().err
    assert run_command("report", lambda d: Spec.model_validate(d), {"n": "x"}) == 2
    assert capsys.readouterr().err.startswith("mixcot report: error: Spec: n: Input should be a valid integer")
    with pytest.raises(ValueError, match="invalid literal"): run_command("grade", lambda s: int(s), "three")
    with pytest.raises(KeyError): run_command("grade", lambda k: {}[k], "k")
    assert issubclass(ValidationError, ValueError) and capsys.readouterr().err == ""
