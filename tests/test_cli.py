"The `mixcot` command in a subprocess, on real response files."
import json, subprocess, sys
from pathlib import Path



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
