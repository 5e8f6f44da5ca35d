"""Mix Distillation on real trace stores: exact shares, pools, seeds, length budgets with a real tokenizer, filters,
decontamination, the store read path (torn, malformed, duplicated lines) and a mix of the real response files."""
import json, subprocess, sys, tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from mixcot_nb.core import PAPER_PROMPT, JsonlError, Problem, RunDir, Trace, read_jsonl, render_prompt, write_jsonl
import pyarrow as pa

from mixcot_nb.mixing import (MixSpec, MixSummary, allocate, assign, build_mix, builtin_mix, export_alpaca, fetch_texts, iter_texts,
                              load_mix, scan_traces)
from mixcot_nb.problems import load_problems
from mixcot_nb.sampling import TeacherSpec, TraceStore, import_traces

STATUS = {"ok": (True, "stop"), "wrong": (False, "stop"), "trunc": (True, "length"), "ungraded": (None, "stop"),
          "trunc_wrong": (False, "length")}


def problems_of(n:int) -> list[Problem]:
    return [Problem(id=f"syn/{i:04d}", dataset="syn", problem=f"Problem {i}: compute {i} plus {i}.", answer=str(2 * i))
            for i in range(n)]


def text_of(teacher, pid, idx): return f"{teacher} solves {pid}, attempt {idx}. Final Answer: \\boxed{{1}}"


def make_run(root, table:dict[str, dict[str, list[str]]], problems:list[Problem], texts=None) -> RunDir:
    "A run dir whose store holds, for each teacher and problem id, one trace per status in `table[teacher][pid]`."
    run, store = RunDir(root), TraceStore(root)
    write_jsonl(run.root/"problems"/"x.jsonl", problems)
    for t, by_pid in table.items():
        traces = [Trace(teacher=t, problem_id=p, sample_idx=i, response=(texts or text_of)(t, p, i), correct=STATUS[s][0],
                        finish_reason=STATUS[s][1], completion_tokens=7 + i)
                  for p, sts in by_pid.items() for i, s in enumerate(sts)]
        store.append(traces)
    return run


def spec(name="m", weights=None, **kw) -> MixSpec:
    return MixSpec(name=name, sources=[dict(teacher=t, weight=w) for t, w in (weights or {"a": 1, "b": 1}).items()], **kw)


def rows_of(run, name="m") -> list[dict]: return load_mix(RunDir(run).mix(name)).to_list()


def within_one_row(counts:dict, weights:dict, n:int) -> bool:
    total = sum(weights.values())
    return all(abs(counts.get(t, 0) - n * w / total) <= 1 + 1e-9 for t, w in weights.items())


def check_rows(rows, table, problems, per_problem=1):
    "Every row is an eligible trace of its teacher, with the right prompt and the stored text."
    by_id = {p.id: p for p in problems}
    for r in rows:
        t, p, i = r["teacher"], r["problem_id"], r["sample_idx"]
        assert table[t][p][i] == "ok"
        assert r["messages"] == [{"role": "user", "content": render_prompt(PAPER_PROMPT, by_id[p].problem)},
                                 {"role": "assistant", "content": text_of(t, p, i)}]
    per_pid = defaultdict(list)
    for r in rows: per_pid[r["problem_id"]].append((r["teacher"], r["sample_idx"]))
    for p, got in per_pid.items():
        assert len(got) == per_problem and len(set(got)) == per_problem     # distinct responses ...
        assert len({t for t, _ in got}) == 1                                 # ... all from one source


# ---- shares, pools, seeds ----------------------------------------------------------------------------------------

@st.composite
def stores(draw, max_teachers=4):
    n = draw(st.integers(1, 30))
    k = draw(st.integers(1, max_teachers))
    status = st.sampled_from(["ok", "ok", "ok", "wrong", "trunc", "ungraded"])
    table = {f"t{j}": {p.id: draw(st.lists(status, max_size=3)) for p in problems_of(n)} for j in range(k)}
    weights = {t: draw(st.floats(0.01, 10)) for t in table}
    return problems_of(n), table, weights


@settings(deadline=None, max_examples=30)
@given(stores(), st.integers(1, 2), st.integers(0, 10**6))
def test_intersection_shares_equal_weights(case, per_problem, seed):
    problems, table, weights = case
    eligible = {t: {p for p, sts in by.items() if sts.count("ok") >= per_problem} for t, by in table.items()}
    pool = set.intersection(*eligible.values())
    with tempfile.TemporaryDirectory() as d:
        run = make_run(d, table, problems)
        s = spec(weights=weights, per_problem=per_problem, seed=seed)
        if any(not any(by.values()) for by in table.values()):
            with pytest.raises(FileNotFoundError, match="no traces for teacher"): build_mix(s, run, progress=False)
            return
        if empty := [t for t, by in table.items() if not any("ok" in sts for sts in by.values())]:
            with pytest.raises(ValueError, match=f"no eligible response from {empty[0]} "): build_mix(s, run, progress=False)
            return
        if not pool:
            with pytest.raises(ValueError, match=f"no problem has {per_problem} eligible response.* from every source"):
                build_mix(s, run, progress=False)
            return
        stats = build_mix(s, run, progress=False)
        rows = rows_of(d)
    check_rows(rows, table, problems, per_problem)
    problems_per_source = Counter(r["teacher"] for r in rows if r["sample_idx"] == min(
        x["sample_idx"] for x in rows if x["problem_id"] == r["problem_id"]))
    assert {r["problem_id"] for r in rows} == pool                          # every pooled problem, each once
    assert len(rows) == per_problem * len(pool) == stats.rows
    assert within_one_row(problems_per_source, weights, len(pool))
    assert stats.rows_per_source == {t: per_problem * problems_per_source.get(t, 0) for t in table}
    assert stats.eligible_problems_per_source == {t: sum(sts.count("ok") >= 1 for sts in by.values())
                                                     for t, by in table.items()}
    expect_dropped = Counter()
    for t, by in table.items():
        for sts in by.values():
            for x in sts:
                if x in ("wrong", "ungraded"): expect_dropped[f"{t}:incorrect"] += 1
                if x == "trunc": expect_dropped[f"{t}:truncated"] += 1
    assert stats.dropped == dict(expect_dropped)


@settings(deadline=None, max_examples=20)
@given(stores(), st.integers(0, 10**6))
def test_union_shares_and_availability(case, seed):
    problems, table, weights = case
    avail = {t: sum(sts.count("ok") for sts in by.values()) for t, by in table.items()}
    with tempfile.TemporaryDirectory() as d:
        run = make_run(d, table, problems)
        s = spec(weights=weights, pool="union", seed=seed)
        if any(not any(by.values()) for by in table.values()):
            with pytest.raises(FileNotFoundError): build_mix(s, run, progress=False)
            return
        if min(avail.values()) == 0:
            empty = [t for t, n in avail.items() if n == 0]
            with pytest.raises(ValueError, match=f"no eligible response from {empty[0]}"): build_mix(s, run, progress=False)
            return
        stats = build_mix(s, run, progress=False)
        rows = rows_of(d)
    keys = [(r["teacher"], r["problem_id"], r["sample_idx"]) for r in rows]
    assert len(keys) == len(set(keys)) == stats.rows                     # no response twice
    assert all(table[t][p][i] == "ok" for t, p, i in keys)
    counts = Counter(t for t, _, _ in keys)
    assert all(counts[t] <= avail[t] for t in table)                        # never more than a source has
    assert within_one_row(counts, weights, len(rows))
    total = sum(weights.values())
    largest = min(avail[t] / (weights[t] / total) for t in table)
    assert largest - 1 < len(rows) <= largest + 1e-9                        # as large as the scarcest source allows


@settings(deadline=None, max_examples=300)
@given(st.dictionaries(st.sampled_from("abcdefg"), st.floats(1e-3, 1e3), min_size=1), st.integers(0, 5000))
def test_allocate_within_one_row(weights, n):
    total = sum(weights.values())
    counts = allocate(n, {t: w / total for t, w in weights.items()})
    assert sum(counts.values()) == n and within_one_row(counts, weights, n) and min(counts.values()) >= 0


@settings(deadline=None, max_examples=300)
@given(st.dictionaries(st.sampled_from("abcdef"), st.tuples(st.floats(1e-3, 1e3), st.integers(1, 60)), min_size=1),
       st.integers(0, 99))
def test_assign_union_never_oversamples(sources, seed):
    "`assign` alone, many more cases: union counts stay within what each source has."
    cands = {t: {f"p{i}": [i] for i in range(n)} for t, (_, n) in sources.items()}
    s = spec(weights={t: w for t, (w, _) in sources.items()}, pool="union", seed=seed)
    rows = assign(cands, s)
    counts = Counter(t for t, _, _ in rows)
    assert all(counts[t] <= n for t, (_, n) in sources.items())
    assert within_one_row(counts, {t: w for t, (w, _) in sources.items()}, len(rows))


@pytest.fixture()
def big(tmp_path):
    problems = problems_of(300)
    table = {t: {p.id: ["ok", "ok"] for p in problems} for t in ("a", "b", "c")}
    return make_run(tmp_path, table, problems), table, problems


def test_seeds(big):
    run, table, problems = big
    build_mix(spec("s1", seed=1), run, progress=False)
    build_mix(spec("s1again", seed=1), run, progress=False)
    build_mix(spec("s2", seed=2), run, progress=False)
    one, again, two = (rows_of(run.root, n) for n in ("s1", "s1again", "s2"))
    assert one == again
    assert {r["problem_id"]: r["teacher"] for r in one} != {r["problem_id"]: r["teacher"] for r in two}
    assert Counter(r["teacher"] for r in one) == Counter(r["teacher"] for r in two) == {"a": 150, "b": 150}


@pytest.mark.parametrize("weights", [{"a": 1, "b": 2, "c": 3}, {"a": 0.2, "b": 0.8}, {"c": 5},
                                     {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.25, "e": 0.15}])
def test_n_sources(tmp_path, weights):
    problems = problems_of(101)
    table = {t: {p.id: ["ok"] for p in problems} for t in weights}
    run = make_run(tmp_path, table, problems)
    stats = build_mix(spec(weights=weights), run, progress=False)
    rows = rows_of(tmp_path)
    check_rows(rows, table, problems)
    assert len(rows) == 101 and within_one_row(stats.rows_per_source, weights, 101)
    assert stats.rows_per_source == Counter(r["teacher"] for r in rows)


def test_per_problem_several(big):
    run, table, problems = big
    stats = build_mix(spec(weights={"a": 1, "b": 3}, per_problem=2), run, progress=False)
    rows = rows_of(run.root)
    check_rows(rows, table, problems, per_problem=2)
    assert stats.rows == 600 and stats.problems == 300 and stats.rows_per_source == {"a": 150, "b": 450}
    with pytest.raises(ValueError, match="no problem has 3 eligible response"): build_mix(spec(per_problem=3), run, progress=False)


def test_builtin_mix_long(tmp_path):
    problems = problems_of(50)
    table = {"qwq": {p.id: ["wrong", "ok"] for p in problems}, "qwen": {p.id: ["ok" if i < 40 else "wrong"] for i, p in enumerate(problems)}}
    run = make_run(tmp_path, table, problems)
    roles = {"long": "qwq", "short": "qwen"}
    stats = build_mix(builtin_mix("mix-long", roles), run, progress=False)
    assert stats.rows_per_source == {"qwq": 8, "qwen": 32} and stats.dropped == {"qwq:incorrect": 50, "qwen:incorrect": 10}
    check_rows(rows_of(tmp_path, "mix-long"), table, problems)
    long = build_mix(builtin_mix("long", roles), run, progress=False)     # paired: only the problems qwen solved too
    assert long.rows_per_source == {"qwq": 40} and long.pool.hash == stats.pool.hash
    assert long.dropped == {"qwq:incorrect": 50, "qwq:unpaired": 10, "qwen:incorrect": 10}
    own = build_mix(builtin_mix("long", {"long": "qwq"}, paired=False), run, progress=False)
    assert own.rows_per_source == {"qwq": 50} and (own.pool.problems, own.pool.paired_with) == (50, [])


# ---- clear errors --------------------------------------------------------------------------------------------------

def test_empty_and_single_source_pools(tmp_path):
    problems = problems_of(10)
    table = {"a": {p.id: ["ok" if i < 5 else "wrong"] for i, p in enumerate(problems)},
             "b": {p.id: ["ok" if i >= 5 else "wrong"] for i, p in enumerate(problems)},
             "c": {p.id: ["wrong", "trunc"] for p in problems}}
    run = make_run(tmp_path, table, problems)
    with pytest.raises(ValueError, match=r"mix 'm': no problem has 1 eligible response\(s\) from every source; "
                                         r"eligible problems per source: a 5, b 5"):
        build_mix(spec(), run, progress=False)
    # only one source has anything: both pools say which source is empty, and why
    for pool in ("intersection", "union"):
        with pytest.raises(ValueError, match=r"mix 'm': no eligible response from c \(20 traces: 10 incorrect, 10 truncated\)"):
            build_mix(spec(weights={"a": 1, "c": 1}, pool=pool), run, progress=False)
    # a source emptied by the budget or decontamination is caught the same way; assign() alone says it too
    with pytest.raises(ValueError, match="no eligible response from c"):
        assign({"a": {"p": [0]}, "c": {}}, spec(weights={"a": 1, "c": 1}, pool="union"))
    with pytest.raises(ValueError, match="eligible problems per source: a 1, c 0"):
        assign({"a": {"p": [0]}, "c": {}}, spec(weights={"a": 1, "c": 1}))
    assert not (tmp_path/"mixes"/"m").exists()


def test_spec_errors(tmp_path):
    problems = problems_of(3)
    run = make_run(tmp_path, {"a": {p.id: ["ok"] for p in problems}}, problems)
    with pytest.raises(FileNotFoundError, match="no traces for teacher 'nobody'"):
        build_mix(spec(weights={"a": 1, "nobody": 1}), run, progress=False)
    with pytest.raises(KeyError, match="unknown built-in mix 'mix-huge'; built-in: long, short"):
        builtin_mix("mix-huge", {"long": "a"})
    with pytest.raises(KeyError, match=r"needs a teacher for role\(s\) \['short'\]"): builtin_mix("mix-long", {"long": "a"})
    with pytest.raises(ValidationError, match="a teacher appears twice in mix 'm'"):
        MixSpec(name="m", sources=[dict(teacher="a", weight=1), dict(teacher="a", weight=2)])
    for w in (0, -1, 0.0):
        with pytest.raises(ValidationError, match="greater than 0"): spec(weights={"a": w, "b": 1})
    with pytest.raises(ValidationError, match="at least 1 item"): MixSpec(name="m", sources=[])
    with pytest.raises(ValidationError, match="max_tokens needs the student's tokenizer"): spec(max_tokens=10)
    with pytest.raises(ValidationError, match="mix name"): spec(name="../escape")
    with pytest.raises(ValidationError, match=r"pool_with: \['a'\] already a source"): spec(pool_with=["a"])
    with pytest.raises(FileNotFoundError, match="no traces for teacher 'nobody'"):
        build_mix(spec(weights={"a": 1}, pool_with=["nobody"]), run, progress=False)
    with pytest.raises(KeyError, match="not among the run's problems"):
        build_mix(spec(weights={"a": 1}), run, problems=problems[:2], progress=False)


# ---- filters --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("correct_only,drop_truncated,expect,dropped", [
    (True, True, {"0"}, {"a:incorrect": 3, "a:truncated": 1}),
    (False, True, {"0", "1", "3"}, {"a:truncated": 2}),
    (True, False, {"0", "2"}, {"a:incorrect": 3}),
    (False, False, {"0", "1", "2", "3", "4"}, {})])
def test_filters(tmp_path, correct_only, drop_truncated, expect, dropped):
    problems = problems_of(5)
    sts = ["ok", "wrong", "trunc", "ungraded", "trunc_wrong"]
    run = make_run(tmp_path, {"a": {p.id: [s] for p, s in zip(problems, sts)}}, problems)
    s = MixSpec(name="m", sources=[dict(teacher="a", weight=1, correct_only=correct_only, drop_truncated=drop_truncated)])
    stats = build_mix(s, run, progress=False)
    assert {r["problem_id"][-1] for r in rows_of(tmp_path)} == expect
    assert stats.dropped == dropped


# ---- over-long responses, measured with a real tokenizer -------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from mixcot_nb.testing import build_tiny_chat_model
    return build_tiny_chat_model(tmp_path_factory.mktemp("tok")/"tiny", train_steps=0)


def long_text(t, p, i):
    n = int(p[-2:]) % 7 + (3 if t == "a" else 0)                             # a's responses run longer
    return f"{t} on {p}: " + "We expand the square and collect terms. " * (n * 12) + "Final Answer: \\boxed{1}"


def token_count(tok, problem, text):
    msgs = [{"role": "user", "content": render_prompt(PAPER_PROMPT, problem)}, {"role": "assistant", "content": text}]
    return len(tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"])


@pytest.fixture()
def long_run(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    problems = problems_of(40)
    table = {t: {p.id: ["ok", "wrong"] for p in problems} for t in ("a", "b")}
    run = make_run(tmp_path, table, problems, texts=long_text)
    lengths = {(t, p.id): token_count(tok, p.problem, long_text(t, p.id, 0)) for t in table for p in problems}
    budget = sorted(lengths.values())[len(lengths) // 2]
    return run, problems, lengths, budget


def test_overlength_drop(long_run, tokenizer_dir):
    run, problems, lengths, budget = long_run
    stats = build_mix(spec(tokenizer=str(tokenizer_dir), max_tokens=budget), run, progress=False)
    over = Counter(t for (t, _), n in lengths.items() if n > budget)
    assert over["a"] > over["b"] > 0
    assert stats.dropped == {"a:incorrect": 40, "b:incorrect": 40, "a:overlength": over["a"], "b:overlength": over["b"]}
    rows = rows_of(run.root)
    pool = {p.id for p in problems if lengths[("a", p.id)] <= budget and lengths[("b", p.id)] <= budget}
    assert {r["problem_id"] for r in rows} == pool and len(rows) == len(pool)    # shares exact after dropping
    assert within_one_row(Counter(r["teacher"] for r in rows), {"a": 1, "b": 1}, len(pool))
    assert all(r["tokens"] == lengths[(r["teacher"], r["problem_id"])] <= budget for r in rows)   # never truncated
    assert all(r["messages"][1]["content"] == long_text(r["teacher"], r["problem_id"], 0) for r in rows)
    assert stats.length_unit == "tokens" and stats.length_overall["p95"] <= budget


def test_overlength_keep_and_error(long_run, tokenizer_dir):
    run, problems, lengths, budget = long_run
    stats = build_mix(spec(tokenizer=str(tokenizer_dir), max_tokens=budget, overlength="keep"), run, progress=False)
    rows = rows_of(run.root)
    assert len(rows) == 40 and "a:overlength" not in stats.dropped
    assert max(r["tokens"] for r in rows) > budget
    assert all(r["tokens"] == lengths[(r["teacher"], r["problem_id"])] for r in rows)
    with pytest.raises(ValueError, match=rf"response to syn/\d+ has \d+ tokens > max_tokens {budget}"):
        build_mix(spec("e", tokenizer=str(tokenizer_dir), max_tokens=budget, overlength="error"), run, progress=False)
    assert not (run.root/"mixes"/"e").exists()


def test_paired_pool_after_the_budget(long_run, tokenizer_dir):
    "A pool teacher's over-long responses leave the pool as its own would: paired arms share one pool under any budget."
    run, problems, lengths, budget = long_run
    kw = dict(tokenizer=str(tokenizer_dir), max_tokens=budget)
    b = build_mix(spec("b", weights={"b": 1}, pool_with=["a"], **kw), run, progress=False)   # a's run longer: it bounds b
    both = build_mix(spec("ab", **kw), run, progress=False)
    pool = {p.id for p in problems if lengths[("a", p.id)] <= budget and lengths[("b", p.id)] <= budget}
    assert {r["problem_id"] for r in rows_of(run.root, "b")} == pool and b.pool.problems == both.pool.problems == len(pool)
    assert b.pool.hash == both.pool.hash and b.pool.teachers == ["b", "a"]
    assert b.dropped["b:unpaired"] == sum(lengths[("b", p.id)] <= budget for p in problems) - len(pool) > 0


def test_old_overlength_key_reads_with_a_warning(tmp_path):
    path = tmp_path/"mix.yaml"
    path.write_text("run_dir: runs/x\nroles: {long: a, short: b}\narms: [long]\nover_length: keep\n")
    from mixcot_nb.core import load_recipe
    from mixcot_nb.mixing import MixRecipe
    with pytest.warns(FutureWarning, match="`over_length` is renamed `overlength`"): r = load_recipe(path, MixRecipe)
    assert r.specs()[0].overlength == "keep"
    path.write_text("run_dir: runs/x\narms: [long]\nover_length: keep\noverlength: drop\n")
    with pytest.raises(Exception, match="over_length: renamed to overlength"): load_recipe(path, MixRecipe)


def test_tokenizer_without_budget_measures_only(long_run, tokenizer_dir):
    run, problems, lengths, budget = long_run
    stats = build_mix(spec(tokenizer=str(tokenizer_dir)), run, progress=False)
    rows = rows_of(run.root)
    assert len(rows) == 40 and stats.dropped == {"a:incorrect": 40, "b:incorrect": 40}
    assert stats.length_unit == "tokens" and all(r["tokens"] == lengths[(r["teacher"], r["problem_id"])] for r in rows)


# ---- decontamination ------------------------------------------------------------------------------------------------

def test_decontamination_against_math500(tmp_path, data):
    target = load_problems("math500", path=data/"math500")[7]
    planted = Problem(id="syn/planted", dataset="syn", problem="Here is an exercise. " + target.problem, answer=target.answer)
    problems = problems_of(20) + [planted]
    table = {t: {p.id: ["ok"] for p in problems} for t in ("a", "b")}
    run = make_run(tmp_path, table, problems)
    plain = build_mix(spec("plain"), run, progress=False)
    assert "syn/planted" in {r["problem_id"] for r in rows_of(tmp_path, "plain")} and plain.rows == 21
    stats = build_mix(spec(decontaminate=["math500"], eval_data={"math500": str(data/"math500")}), run, progress=False)
    assert "syn/planted" not in {r["problem_id"] for r in rows_of(tmp_path)}
    assert stats.rows == 20 and stats.decontaminated_problems == 1
    assert stats.dropped == {"a:decontaminated": 1, "b:decontaminated": 1}


# ---- the store read path -------------------------------------------------------------------------------------------

def test_torn_last_line_is_recovered(tmp_path):
    problems = problems_of(6)
    run = make_run(tmp_path, {"a": {p.id: ["ok"] for p in problems[:5]}}, problems)
    f = TraceStore(run).file("a")
    with open(f, "a") as fh: fh.write('{"teacher": "a", "problem_id": "syn/0005", "sample_idx": 0, "text": "cut off he')
    before = f.read_bytes()
    t = scan_traces(TraceStore(run), "a")
    assert t["problem_id"].to_pylist() == [p.id for p in problems[:5]] and t["row"].to_pylist() == list(range(5))
    assert fetch_texts(TraceStore(run), "a", t.take([4, 0, 2])).to_pylist() == [text_of("a", problems[i].id, 0) for i in (4, 0, 2)]
    stats = build_mix(spec(weights={"a": 1}), run, progress=False)
    assert stats.rows == 5 and f.read_bytes() == before                  # mixing only reads the store


def test_a_store_from_before_trace_response_mixes(tmp_path):
    "Lines that name the output `text` (stores written before `Trace.response`) and new ones in one file: each text found."
    problems = problems_of(4)
    run = make_run(tmp_path, {"a": {p.id: ["ok"] for p in problems}}, problems)
    f = TraceStore(run).file("a")
    lines = [json.loads(l) for l in f.read_text().splitlines()]
    old = [{("text" if k == "response" else k): v for k, v in d.items()} for d in lines[:2]]
    f.write_text("".join(json.dumps(d) + "\n" for d in old + lines[2:]))
    t = scan_traces(TraceStore(run), "a")
    assert fetch_texts(TraceStore(run), "a", t.take([3, 0, 1, 2])).to_pylist() == [text_of("a", problems[i].id, 0) for i in (3, 0, 1, 2)]
    build_mix(spec(weights={"a": 1}), run, progress=False)
    assert all(r["messages"][1]["content"] == text_of("a", r["problem_id"], 0) for r in rows_of(tmp_path))
    f.write_text(f.read_text().replace('"sample_idx": 0', '"sample_idx": "0"', 1))   # Arrow refuses it: the strict reader reads
    t = scan_traces(TraceStore(run), "a")
    assert fetch_texts(TraceStore(run), "a", t).to_pylist() == [text_of("a", p.id, 0) for p in problems]


def test_malformed_middle_line_names_file_and_line(tmp_path):
    problems = problems_of(3)
    run = make_run(tmp_path, {"a": {p.id: ["ok"] for p in problems}}, problems)
    f = TraceStore(run).file("a")
    lines = f.read_text().splitlines(keepends=True)
    f.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    with pytest.raises(JsonlError, match=rf"{f}:2: invalid JSON"): scan_traces(TraceStore(run), "a")
    with pytest.raises(JsonlError, match=rf"{f}:2: invalid JSON"): build_mix(spec(weights={"a": 1}), run, progress=False)
    bad = json.loads(lines[1]) | {"sample_idx": "second"}
    f.write_text(lines[0] + json.dumps(bad) + "\n" + lines[2])
    with pytest.raises(JsonlError, match=rf"{f}:2: field 'sample_idx'"): scan_traces(TraceStore(run), "a")


def test_blank_lines_do_not_shift_rows(tmp_path):
    problems = problems_of(4)
    run = make_run(tmp_path, {"a": {p.id: ["ok"] for p in problems}}, problems)
    f = TraceStore(run).file("a")
    lines = f.read_text().splitlines(keepends=True)
    f.write_text("\n" + lines[0] + "   \n\n" + "".join(lines[1:]))
    build_mix(spec(weights={"a": 1}), run, progress=False)
    assert all(r["messages"][1]["content"] == text_of("a", r["problem_id"], 0) for r in rows_of(tmp_path))


def test_fetch_in_any_order_and_batches(tmp_path):
    problems = problems_of(30)
    run = make_run(tmp_path, {"a": {p.id: ["ok", "wrong"] for p in problems}}, problems)
    t = scan_traces(TraceStore(run), "a")
    order = list(range(len(t)))[::-1][::3] + [0, 5]
    expect = [text_of("a", t["problem_id"][i].as_py(), t["sample_idx"][i].as_py()) for i in order]
    assert fetch_texts(TraceStore(run), "a", t.take(order)).to_pylist() == expect
    batches = list(iter_texts(TraceStore(run), "a", t.take(order), batch_bytes=300))
    assert len(batches) > 3 and [x for b in batches for x in b.to_pylist()] == expect


def test_fetch_checks_keys_and_falls_back(tmp_path):
    problems = problems_of(8)
    run = make_run(tmp_path, {"a": {p.id: ["ok"] for p in problems}}, problems)
    store = TraceStore(run)
    t = scan_traces(store, "a")
    expect = [text_of("a", p.id, 0) for p in problems]
    shifted = t.set_column(t.schema.get_field_index("offset"), "offset", pa.array([0] + t["offset"].to_pylist()[:-1]))
    assert fetch_texts(store, "a", shifted).to_pylist() == expect          # wrong offsets: caught, read whole instead
    unknown = t.set_column(t.schema.get_field_index("offset"), "offset", pa.array([-1] * len(t)))
    assert fetch_texts(store, "a", unknown).to_pylist() == expect
    f = store.file("a")                                                     # the store changes under the mix
    f.write_text("".join(sorted(f.read_text().splitlines(keepends=True), reverse=True)))
    with pytest.raises(RuntimeError, match="the trace store changed while mixing"): fetch_texts(store, "a", t)


def test_odd_whitespace_lines(tmp_path):
    "Lines of form feeds or vertical tabs: Arrow refuses them, the strict reader skips them, rows stay aligned."
    problems = problems_of(5)
    run = make_run(tmp_path, {"a": {p.id: ["ok"] for p in problems}}, problems)
    f = TraceStore(run).file("a")
    lines = f.read_text().splitlines(keepends=True)
    f.write_text(lines[0] + "\x0c\n" + lines[1] + " \x0b \n" + "".join(lines[2:]))
    stats = build_mix(spec(weights={"a": 1}), run, progress=False)
    assert stats.rows == 5
    assert all(r["messages"][1]["content"] == text_of("a", r["problem_id"], 0) for r in rows_of(tmp_path))


def test_duplicate_keys_across_shards_count_once(tmp_path):
    problems = problems_of(3)
    a, b, c = (p.id for p in problems)
    run, store = RunDir(tmp_path), TraceStore(tmp_path)
    write_jsonl(run.root/"problems"/"x.jsonl", problems)
    tr = lambda p, text: Trace(teacher="t", problem_id=p, sample_idx=0, response=text, correct=True, finish_reason="stop")
    store.append([tr(a, "first A"), tr(b, "B")], shard=(0, 2))
    store.append([tr(a, "second A"), tr(c, "C")], shard=(1, 2))
    t = scan_traces(store, "t")
    assert sorted(t["problem_id"].to_pylist()) == [a, b, c]
    stats = build_mix(spec(weights={"t": 1}), run, progress=False)
    assert stats.rows == 3 and stats.eligible_problems_per_source == {"t": 3}
    got = {r["problem_id"]: r["messages"][1]["content"] for r in rows_of(tmp_path)}
    assert got == {a: "first A", b: "B", c: "C"} == {x.problem_id: x.response for x in store.read("t")}


# ---- the real response files ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_run(tmp_path_factory, data):
    run = RunDir(tmp_path_factory.mktemp("real"))
    math500 = load_problems("math500", path=data/"math500")
    write_jsonl(run.root/"problems"/"math500.jsonl", math500)
    for name, f in [("short", "shortcot_qwen25_14b_instruct/math500.jsonl"), ("long", "longcot_style_math500/math500_even.jsonl")]:
        import_traces(TeacherSpec(name=name, import_from=dict(path=str(data/f), problem_field="question", response_field="code")),
                      math500, TraceStore(run), progress=False)
    return run, math500


def test_real_mix_round_trips(real_run):
    run, math500 = real_run
    stats = build_mix(builtin_mix("mix-long", {"long": "long", "short": "short"}), run, progress=False)
    store = TraceStore(run)
    traces = {t: {x.key: x for x in store.read(t)} for t in ("long", "short")}
    correct = {t: {k[1] for k, x in v.items() if x.correct} for t, v in traces.items()}
    pool = correct["long"] & correct["short"]
    assert len(pool) > 50 and stats.rows == len(pool)

    ds = load_mix(run.mix("mix-long"))
    assert set(ds.column_names) >= {"messages", "problem_id", "teacher", "sample_idx"}
    got = ds.to_list()
    by_id = {p.id: p for p in math500}
    expect = [dict(messages=[{"role": "user", "content": render_prompt(PAPER_PROMPT, by_id[r["problem_id"]].problem)},
                             {"role": "assistant", "content": traces[r["teacher"]][(r["teacher"], r["problem_id"], r["sample_idx"])].response}],
                   problem_id=r["problem_id"], teacher=r["teacher"], sample_idx=r["sample_idx"], tokens=None) for r in got]
    assert got == expect
    assert all(traces[r["teacher"]][(r["teacher"], r["problem_id"], r["sample_idx"])].correct for r in got)
    assert len({r["problem_id"] for r in got}) == len(got) and {r["problem_id"] for r in got} == pool
    assert Counter(r["teacher"] for r in got) == stats.rows_per_source
    assert within_one_row(stats.rows_per_source, {"long": 0.2, "short": 0.8}, len(pool))
    assert (run.mix("mix-long")/"lengths.png").stat().st_size > 1000
    assert json.loads((run.mix("mix-long")/"stats.json").read_text()) == stats.model_dump(mode="json", exclude_none=True)
    assert MixSummary.model_validate_json((run.mix("mix-long")/"stats.json").read_text()) == stats

    alpaca = read_jsonl(export_alpaca(run.mix("mix-long"), run.root/"mix-long.alpaca.jsonl"))
    assert alpaca == [{"problem": r["messages"][0]["content"], "solution": r["messages"][1]["content"]} for r in got]
    from datasets import load_dataset
    again = load_dataset("json", data_files=str(run.root/"mix-long.alpaca.jsonl"), split="train",
                         cache_dir=str(run.root/"hf-cache"))
    assert again.column_names == ["problem", "solution"] and again.to_list() == alpaca


def test_summary_of_an_old_mix_reads(tmp_path):
    "A `stats.json` from before the pool and eligible counts were recorded validates; written back, no `pool` key appears."
    old = {"name": "m", "rows": 2, "problems": 2, "weights": {"a": 1.0}, "rows_per_source": {"a": 2}, "share_per_source": {"a": 1.0},
           "length_unit": "chars", "length_per_source": {"a": {"n": 2, "mean": 3.0, "median": 3.0, "p95": 4, "max": 4}},
           "length_overall": {"n": 2, "mean": 3.0, "median": 3.0, "p95": 4, "max": 4}, "dropped": {}, "decontaminated_problems": 0}
    s = MixSummary.model_validate(old)
    assert s.pool is None and s.eligible_problems_per_source == {}
    assert json.loads(s.save(tmp_path/"stats.json").read_text()) == old | {"eligible_problems_per_source": {}}
    assert repr(s) == "MixSummary('m': 2 rows (a 2) over 2 problems, median 3.0 chars, 0 rows dropped)"
    with pytest.raises(ValueError, match="rows_per_source"): MixSummary.model_validate(old | {"rows_per_source": {"a": "two"}})


def test_paired_arms_share_one_pool_real(real_run, tmp_path):
    "Long, Short and Mix-Long on the real responses: one pool, the problems both teachers solved; `paired: false` keeps each's own."
    run, math500 = real_run
    store = TraceStore(run)
    solved = {t: {x.problem_id for x in store.read(t) if x.correct and x.finish_reason != "length"} for t in ("long", "short")}
    pool = solved["long"] & solved["short"]
    recipe = tmp_path/"mix.yaml"
    recipe.write_text(f"run_dir: {run.root}\nroles: {{long: long, short: short}}\narms: [long, short, mix-long]\n")
    out = subprocess.run([str(Path(sys.executable).parent/"mixcot"), "mix", str(recipe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for arm in ("long", "short", "mix-long"):
        stats = json.loads((run.mix(arm)/"stats.json").read_text())
        assert {r["problem_id"] for r in load_mix(run.mix(arm)).to_list()} == pool and stats["rows"] == stats["pool"]["problems"] == len(pool)
        assert stats["pool"]["eligible_problems"] == {t: len(solved[t]) for t in ("long", "short")}
        assert f"{arm}: {len(pool)} rows" in out.stdout and f"from a pool of {len(pool)} problems" in out.stdout
    assert "long: " in out.stdout and "paired with short" in out.stdout
    assert len({json.loads((run.mix(a)/"stats.json").read_text())["pool"]["hash"] for a in ("long", "short", "mix-long")}) == 1
    recipe.write_text(recipe.read_text() + "paired: false\n")
    out = subprocess.run([str(Path(sys.executable).parent/"mixcot"), "mix", str(recipe), "--only", "long,short"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for arm in ("long", "short"):
        assert {r["problem_id"] for r in load_mix(run.mix(arm)).to_list()} == solved[arm]
        assert f"{arm}: {len(solved[arm])} rows" in out.stdout
