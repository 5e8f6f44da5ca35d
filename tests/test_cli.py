"The `mixcot` command in a subprocess, on real response files."
import json, subprocess, sys
from pathlib import Path

import pytest


def mixcot(*args, cwd=None):
    "Run the installed `mixcot` console script."
    exe = Path(sys.executable).parent/"mixcot"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_shows_an_example():
    r = mixcot("grade", "--help")
    assert r.returncode == 0 and "example:" in r.stdout and "mixcot grade" in r.stdout


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

