"Rejection sampling into the trace store: real HTTP teacher, real tiny model, SIGKILL and resume, shards, imports."
import json, signal, subprocess, sys, time
from collections import Counter
from pathlib import Path

import pyarrow as pa, pyarrow.parquet as pq
import pytest
import yaml

from mixcot_nb.core import PAPER_PROMPT, InputError, read_jsonl, render_prompt
from mixcot_nb.problems import load_problems
from mixcot_nb.sampling import (SampleRecipe, SampleSummary, TeacherSpec, TraceStore, import_traces,
                                run_sampling, sample_teacher, teacher_stats)
from teacher_server import TeacherServer


@pytest.fixture(scope="module")
def problems(data):
    return load_problems("math500", path=data/"math500", limit=40)


@pytest.fixture()
def server(problems):
    s = TeacherServer(problems, error_rate=0.5)
    yield s
    s.close()


def recipe_dict(tmp_path, data, url, **teacher):
    t = dict(name="ref", engine=dict(engine="openai", model="reference", base_urls=[url]), max_attempts=5,
             target_correct=2, sampling=dict(temperature=0.7, max_tokens=256)) | teacher
    return dict(run_dir=str(tmp_path/"run"), problems=dict(dataset="math500", path=str(data/"math500"), limit=40),
                teachers=[t])


def check_store(run_dir, problems, k=2, n=5):
    traces = TraceStore(run_dir).read("ref")
    keys = Counter(t.key for t in traces)
    assert max(keys.values()) == 1
    by = {}
    for t in traces: by.setdefault(t.problem_id, []).append(t)
    for p in problems:
        ts = sorted(by[p.id], key=lambda t: t.sample_idx)
        assert [t.sample_idx for t in ts] == list(range(len(ts)))          # contiguous, nothing lost
        correct = sum(t.correct for t in ts)
        assert correct == k or (len(ts) == n and correct < k)               # stopped exactly when it should
        assert all(t.decided_by and t.sampling["max_tokens"] == 256 for t in ts)
    return traces


def test_rejection_sampling_over_http(tmp_path, data, server, problems):
    stats = run_sampling(SampleRecipe.model_validate(recipe_dict(tmp_path, data, server.url)), progress=False)["ref"]
    traces = check_store(tmp_path/"run", problems)
    assert stats.attempts == len(traces) and 0.3 < stats.acceptance_rate < 0.8
    assert stats.solved + stats.unsolved == 40 and stats.truncation_rate == 0
    assert SampleSummary.model_validate_json((tmp_path/"run"/"traces"/"ref"/"stats.json").read_text()) == stats
    assert len(read_jsonl(tmp_path/"run"/"problems"/"math500.jsonl")) == 40
    # a rerun with nothing new asks the teacher nothing
    before = server.requests
    run_sampling(SampleRecipe.model_validate(recipe_dict(tmp_path, data, server.url)), progress=False)
    assert server.requests == before


def test_shards_merge_without_duplicates(tmp_path, data, server, problems):
    rec = SampleRecipe.model_validate(recipe_dict(tmp_path, data, server.url))
    for i in range(3): run_sampling(rec, shard=f"{i}/3", progress=False)
    files = sorted(p.name for p in (tmp_path/"run"/"traces"/"ref").glob("*.jsonl"))
    assert files == ["shard-0-of-3.jsonl", "shard-1-of-3.jsonl", "shard-2-of-3.jsonl"]
    traces = check_store(tmp_path/"run", problems)
    assert {t.problem_id for t in traces} == {p.id for p in problems}


def test_sigkill_mid_run_resumes_with_nothing_lost(tmp_path, data, problems):
    server = TeacherServer(problems, error_rate=0.7, latency=0.2)
    try:
        rec = recipe_dict(tmp_path, data, server.url, max_attempts=5, target_correct=2)
        rec["teachers"][0]["engine"]["max_concurrency"] = 2     # one round of 40 problems takes about 4 seconds
        (tmp_path/"recipe.yaml").write_text(yaml.safe_dump(rec))
        exe = Path(sys.executable).parent/"mixcot"
        store = tmp_path/"run"/"traces"/"ref"/"shard-0-of-1.jsonl"
        at_kill = []
        for kill_after in (4, 12):                     # kill twice, at different points
            proc = subprocess.Popen([str(exe), "sample", str(tmp_path/"recipe.yaml")], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline and (not store.exists() or len(store.read_bytes().splitlines()) < kill_after):
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL); proc.wait()
            at_kill.append(len(store.read_bytes().splitlines()))
        assert 4 <= at_kill[0] < 80, at_kill   # the first round (40 problems x 2) was reaching the store as it ran
        with open(store, "ab") as f: f.write(b'{"teacher": "ref", "problem_id": "math500/x", "sam')   # torn write
        r = subprocess.run([str(exe), "sample", str(tmp_path/"recipe.yaml")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        check_store(tmp_path/"run", problems)
        assert Path(f"{store}.torn").read_text().startswith('{"teacher": "ref"')
    finally:
        server.close()


def test_transformers_teacher_on_a_tiny_model(tmp_path, tiny_model, problems):
    t = TeacherSpec(name="tiny", engine=dict(engine="transformers", model=str(tiny_model), batch_size=8),
                    sampling=dict(temperature=1.0, max_tokens=16, seed=0), max_attempts=2, target_correct=1)
    store = TraceStore(tmp_path/"run")
    stats = sample_teacher(t, problems[:6], store, progress=False)
    traces = store.read("tiny")
    assert len(traces) == stats.attempts == 12                      # a random model solves nothing: 2 attempts each
    assert all(t.completion_tokens and t.completion_tokens <= 16 and t.prompt_tokens for t in traces)
    assert stats.unsolved == 6 and stats.truncation_rate > 0


def test_import_paper_format_dataset(tmp_path, data, problems):
    "A dataset in the paper's released format (problem/solution columns), read through `datasets` from a folder."
    rows = [{"problem": render_prompt(PAPER_PROMPT, p.problem) if i % 2 else p.problem, "solution": p.solution}
            for i, p in enumerate(problems)] + [{"problem": "Not a MATH500 problem.", "solution": "\\boxed{1}"}]
    (tmp_path/"hub"/"data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path/"hub"/"data"/"train-00000-of-00001.parquet")
    t = TeacherSpec(name="released", import_from=dict(path=str(tmp_path/"hub")))
    store = TraceStore(tmp_path/"run")
    stats = import_traces(t, problems, store, progress=False)
    assert stats.imported == 40 and stats.unmatched_rows == 1 and stats.acceptance_rate == 1.0
    assert import_traces(t, problems, store, progress=False).imported == 0


def test_import_errors_name_the_row(tmp_path, problems):
    (tmp_path/"r.jsonl").write_text(json.dumps({"problem": problems[0].problem, "response": "x"}) + "\n")
    t = TeacherSpec(name="bad", import_from=dict(path=str(tmp_path/"r.jsonl")))
    with pytest.raises(InputError, match=r"r.jsonl:1: missing field 'solution'"): import_traces(t, problems, TraceStore(tmp_path))


def test_recipe_errors(tmp_path, data):
    bad = recipe_dict(tmp_path, data, "http://127.0.0.1:1/v1", max_attempts=1)
    with pytest.raises(Exception, match="target_correct cannot exceed max_attempts"): SampleRecipe.model_validate(bad)
    bad = recipe_dict(tmp_path, data, "http://127.0.0.1:1/v1", name="../x")
    with pytest.raises(Exception, match="teacher name"): SampleRecipe.model_validate(bad)


def test_stats_on_known_traces():
    from mixcot_nb.core import Trace
    ts = [Trace(teacher="a", problem_id="p1", sample_idx=i, response="x" * 10, correct=i == 1, completion_tokens=10 * (i + 1),
                finish_reason="length" if i == 0 else "stop") for i in range(2)]
    ts.append(Trace(teacher="a", problem_id="p2", sample_idx=0, response="y", correct=False, completion_tokens=5, finish_reason="stop"))
    s = teacher_stats(ts, problems=["p1", "p2", "p3"])
    assert (s.attempts, s.correct, s.solved, s.unsolved) == (3, 1, 1, 2)
    assert s.truncation_rate == pytest.approx(1 / 3) and s.tokens["median"] == 10


def test_summary_file_keys_and_old_files():
    "`stats.json` keeps the keys it always had: a sampled teacher's has no import counts, and a file without the defaulted fields still reads."
    old = {"attempts": 2, "problems": 1, "correct": 1, "acceptance_rate": 0.5, "solved": 1, "unsolved": 0, "truncation_rate": 0.0,
           "tokens": {"n": 0, "mean": None, "median": None, "p95": None, "max": None}, "chars": {"n": 2, "median": 9}}
    s = SampleSummary.model_validate(old)
    assert s.imported is None and s.decided_by == {} and s.chars["median"] == 9
    s.skipped_no_reference = 0
    assert s.model_dump(mode="json", exclude_none=True) == old | {"decided_by": {}, "skipped_no_reference": 0}
    assert repr(s).startswith("SampleSummary(2 attempts on 1 problems: 50.0% accepted") and "imported" not in repr(s)
    with pytest.raises(ValueError, match="attempts"): SampleSummary.model_validate({k: v for k, v in old.items() if k != "attempts"})


@pytest.mark.parametrize("name", ["sample.yaml", "import_released.yaml"])
def test_paper_sampling_recipes_validate(name):
    from mixcot_nb.core import load_recipe
    r = load_recipe(Path(__file__).parent.parent/"recipes"/"paper"/name, SampleRecipe)
    assert [t.name for t in r.teachers] == ["qwq-32b-long", "qwen2.5-32b-short", "qwen2.5-72b-large", "qwen2.5-3b-small"]
