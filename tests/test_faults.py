"Faults a hostile user meets (issue 18): kill -9 mid-save, two processes on one store, a full disk, bad recipes and files."
import json, math, os, signal, subprocess, sys, textwrap, time, warnings
from collections import Counter
from pathlib import Path

import pytest, yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import mixcot_nb.core as core
from mixcot_nb.core import JsonlError, RecipeError, StrictModel, Trace, append_jsonl, load_recipe, read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def mixcot(*args, cwd=None, timeout=300):
    "Run the installed `mixcot` console script."
    exe = Path(sys.executable).parent/"mixcot"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def one_line_error(r, *parts):
    "The command failed with exit 2 and one `mixcot ...: error:` line naming every one of `parts`, no traceback."
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, r.stderr
    for p in parts: assert p in r.stderr, (p, r.stderr)


# --- 1. kill -9 during a checkpoint save ------------------------------------------------------------------------

TRAIN = dict(per_device_train_batch_size=4, max_length=256, use_cpu=True, bf16=False, activation_checkpointing=False,
             disable_tqdm=True, save_strategy="steps", save_steps=1, max_steps=40, report_to="none")


def _torn(out): return [p for p in out.glob("checkpoint-*") if p.is_dir() and not (p/"trainer_state.json").exists()]


def _complete(out): return sorted(int(p.name[11:]) for p in out.glob("checkpoint-*") if (p/"trainer_state.json").exists())


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, data):
    "A tiny Qwen2 chat model with random weights (quick to build; what it says does not matter here)."
    from mixcot_nb.testing import build_tiny_chat_model
    return build_tiny_chat_model(tmp_path_factory.mktemp("models")/"tiny-random", train_steps=0,
                                 data_file=data/"math_hendrycks"/"train.jsonl")


KILL_IN_SAVE = textwrap.dedent("""
    import os, signal, sys
    from transformers import Trainer
    from mixcot_nb.training import main
    save_rng = Trainer._save_rng_state
    def kill_at_step_5(self, output_dir):           # weights and optimizer of checkpoint-5 written, trainer state not yet
        if self.state.global_step == 5: os.kill(os.getpid(), signal.SIGKILL)
        return save_rng(self, output_dir)
    Trainer._save_rng_state = kill_at_step_5
    main([sys.argv[1], "--no-progress"])
""")


def test_kill_during_checkpoint_save_resumes_from_last_complete(random_model, tmp_path, data):
    "SIGKILL while a checkpoint is half written; the rerun sets it aside, resumes from the newest complete one, says so."
    from mixcot_nb.testing import write_tiny_mix
    from mixcot_nb.training import TrainRecipe, run_training
    out = tmp_path/"run"
    r = TrainRecipe(model_name_or_path=str(random_model), dataset=str(write_tiny_mix(tmp_path/"mix", 48)),
                    output_dir=str(out), eos_check=0, sft=TRAIN)
    (tmp_path/"r.yaml").write_text(yaml.safe_dump(r.model_dump(mode="json")))
    env = {**os.environ, "MIXCOT_DATA": str(data), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, str(tmp_path/"r.yaml")], env=env, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert [t.name for t in _torn(out)] == ["checkpoint-5"] and _complete(out)[-1] == 4
    with pytest.warns(UserWarning, match="incomplete checkpoint"):
        s = run_training(r, progress=False)
    assert s.torn_checkpoints and all(".torn" in Path(t).name for t in s.torn_checkpoints)
    assert not _torn(out)                                                  # set aside; checkpoint-5 written anew
    assert Path(s.resumed_from).name == "checkpoint-4"
    assert s.steps == 40


# --- 2. two writers on one store ---------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from mixcot_nb.core import Trace, append_jsonl
    path, who = sys.argv[1], sys.argv[2]
    for i in range(0, 2000, 4):
        append_jsonl(path, [Trace(teacher=who, problem_id=f"p/{i + j}", sample_idx=0, response="x" * 20000) for j in range(4)])
""")


def test_two_writers_on_one_file_lose_nothing(tmp_path):
    "Two processes append 2,000 records each to one file at once: all 4,000 are there, whole, each once."
    path = tmp_path/"traces.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who]) for who in ("a", "b")]
    assert [p.wait() for p in procs] == [0, 0]
    recs = read_jsonl(path, Trace)                    # no torn or cut line anywhere
    assert Counter(r.teacher for r in recs) == {"a": 2000, "b": 2000} and len({(r.teacher, r.problem_id) for r in recs}) == 4000
    assert not (tmp_path/"traces.jsonl.torn").exists()


def test_lock_names_the_holder(tmp_path):
    "A second process asking for a held lock is told which pid holds it; the lock goes when its holder dies."
    path = tmp_path/"store.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mixcot_nb.core import lock_file
        with lock_file({str(path)!r}, "store"):
            print("held", flush=True); time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(core.StoreLocked, match=f"store locked by pid {holder.pid}"):
        with core.lock_file(path, "store"): pass
    holder.send_signal(signal.SIGKILL); holder.wait()
    with core.lock_file(path, "store"): pass                # kill -9 frees it


def _import_teacher(data, name="short", f="shortcot_qwen25_14b_instruct/math500.jsonl"):
    return dict(name=name, import_from=dict(path=str(data/f), problem_field="question", response_field="code"))


def test_second_sample_on_a_store_is_refused(tmp_path, data):
    "While a store's shard is locked by another process, `mixcot sample` on it exits 2 naming that pid."
    from mixcot_nb.sampling import TraceStore
    recipe = tmp_path/"s.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), teachers=[_import_teacher(data)],
                                          problems=dict(dataset="math500", path=str(data/"math500"), limit=8))))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mixcot_nb.sampling import TraceStore
        with TraceStore({str(tmp_path/'run')!r}).lock("short"):
            print("held", flush=True); time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(mixcot("sample", recipe), f"locked by pid {holder.pid}", "short")
        assert not TraceStore(tmp_path/"run").read("short")       # nothing was done twice (or at all)
    finally: holder.kill(); holder.wait()
    r = mixcot("sample", recipe)
    assert r.returncode == 0 and "short: 8 attempts" in r.stdout, r.stderr


def test_second_eval_on_an_output_folder_is_refused(tmp_path, data):
    "`mixcot eval` into a folder another process is evaluating into exits 2 naming that pid."
    out = tmp_path/"eval"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mixcot_nb.core import lock_file
        from mixcot_nb.evaluation import eval_lock
        with eval_lock({str(out)!r}):
            print("held", flush=True); time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(mixcot("eval", "--model", "nobody/none", "--benchmarks", "math500", "--data", f"math500={data/'math500'}",
                              "--limit", "1", "--out", out), f"locked by pid {holder.pid}")
    finally: holder.kill(); holder.wait()


def _slow_grid(tmp_path, data, server, limit, extra=(), arm_teacher="slow"):
    "A grid recipe whose teacher `slow` is served by `server` (a TeacherServer), written to tmp_path/grid.yaml."
    slow = dict(name="slow", engine=dict(engine="openai", model="reference", base_urls=[server.url]), max_attempts=3,
                sampling=dict(max_tokens=64))
    recipe = tmp_path/"grid.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), problems=dict(dataset="math500", path=str(data/"math500"), limit=limit),
        teachers=[slow, *extra], arms=[{"name": "m", "sources": [{"teacher": arm_teacher, "weight": 1.0}]}],
        students=[{"name": "s", "model_name_or_path": "nobody/none"}])))
    return recipe


def test_second_run_does_not_rerun_a_unit_finished_meanwhile(tmp_path, data):
    "`mixcot run` B plans, A finishes a unit B planned, B must skip it (it re-ran it before the fix)."
    from teacher_server import TeacherServer
    from mixcot_nb.pipeline import load_experiment, run_experiment
    from mixcot_nb.problems import load_problems
    problems = load_problems("math500", path=data/"math500", limit=4)
    server = TeacherServer(problems, error_rate=1.0, latency=3.0)
    try:
        rd, recipe = tmp_path/"run", _slow_grid(tmp_path, data, server, limit=4, extra=[_import_teacher(data, "quick")], arm_teacher="quick")
        b = subprocess.Popen([str(Path(sys.executable).parent/"mixcot"), "run", str(recipe), "--only", "sample:*"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not ((f := rd/"units"/"sample__slow.json").exists() and json.loads(f.read_text())["status"] == "running"):
            assert b.poll() is None and time.time() < deadline, b.stderr.read() if b.poll() is not None else "B never started"
            time.sleep(0.05)
        run_experiment(load_experiment(recipe), only=["sample:quick"], progress=False)     # A, while B samples `slow`
        _, err = b.communicate(timeout=120)
        assert b.returncode == 0, err
    finally: server.close()
    starts = Counter(e["unit"] for e in read_jsonl(rd/"units"/"events.jsonl") if e["event"] == "start")
    assert starts == {"sample:slow": 1, "sample:quick": 1}


# --- a full disk ------------------------------------------------------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path):
    "A 1 MiB tmpfs (needs mount rights: root, or an unprivileged user namespace)."
    mnt = tmp_path/"disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the full-disk test needs mount rights")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_keeps_every_complete_line(small_disk):
    "Appending until ENOSPC: every line read back is whole, the error is one `OSError`, a later append still works."
    path = small_disk/"traces.jsonl"
    written = 0
    with pytest.raises(OSError) as e:
        for i in range(10_000):
            written += append_jsonl(path, [Trace(teacher="t", problem_id=f"p/{i}", sample_idx=0, response="x" * 3000)])
    assert e.value.errno == 28                        # ENOSPC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = read_jsonl(path, Trace)
    assert [r.problem_id for r in recs] == [f"p/{i}" for i in range(written)]
    lines = path.read_bytes().split(b"\n")
    os.truncate(path, sum(len(l) + 1 for l in lines[:-11]))     # make room: drop the last ten whole lines (and any torn tail)
    append_jsonl(path, [Trace(teacher="t", problem_id="after", sample_idx=0, response="y")])
    assert read_jsonl(path, Trace)[-1].problem_id == "after"


# --- 3. an arm named `base` ---------------------------------------------------------------------------------------

def test_arm_named_base_is_refused(tmp_path, data):
    recipe = tmp_path/"grid.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), teachers=[_import_teacher(data)],
        arms=[{"name": "base", "sources": [{"teacher": "short", "weight": 1.0}]}], eval_base=True,
        students=[{"name": "s", "model_name_or_path": "nobody/none"}])))
    one_line_error(mixcot("run", recipe, "--plan"), "grid.yaml", "arms", "'base' is reserved")


# --- 4. YAML alias expansion ------------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, k in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("where", ["eval", "train", "world", "mix"])
def test_alias_bomb_refused_before_anything_is_built(tmp_path, data, where):
    "Under 1 KB of YAML expanding to 10^10 values inside a free-form dict: refused at load time, `--plan` too."
    from mixcot_nb.pipeline import ExperimentRecipe
    body = textwrap.indent(BOMB, "  ")
    text = (f"run_dir: {tmp_path/'run'}\nteachers: [{json.dumps(_import_teacher(data))}]\narms: [{{name: m, sources: [{{teacher: short, weight: 1}}]}}]\n"
            f"students: [{{name: s, model_name_or_path: m}}]\n{where}:\n{body}")
    assert len(text) < 1500
    (tmp_path/"bomb.yaml").write_text(text)
    t0 = time.time()
    with pytest.raises(RecipeError, match=r"bomb.yaml: .*expands to more than"): load_recipe(tmp_path/"bomb.yaml", ExperimentRecipe)
    assert time.time() - t0 < 5
    one_line_error(mixcot("run", tmp_path/"bomb.yaml", "--plan", timeout=60), "bomb.yaml", "expands to more than")


def test_ordinary_aliases_still_load():
    "The paper grid shares one LoRA block among students with an alias: that stays allowed."
    from mixcot_nb.pipeline import load_experiment
    r = load_experiment(ROOT/"recipes"/"paper"/"grid.yaml")
    assert len({json.dumps(s.train, sort_keys=True) for s in r.students if s.train}) >= 1


class _Any(StrictModel):
    seed: int = 0
    train: dict = {}
    names: list[str] = []


yaml_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), yaml_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True))))
def test_fuzz_recipe_loading(tmp_path, text):
    "Any text at all: a recipe, or a `RecipeError` naming the file; never another exception."
    path = tmp_path/"fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try: load_recipe(path, _Any)
    except RecipeError as e: assert str(path) in str(e)


# --- 5. `mixcot sample --limit` -----------------------------------------------------------------------------------

def test_sample_limit_keeps_the_problem_list(tmp_path, data):
    recipe = tmp_path/"s.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), teachers=[_import_teacher(data)],
                                          problems=dict(dataset="math500", path=str(data/"math500"), limit=8))))
    r = mixcot("sample", recipe, "--limit", "3")
    assert r.returncode == 0 and "short: 3 attempts" in r.stdout, r.stderr
    assert len(read_jsonl(tmp_path/"run"/"problems"/"math500.jsonl")) == 8       # the run's problems, not the limit's
    for bad in ("-1", "0", "two"):
        one_line_error(mixcot("sample", recipe, "--limit", bad), "--limit")
    assert len(read_jsonl(tmp_path/"run"/"problems"/"math500.jsonl")) == 8


# --- 6. re-importing a changed file -----------------------------------------------------------------------------

def test_reimport_matches_rows_by_content(tmp_path, data):
    "A row inserted before an old one: the old response stays once, the new one is added."
    from mixcot_nb.problems import load_problems
    from mixcot_nb.sampling import TeacherSpec, TraceStore, import_traces
    problems = load_problems("math500", path=data/"math500", limit=4)
    short = read_jsonl(data/"shortcot_qwen25_14b_instruct"/"math500.jsonl")[:2]
    long = read_jsonl(data/"longcot_style_math500"/"math500_even.jsonl")[0]
    assert long["question"] == short[0]["question"] and long["code"] != short[0]["code"]
    f = tmp_path/"responses.jsonl"
    t = TeacherSpec(**_import_teacher(data, "t") | {"import_from": dict(path=str(f), problem_field="question", response_field="code")})
    store = TraceStore(tmp_path/"run")
    f.write_text("".join(json.dumps(r) + "\n" for r in short))
    import_traces(t, problems, store, grade_workers=0, progress=False)
    f.write_text("".join(json.dumps(r) + "\n" for r in [long, *short]))        # new row before the old ones
    s = import_traces(t, problems, store, grade_workers=0, progress=False)
    texts = Counter(tr.response for tr in store.read("t"))
    assert texts == Counter(short[0]["code"] + short[1]["code"] + long["code"])     # `code` holds a list of samples
    assert s.imported == 1 and s.already_stored == 2
    idx = sorted((tr.problem_id, tr.sample_idx) for tr in store.read("t"))
    assert len(set(idx)) == 3


# --- 7. `mixcot grade` inputs -----------------------------------------------------------------------------------

def _rows(path, rows): path.write_text("".join(json.dumps(r) + "\n" for r in rows)); return path


def test_grade_string_labels(tmp_path):
    f = _rows(tmp_path/"l.jsonl", [{"response": "\\boxed{2}", "answer": "2", "ok": "false"},
                                   {"response": "\\boxed{3}", "answer": "3", "ok": "True"}])
    r = mixcot("grade", f, "--label-field", "ok", "--workers", "0", "--out", tmp_path/"o")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path/"o"/"summary.json").read_text())
    assert s["agreement"] == 0.5 and s["label_accuracy"] == 0.5
    _rows(f, [{"response": "\\boxed{2}", "answer": "2", "ok": "maybe"}])
    one_line_error(mixcot("grade", f, "--label-field", "ok", "--workers", "0", "--out", tmp_path/"o"), "l.jsonl:1", "field 'ok'")


@pytest.mark.parametrize("gold", [None, {"a": 1}, float("nan"), [], ""])
def test_grade_unusable_reference_answer_is_refused(tmp_path, gold):
    f = tmp_path/"g.jsonl"
    f.write_text(json.dumps({"response": "\\boxed{2}", "answer": "2"}) + "\n" + json.dumps({"response": "\\boxed{2}", "answer": gold}) + "\n")
    one_line_error(mixcot("grade", f, "--workers", "0", "--out", tmp_path/"o"), "g.jsonl:2", "field 'answer'")
    assert not (tmp_path/"o").exists()


@pytest.mark.parametrize("t", ["-1", "0", "nan", "inf", "soon"])
def test_grade_timeout_must_be_positive_and_finite(tmp_path, t):
    f = _rows(tmp_path/"g.jsonl", [{"response": "\\boxed{2}", "answer": "2"}])
    one_line_error(mixcot("grade", f, "--timeout", t, "--out", tmp_path/"o"), "--timeout")


def test_grade_default_folder_is_per_path_and_spaces_work(tmp_path):
    "Equally named files in two folders get two output folders; a path with a space is graded and written."
    for d, ans in (("a", "2"), ("b", "3"), ("with space", "4")):
        (tmp_path/d).mkdir()
        _rows(tmp_path/d/"resp.jsonl", [{"response": "\\boxed{2}", "answer": ans}])
    work = tmp_path/"work"; work.mkdir()
    for d in ("a", "b", "with space"):
        r = mixcot("grade", tmp_path/d/"resp.jsonl", "--workers", "0", cwd=work)
        assert r.returncode == 0, r.stderr
    summaries = [json.loads(p.read_text()) for p in (work/"runs"/"grade").glob("*/summary.json")]
    assert sorted(s["accuracy"] for s in summaries) == [0.0, 0.0, 1.0]
    assert {Path(s["file"]).parent.name for s in summaries} == {"a", "b", "with space"}


def test_grade_unwritable_output_is_refused_before_grading(tmp_path):
    f = _rows(tmp_path/"g.jsonl", [{"response": "\\boxed{2}", "answer": "2"}])
    (tmp_path/"file").write_text("")
    one_line_error(mixcot("grade", f, "--workers", "0", "--out", tmp_path/"file"/"o"), str(tmp_path/"file"))


grade_cells = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=6),
                        st.lists(st.text(max_size=6), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({}, optional={"response": grade_cells, "answer": grade_cells, "label": grade_cells}),
                min_size=1, max_size=4))
def test_fuzz_grade_inputs(tmp_path, rows):
    "Any rows: a summary whose counts add up, or a `MixcotError` naming the file and line; never another exception."
    from mixcot_nb.cli import grade_file
    f = tmp_path/"fuzz.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try: s = grade_file(f, label_field="label", workers=0, out=tmp_path/"o", progress=False)
    except core.MixcotError as e: assert "fuzz.jsonl:" in str(e); return
    assert s["n"] == sum(len(r["response"]) if isinstance(r["response"], list) else 1 for r in rows)
    usable = lambda a: a is not None and not isinstance(a, dict) and not (isinstance(a, float) and math.isnan(a))
    assert all(usable(r["answer"]) and usable(r["label"]) for r in rows)


# --- one error hierarchy ----------------------------------------------------------------------------------------

def test_user_errors_share_one_base():
    from mixcot_nb.backends import EngineError
    from mixcot_nb.pipeline import PipelineError
    from mixcot_nb.problems import RowError
    from mixcot_nb.training import TrainingError
    for e in (JsonlError, RecipeError, core.StoreLocked, EngineError, PipelineError, RowError, TrainingError):
        assert issubclass(e, core.MixcotError), e
    assert not issubclass(KeyError, core.MixcotError) and not issubclass(TypeError, core.MixcotError)


def test_engine_error_is_one_line(tmp_path, data):
    "A server that is not there: `EngineError` printed as one line, exit 2 (it ended in a traceback before)."
    import socket
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    (tmp_path/"e.yaml").write_text(yaml.safe_dump(dict(engine=dict(engine="openai", max_retries=0, timeout=2))))
    r = mixcot("eval", tmp_path/"e.yaml", "--model", "m", "--base-url", f"http://127.0.0.1:{port}/v1", "--benchmarks", "math500",
               "--data", f"math500={data/'math500'}", "--limit", "1", "--max-new-tokens", "8", "--out", tmp_path/"o")
    one_line_error(r, "127.0.0.1")


def test_unknown_unit_is_one_line(tmp_path, data):
    recipe = tmp_path/"grid.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), teachers=[_import_teacher(data)],
        arms=[{"name": "m", "sources": [{"teacher": "short", "weight": 1.0}]}], students=[{"name": "s", "model_name_or_path": "x"}])))
    one_line_error(mixcot("run", recipe, "--only", "sample:nobody", "--plan"), "no unit matches ['sample:nobody']")


# --- 9. one line, not a traceback --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,part", [("a: [1\n", "bad.yaml:2:1: invalid YAML"), ("- 1\n- 2\n", "expected a mapping"),
                                       ("x: !!python/object:os.system {}\n", "bad.yaml:1:4: tag 'tag:yaml.org,2002:python/object")])
def test_bad_eval_recipe_is_one_line(tmp_path, text, part):
    "`mixcot eval RECIPE` with bad YAML, a list or a blocked tag: one line naming file and place (bad YAML printed 7 lines)."
    (tmp_path/"bad.yaml").write_text(text)
    r = mixcot("eval", tmp_path/"bad.yaml", "--model", "m", "--benchmarks", "math500", "--out", tmp_path/"o")
    one_line_error(r, part)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_mistyped_model_is_one_line_and_leaves_no_config(tmp_path, data):
    "A model that is neither a folder nor reachable on the Hub (offline): one line naming it; the corrected command runs."
    from mixcot_nb.testing import build_tiny_chat_model
    args = ["--benchmarks", "math500", "--data", f"math500={data/'math500'}", "--limit", "1", "--max-new-tokens", "4",
            "--out", tmp_path/"o", "--engine", "transformers"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    exe = str(Path(sys.executable).parent/"mixcot")
    for model in ("nobody/no-such-model", tmp_path/"no-such-folder"):
        r = subprocess.run([exe, "eval", "--model", str(model), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
        one_line_error(r, f"model '{model}'")
    assert not (tmp_path/"o"/"eval_config.json").exists()
    tiny = build_tiny_chat_model(tmp_path/"tiny", train_steps=0, data_file=data/"math_hendrycks"/"train.jsonl")
    r = subprocess.run([exe, "eval", "--model", str(tiny), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_http_401_is_one_line(tmp_path, data):
    "A server answering 401 Unauthorized: one line naming the status, exit 2."
    from fault_server import FaultServer
    with FaultServer(ports=1, latency=0, fault_fn=lambda prompt, attempt: "401") as srv:
        (tmp_path/"e.yaml").write_text(yaml.safe_dump(dict(engine=dict(engine="openai", max_retries=0, timeout=5))))
        r = mixcot("eval", tmp_path/"e.yaml", "--model", "m", "--base-url", srv.base_urls[0], "--benchmarks", "math500",
                   "--data", f"math500={data/'math500'}", "--limit", "1", "--max-new-tokens", "8", "--out", tmp_path/"o")
    one_line_error(r, "401")


def test_read_only_run_dir_is_one_line(tmp_path, data):
    "`mixcot sample` into a read-only file system (EROFS; root ignores a folder's mode): one line naming the path, exit 2."
    rd = tmp_path/"run"; rd.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(rd)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    recipe = tmp_path/"s.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(rd), teachers=[_import_teacher(data)],
                                          problems=dict(dataset="math500", path=str(data/"math500"), limit=2))))
    try: one_line_error(mixcot("sample", recipe), "read-only", str(rd))
    finally: subprocess.run(["umount", "-l", str(rd)], check=False)


def test_full_disk_is_one_line(small_disk, data):
    "`mixcot sample` onto a full disk: one line saying so and naming the file, exit 2 (a traceback before)."
    fd = os.open(small_disk/"fill", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096): pass
    except OSError: pass
    finally: os.close(fd)
    recipe = small_disk.parent/"s.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(small_disk/"run"), teachers=[_import_teacher(data)],
                                          problems=dict(dataset="math500", path=str(data/"math500"), limit=2))))
    one_line_error(mixcot("sample", recipe), "no space left", str(small_disk))


# --- 10. permissions ---------------------------------------------------------------------------------------------

def test_atomic_writes_keep_the_umask_mode(tmp_path):
    "Files written atomically are 0644 and temporary-then-renamed folders 0755 under umask 022 (0600/0700 before)."
    old = os.umask(0o022)
    try:
        core.write_json(tmp_path/"a.json", {"a": 1}); core.write_jsonl(tmp_path/"b.jsonl", [{"b": 1}])
        d = core.temp_dir_beside(tmp_path/"c")
        os.umask(0o027); core.write_json(tmp_path/"d.json", {})
    finally: os.umask(old)
    mode = lambda p: oct(p.stat().st_mode & 0o777)
    assert (mode(tmp_path/"a.json"), mode(tmp_path/"b.jsonl"), mode(d), mode(tmp_path/"d.json")) == ("0o644", "0o644", "0o755", "0o640")


# --- 11. smaller -------------------------------------------------------------------------------------------------

def test_training_steps_must_be_positive():
    from mixcot_nb.training import TrainRecipe
    for sft, key in (({"max_steps": -10}, "sft.max_steps"), ({"num_train_epochs": 0}, "sft.num_train_epochs")):
        with pytest.raises(RecipeError, match=key):
            core.parse_recipe(dict(model_name_or_path="m", dataset="d", output_dir="o", sft=sft), TrainRecipe, "t.yaml")
    core.parse_recipe(dict(model_name_or_path="m", dataset="d", output_dir="o", sft={"max_steps": -1, "num_train_epochs": 0.5}),
                      TrainRecipe, "t.yaml")          # TRL's -1: train by epochs


def _grid(tmp_path, data, **kw):
    return dict(run_dir=str(tmp_path/"run"), teachers=[_import_teacher(data)],
                arms=[{"name": "m", "sources": [{"teacher": "short", "weight": 1.0}]}],
                students=[{"name": "s", "model_name_or_path": "x"}], **kw)


@pytest.mark.parametrize("kw,key", [(dict(run_dir=""), "run_dir"), (dict(seed=2**32), "seed"), (dict(seed=-1), "seed"),
                                    (dict(seeds=[1, 2**40]), "seeds.1")])
def test_grid_values_refused_with_key_path(tmp_path, data, kw, key):
    "An empty `run_dir` (wrote into the working directory) or a seed NumPy cannot take (failed at run time) is refused."
    from mixcot_nb.pipeline import ExperimentRecipe
    with pytest.raises(RecipeError, match=rf"g.yaml: {key}:"):
        core.parse_recipe({**_grid(tmp_path, data), **kw}, ExperimentRecipe, "g.yaml")


def test_name_with_newline_is_refused():
    for bad in ("a\n", "a\nb", "a\r"):
        with pytest.raises(core.InputError): core.check_name(bad)
    assert core.check_name("a.b-c_1") == "a.b-c_1"


def test_api_key_env_must_name_a_key():
    "`api_key_env: HOME` sent $HOME to the recipe's URL; only API key names (upper case, `_KEY`/`_TOKEN`) are taken."
    from mixcot_nb.backends import EngineSpec, OpenAIEngine
    for bad in ("HOME", "PATH", "DATABASE_URL", "lower_api_key", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", ""):
        with pytest.raises(RecipeError, match="e.yaml: api_key_env: .*not an API key variable"):
            core.parse_recipe(dict(engine="openai", model="m", api_key_env=bad), EngineSpec, "e.yaml")
        with pytest.raises(ValueError, match="api_key_env"): OpenAIEngine("m", ["http://127.0.0.1:9/v1"], api_key_env=bad)
    for ok in ("OPENAI_API_KEY", "TOGETHER_KEY", "HF_TOKEN", "MIXCOT_TEST_KEY"): EngineSpec(engine="openai", model="m", api_key_env=ok)


def test_unit_lock_is_not_kept_by_a_forked_child(tmp_path):
    "A unit whose process died while a forked worker lives on is free again (flock was inherited by the worker)."
    from mixcot_nb.pipeline import _unit_lock
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        from mixcot_nb.pipeline import _unit_lock
        with _unit_lock({str(tmp_path)!r}, "train:s:m"):
            child = os.fork()
            if child == 0: time.sleep(60); os._exit(0)         # a grading worker outliving its parent
            print(child, flush=True); time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    with pytest.raises(core.MixcotError, match="locked by pid"):
        with _unit_lock(tmp_path, "train:s:m"): pass
    holder.send_signal(signal.SIGKILL); holder.wait()
    try:
        with _unit_lock(tmp_path, "train:s:m"): pass
    finally: os.kill(child, signal.SIGKILL)


def test_status_shows_a_killed_unit(tmp_path, data):
    "`mixcot run` killed mid-unit: `mixcot status` says killed, not running (it said running before)."
    from teacher_server import TeacherServer
    from mixcot_nb.pipeline import experiment_status, format_status
    from mixcot_nb.problems import load_problems
    server = TeacherServer(load_problems("math500", path=data/"math500", limit=2), error_rate=1.0, latency=3.0)
    try:
        rd, recipe = tmp_path/"run", _slow_grid(tmp_path, data, server, limit=2)
        b = subprocess.Popen([str(Path(sys.executable).parent/"mixcot"), "run", str(recipe), "--only", "sample:*"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not ((f := rd/"units"/"sample__slow.json").exists() and json.loads(f.read_text())["status"] == "running"):
            assert b.poll() is None and time.time() < deadline, "the run never started its unit"
            time.sleep(0.05)
        assert experiment_status(rd)["units"]["sample:slow"]["status"] == "running"
        b.send_signal(signal.SIGKILL); b.wait()
    finally: server.close()
    s = experiment_status(rd)
    assert s["units"]["sample:slow"]["status"] == "killed" and "sample slow KILLED" in format_status(s)


def test_killed_mix_leaves_no_temporary_folder(tmp_path, data):
    "`mixcot mix` killed while writing a mix: the rerun removes the temporary folder and writes the mix whole (it stayed before)."
    run = tmp_path/"run"
    (tmp_path/"s.yaml").write_text(yaml.safe_dump(dict(run_dir=str(run), teachers=[_import_teacher(data)],
                                                        problems=dict(dataset="math500", path=str(data/"math500")))))
    assert mixcot("sample", tmp_path/"s.yaml").returncode == 0
    (tmp_path/"m.yaml").write_text(yaml.safe_dump(dict(run_dir=str(run), arms=[{"name": "m", "sources": [{"teacher": "short", "weight": 1.0}]}])))
    mixes = run/"mixes"
    temps = lambda: [p for p in mixes.glob(".m.*") if p.is_dir()] if mixes.exists() else []
    for attempt in range(5):
        p = subprocess.Popen([str(Path(sys.executable).parent/"mixcot"), "mix", str(tmp_path/"m.yaml")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None and not any((t/"stats.json").exists() for t in temps()): pass
        p.send_signal(signal.SIGKILL); p.wait()
        if temps(): break
    assert temps(), "no kill landed while the mix was being written in 5 tries"
    r = mixcot("mix", tmp_path/"m.yaml")
    assert r.returncode == 0, r.stderr
    assert not temps() and (mixes/"m"/"stats.json").exists() and oct((mixes/"m").stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask():
    old = os.umask(0o022); os.umask(old); return old


def test_shard_stats_count_only_sampled_problems(tmp_path, data):
    "Sampling shard 0/2: problems of shard 1, not sampled yet, are not counted unsolved (they were before); after 1/2 all are."
    from teacher_server import TeacherServer
    from mixcot_nb.problems import load_problems
    from mixcot_nb.sampling import SampleRecipe, run_sampling, shard_of
    problems = load_problems("math500", path=data/"math500", limit=10)
    server = TeacherServer(problems, error_rate=0.0)
    try:
        rec = SampleRecipe.model_validate(dict(run_dir=str(tmp_path/"run"), problems=dict(dataset="math500", path=str(data/"math500"), limit=10),
            teachers=[dict(name="ref", engine=dict(engine="openai", model="reference", base_urls=[server.url]), max_attempts=1,
                           sampling=dict(max_tokens=64))]))
        s0 = run_sampling(rec, shard="0/2", progress=False)["ref"]
        mine = [p for p in problems if shard_of(p.id, 2) == 0]
        assert (s0.solved, s0.unsolved) == (len(mine), 0), s0
        s1 = run_sampling(rec, shard="1/2", progress=False)["ref"]
        assert (s1.solved, s1.unsolved) == (len(problems), 0), s1
    finally: server.close()


def test_import_matching_no_row_is_refused(tmp_path, data):
    "Importing math500 responses into a run on gsm8k: exit 2 naming the file and field (exit 0, nothing stored, before)."
    f = data/"shortcot_qwen25_14b_instruct"/"math500.jsonl"
    recipe = tmp_path/"s.yaml"
    recipe.write_text(yaml.safe_dump(dict(run_dir=str(tmp_path/"run"), teachers=[_import_teacher(data)],
                                          problems=dict(dataset="gsm8k", path=str(data/"gsm8k"), limit=20))))
    one_line_error(mixcot("sample", recipe), str(f), "none of its", "'question'")
