"The benchmark registry on the real files in ../shared/data, the Hub code path on a local repository, bad rows."
import json

import pyarrow as pa, pyarrow.parquet as pq
import pytest

from mixcot_nb.core import JsonlError, read_jsonl
from mixcot_nb.grading import answers_match, extract_answer
from mixcot_nb.problems import (DATASETS, RowError, decontaminate, get_dataset_spec, load_problems, register_dataset)

LOCAL = {"math_train": ("math_hendrycks", "train", 7500), "math_test": ("math_hendrycks", "test", 5000),
         "math500": ("math500", "test", 500), "gsm8k": ("gsm8k", "test", 1319), "aime24": ("aime24", "test", 30),
         "amc23": ("amc23", "test", 40), "olympiadbench": ("olympiadbench", "test", 675)}


@pytest.fixture(scope="module")
def sets(data):
    return {k: load_problems(k, path=data/folder, split=split) for k, (folder, split, _) in LOCAL.items()}


def test_counts_and_ids(sets, data):
    assert {k: len(v) for k, v in sets.items()} == {k: n for k, (_, _, n) in LOCAL.items()}
    assert len(load_problems("gsm8k", path=data/"gsm8k", split="train")) == 7473
    for k, v in sets.items():
        assert len({p.id for p in v}) == len(v), k
        assert all(p.id.startswith(f"{k}/") and p.dataset == k for p in v)


def test_answers_are_strings_in_one_convention(sets):
    assert [p.answer for p in sets["amc23"][:3]] == ["27", "36", "45"]
    assert all(isinstance(p.answer, str) for k, v in sets.items() for p in v if p.answer is not None)
    assert sets["gsm8k"][0].answer == "18"
    assert sets["olympiadbench"][0].answer == "2" and sets["olympiadbench"][0].subject == "Combinatorics"
    assert {p.level for p in sets["math_test"]} <= {"1", "2", "3", "4", "5", None}


def _self_match_rate(problems, benchmark=None):
    pairs = [(p.solution, p.answer) for p in problems if p.solution and p.answer is not None]
    ok = sum(answers_match(gold, extract_answer(sol, benchmark)) for sol, gold in pairs)
    return ok / len(pairs), len(pairs)


def test_math500_reference_answers_match_themselves(sets):
    assert _self_match_rate(sets["math500"]) == (1.0, 500)


@pytest.mark.parametrize("name,floor", [("math_test", 0.999), ("math_train", 0.999), ("aime24", 0.95)])
def test_reference_solutions_give_their_answer(sets, name, floor):
    "Where reference solutions box their answer (MATH, AIME's AoPS solutions); OlympiadBench's and AMC's do not."
    rate, n = _self_match_rate(sets[name])
    assert n > 0 and rate >= floor, (name, rate, n)


@pytest.mark.parametrize("name", list(LOCAL))
def test_every_reference_answer_matches_itself_boxed(sets, name):
    "Each benchmark's reference answer, written as a model would box it, is extracted and graded correct."
    probs = [p for p in sets[name] if p.answer is not None]
    bad = [p.answer for p in probs if not answers_match(p.answer, extract_answer(f"So the answer is $\\boxed{{{p.answer}}}$."))]
    assert bad == []


def test_gsm8k_reference_solutions_give_their_answer(data):
    rows = read_jsonl(data/"gsm8k"/"test.jsonl")
    assert all(answers_match(load, extract_answer(r["answer"], "gsm8k"))
               for r, load in zip(rows, (p.answer for p in load_problems("gsm8k", path=data/"gsm8k"))))


def test_parquet_file_and_folder(tmp_path, data, sets):
    rows = read_jsonl(data/"math500"/"test.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path/"test.parquet")
    from_file = load_problems("math500", path=tmp_path/"test.parquet")
    assert from_file == load_problems("math500", path=tmp_path) == sets["math500"]


def test_hub_code_path_on_a_local_repository(tmp_path, data, sets):
    "`datasets.load_dataset` reads a folder laid out like a Hub repository through the same call a Hub id takes."
    rows = read_jsonl(data/"math_hendrycks"/"test.jsonl")
    configs = ["algebra", "geometry"]
    readme = ["---", "configs:"]
    for cfg in configs:
        sub = [{k: r[k] for k in ("problem", "level", "type", "solution")} for r in rows if r["subject"] == cfg]
        (tmp_path/cfg).mkdir()
        pq.write_table(pa.Table.from_pylist(sub), tmp_path/cfg/"test-00000-of-00001.parquet")
        readme += [f"- config_name: {cfg}", "  data_files:", "  - split: test", f"    path: {cfg}/test-*"]
    (tmp_path/"README.md").write_text("\n".join(readme + ["---", ""]))
    spec = get_dataset_spec("math_test").model_copy(update=dict(name="math_test_hubcopy", hub_id=str(tmp_path),
                                                                hub_configs=configs))
    register_dataset(spec, overwrite=True)
    try:
        hub = load_problems("math_test_hubcopy")
    finally:
        DATASETS.pop("math_test_hubcopy")
    local = [p for p in sets["math_test"] if p.source_id.split("/")[1] in configs]
    assert len(hub) == len(local) == 1187 + 479
    assert [(p.problem, p.answer, p.level) for p in hub] == [(p.problem, p.answer, p.level) for p in local]
    assert [p.id.split("/")[1] for p in hub] == [p.id.split("/")[1] for p in local]


def test_bad_rows_are_located(tmp_path):
    (tmp_path/"test.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n{oops\n")
    with pytest.raises(JsonlError, match=r"test.jsonl:2: invalid JSON"): load_problems("math500", path=tmp_path)
    (tmp_path/"test.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n"
                                       + json.dumps({"problem": "", "answer": "3"}) + "\n")
    with pytest.raises(RowError, match=r"test.jsonl:2: no problem text"): load_problems("math500", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="x: no such file or folder"): load_problems("math500", path=tmp_path/"x")
    (tmp_path/"test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="no test.jsonl or test.parquet"): load_problems("math500", path=tmp_path)
    with pytest.raises(KeyError, match="unknown dataset 'mat500'"): load_problems("mat500")


def test_user_spec_validation():
    with pytest.raises(Exception, match="answer_rule"): register_dataset({"name": "x", "answer_rule": "magic"})
    with pytest.raises(ValueError, match="already registered"): register_dataset({"name": "math500"})


def test_decontamination(sets):
    train = sets["math_train"]
    evals = sets["math500"][:50]
    planted = train[:3] + [train[3].model_copy(update=dict(id="math_train/planted", problem="Restated: " + evals[7].problem))]
    kept, rep = decontaminate(planted, evals, drop=True)
    assert "math_train/planted" in rep.flagged and evals[7].id in rep.flagged["math_train/planted"]
    assert rep.dropped == len(rep.flagged) and len(kept) == len(planted) - rep.dropped
    kept, rep = decontaminate(planted, evals)
    assert len(kept) == len(planted) and rep.dropped == 0
