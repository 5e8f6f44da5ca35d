"Crash safety of the JSONL store, recipe validation and the import smoke test, with real processes."
import signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mixcot_nb.core import (EvalSummary, InputError, JsonlError, JsonlReport, RecipeError, StrictModel, Trace, append_jsonl,
                            load_recipe, parse_recipe, read_jsonl, read_summary, write_json, write_jsonl)

APPENDER = textwrap.dedent("""
    import sys
    from mixcot_nb.core import Trace, append_jsonl
    path = sys.argv[1]
    i = 0
    while True:
        batch = [Trace(teacher="t", problem_id=f"p/{i}", sample_idx=j, response="x" * 5000) for j in range(4)]
        append_jsonl(path, batch)
        i += 1
""")


def _kill_mid_run(tmp_path, script, *args, wait=1.5, started=None):
    "Run `script` in a process and SIGKILL it `wait` seconds after `started` (a path) exists, or after its start."
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=tmp_path)
    deadline = time.time() + 120                       # a loaded machine may take long to import
    while started is not None and not Path(started).exists():
        assert proc.poll() is None and time.time() < deadline, "the writer never started"
        time.sleep(0.02)
    time.sleep(wait)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_append_survives_sigkill(tmp_path):
    path = tmp_path/"traces.jsonl"
    _kill_mid_run(tmp_path, APPENDER, str(path), wait=0.5, started=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = read_jsonl(path, Trace)
    assert len(recs) > 0
    keys = [r.key for r in recs]
    assert len(keys) == len(set(keys))
    # a restart appends cleanly after any torn tail, and nothing complete is lost
    append_jsonl(path, [Trace(teacher="t", problem_id="after", sample_idx=0, response="y")])
    again = read_jsonl(path, Trace)
    assert [r.key for r in again[:-1]] == keys and again[-1].problem_id == "after"


def test_torn_line_is_reported_and_moved_aside(tmp_path):
    path = tmp_path/"a.jsonl"
    write_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "ab") as f: f.write(b'{"a": 3, "b": "unfinish')
    rep = JsonlReport(path=str(path))
    with pytest.warns(UserWarning, match=r"a.jsonl:3: torn last line"):
        assert read_jsonl(path, report=rep) == [{"a": 1}, {"a": 2}]
    assert rep.torn == '{"a": 3, "b": "unfinish' and rep.lines == 2
    append_jsonl(path, [{"a": 4}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}]
    assert (tmp_path/"a.jsonl.torn").read_text() == '{"a": 3, "b": "unfinish\n'


def test_write_is_atomic_under_sigkill(tmp_path):
    path = tmp_path/"big.jsonl"
    write_jsonl(path, [{"v": "old"}])
    script = textwrap.dedent("""
        import sys
        from mixcot_nb.core import write_jsonl
        while True: write_jsonl(sys.argv[1], ({"v": "new", "pad": "z" * 2000} for _ in range(20000)))
    """)
    _kill_mid_run(tmp_path, script, str(path), wait=2.0)
    recs = read_jsonl(path)
    assert recs == [{"v": "old"}] or (len(recs) == 20000 and all(r["v"] == "new" for r in recs))


@pytest.mark.parametrize("content,msg", [
    ('{"a": 1}\n[1, 2]\n', "x.jsonl:2: expected a JSON object"),
    ('{"a": 1}\n{"a": \n{"a": 2}\n', "x.jsonl:2: invalid JSON"),
    ('\xff\xfe{"a"\n{"a": 1}\n', "x.jsonl:1: invalid JSON"),
])
def test_malformed_lines_name_file_and_line(tmp_path, content, msg):
    path = tmp_path/"x.jsonl"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(JsonlError, match=msg): read_jsonl(path)


def test_bad_field_names_the_field(tmp_path):
    path = tmp_path/"t.jsonl"
    good = Trace(teacher="t", problem_id="p", sample_idx=0, response="").model_dump()
    write_jsonl(path, [good, {**good, "finish_reason": "eos"}])
    with pytest.raises(JsonlError, match=r"t.jsonl:2: field 'finish_reason'"): read_jsonl(path, Trace)
    write_jsonl(path, [{k: v for k, v in good.items() if k != "response"}])
    with pytest.raises(JsonlError, match=r"t.jsonl:1: field 'response': Field required"): read_jsonl(path, Trace)


def test_a_trace_store_from_before_response_still_reads(tmp_path):
    "Old stores name the output `text`; they read, a store holding both kinds of line reads, and new lines say `response`."
    path = tmp_path/"shard-0-of-1.jsonl"
    old = {"teacher": "t", "problem_id": "p", "sample_idx": 0, "text": "Final Answer: \\boxed{1}", "answer": "1", "correct": True}
    write_jsonl(path, [old])
    append_jsonl(path, [Trace(teacher="t", problem_id="p", sample_idx=1, response="new")])
    got = read_jsonl(path, Trace)
    assert [t.response for t in got] == ["Final Answer: \\boxed{1}", "new"] and got[0].correct
    assert [sorted(d) for d in read_jsonl(path)][1] == sorted(Trace.model_fields) and "text" not in read_jsonl(path)[1]
    with pytest.raises(JsonlError, match="field 'text'"):     # both names on one line is one too many
        write_jsonl(path, [{**old, "response": "x"}]); read_jsonl(path, Trace)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"): read_jsonl(tmp_path/"nope.jsonl")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(), max_size=8))
def test_roundtrip_any_text(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("rt")/"t.jsonl"
    recs = [Trace(teacher="t", problem_id="p", sample_idx=i, response=s) for i, s in enumerate(texts)]
    write_jsonl(path, recs[: len(recs)//2])
    append_jsonl(path, recs[len(recs)//2:])
    assert read_jsonl(path, Trace) == recs


# summary.json as each version wrote it: before extraction policies, the paper's tables (`report.paper_run`),
# responses graded from a file (`evaluation.grade_responses`), and the report tests' minimal one
BEFORE_POLICIES = {"model": "runs/lab/models/lab-s__short", "adapter": None, "engine": "transformers", "num_parameters": 685568,
                   "n": 1, "temperature": 0.0, "max_new_tokens": 256, "paper_average": None, "updated": "2026-11-30T07:24:35+00:00",
                   "benchmarks": {"lab": {"n": 40, "problems": 40, "samples_per_problem": 1, "correct": 1, "accuracy": 0.025,
                                          "lenient_accuracy": 0.025, "ci95": [0.0044, 0.1288], "ci_method": "wilson",
                                          "pass_at_k": {"1": 0.025}, "completion_tokens": {"n": 40, "mean": 62.15, "median": 62.0,
                                                                                            "p95": 64, "max": 64},
                                          "prompt_tokens_mean": 53.575, "truncation_rate": 0.0, "no_answer_rate": 0.0,
                                          "decided_by": {"exact": 1, "mismatch": 39}, "expected": 40, "complete": True}}}
PAPER_TABLE = {"model": "paper:Qwen2.5-3B:long", "num_parameters": 3000000000.0, "paper_average": 0.4028,
               "source": "Li et al. 2025, Table 3", "benchmarks": {"math_test": {"accuracy": 0.562, "n": None},
                                                                   "aime24": {"accuracy": 0.033, "n": None}}}
IMPORTED = {"model": None, "engine": "imported", "paper_average": None,
            "benchmarks": {"math500": {"n": 2, "problems": 2, "samples_per_problem": [1, 2], "correct": 1, "accuracy": 0.5,
                                       "policy": "lenient", "strict_accuracy": 0.0, "lenient_accuracy": 0.5, "ci95": [0.09, 0.9],
                                       "ci_method": "bootstrap_problems", "pass_at_k": {}, "completion_tokens": {"n": 0, "mean": None,
                                       "median": None, "p95": None, "max": None}, "prompt_tokens_mean": None, "truncation_rate": None,
                                       "no_answer_rate": 0.5, "decided_by": {"no_answer": 1, "exact": 1}, "expected": 2,
                                       "complete": True, "source": "responses.jsonl"}}}
MINIMAL = {"model": "m-long", "num_parameters": None, "benchmarks": {"gsm8k": {"accuracy": 0.4}}}


@pytest.mark.parametrize("old", [BEFORE_POLICIES, PAPER_TABLE, IMPORTED, MINIMAL])
def test_summaries_of_every_vintage_read_and_write_back_unchanged(tmp_path, old):
    write_json(tmp_path/"summary.json", old)
    s = read_summary(tmp_path)
    assert s.folder == tmp_path and all(b.policy in ("strict", "lenient") for b in s.benchmarks.values())
    back = s.model_dump(mode="json")
    assert {k: back[k] for k in old if k != "benchmarks"} == {k: v for k, v in old.items() if k != "benchmarks"}
    for b, v in old["benchmarks"].items(): assert {k: back["benchmarks"][b][k] for k in v} == v
    assert "folder" not in back and EvalSummary.model_validate(back) == s.model_copy(update={"folder": None})


def test_a_bad_summary_names_file_and_field(tmp_path):
    for text, msg in (('{"model": "m"}', "field 'benchmarks': Field required"), ("[1]", "expected a JSON object, got list"),
                      ('{"benchmarks": {"gsm8k": {"accuracy": 0.4, "acc": 1}}}', "field 'benchmarks.gsm8k.acc': Extra inputs"),
                      ('{"benchmarks": ', "invalid JSON")):
        (tmp_path/"summary.json").write_text(text)
        with pytest.raises(InputError, match=rf"{tmp_path}/summary.json: {msg}"): read_summary(tmp_path/"summary.json")


class Teacher(StrictModel):
    model: str
    temperature: float = 0.7


class Recipe(StrictModel):
    seed: int = 42
    teachers: dict[str, Teacher]


@pytest.mark.parametrize("yaml_text,msg", [
    ("teachers:\n  qwq: {model: Qwen/QwQ-32B-Preview, temprature: 0.7}\n", "teachers.qwq.temprature: Extra inputs"),
    ("teachers:\n  qwq: {model: Qwen/QwQ-32B-Preview, temperature: warm}\n", "teachers.qwq.temperature: Input should be a valid number"),
    ("seed: [1]\nteachers: {}\n", "seed: Input should be a valid integer"),
    ("teachers:\n  qwq: {}\n", "teachers.qwq.model: Field required"),
    ("- 1\n- 2\n", "expected a mapping at the top level"),
    ("teachers: {a: [\n", "invalid YAML"),
])
def test_recipe_errors_name_key_path(tmp_path, yaml_text, msg):
    path = tmp_path/"recipe.yaml"
    path.write_text(yaml_text)
    with pytest.raises(RecipeError) as e: load_recipe(path, Recipe)
    assert msg in str(e.value) and str(path) in str(e.value)


def test_recipe_loads():
    r = parse_recipe({"teachers": {"qwq": {"model": "Qwen/QwQ-32B-Preview"}}}, Recipe)
    assert r.teachers["qwq"].temperature == 0.7 and r.seed == 42


def test_every_module_imports_in_a_fresh_process():
    import mixcot_nb
    mods = sorted(p.stem for p in Path(mixcot_nb.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(f'mixcot_nb.{m}')"
    subprocess.run([sys.executable, "-c", code, *mods], check=True)
    assert {"core", "grading", "problems", "cli"} <= set(mods)
