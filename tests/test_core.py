"Crash safety of the JSONL store, recipe validation and the import smoke test, with real processes."
import signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mixcot_nb.core import (JsonlError, JsonlReport, RecipeError, StrictModel, Trace, append_jsonl, load_recipe,
                            parse_recipe, read_jsonl, write_jsonl)

APPENDER = textwrap.dedent("""
    import sys
    from mixcot_nb.core import Trace, append_jsonl
    path = sys.argv[1]
    i = 0
    while True:
        batch = [Trace(teacher="t", problem_id=f"p/{i}", sample_idx=j, text="x" * 5000) for j in range(4)]
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
    append_jsonl(path, [Trace(teacher="t", problem_id="after", sample_idx=0, text="y")])
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
    good = Trace(teacher="t", problem_id="p", sample_idx=0, text="").model_dump()
    write_jsonl(path, [good, {**good, "finish_reason": "eos"}])
    with pytest.raises(JsonlError, match=r"t.jsonl:2: field 'finish_reason'"): read_jsonl(path, Trace)
    write_jsonl(path, [{k: v for k, v in good.items() if k != "text"}])
    with pytest.raises(JsonlError, match=r"t.jsonl:1: field 'text': Field required"): read_jsonl(path, Trace)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"): read_jsonl(tmp_path/"nope.jsonl")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(), max_size=8))
def test_roundtrip_any_text(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("rt")/"t.jsonl"
    recs = [Trace(teacher="t", problem_id="p", sample_idx=i, text=s) for i, s in enumerate(texts)]
    write_jsonl(path, recs[: len(recs)//2])
    append_jsonl(path, recs[len(recs)//2:])
    assert read_jsonl(path, Trace) == recs


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
