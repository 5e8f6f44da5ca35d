"Evaluation: a real tiny model through the transformers and OpenAI-compatible engines, SIGKILL and resume, real response files."
import json, os, signal, subprocess, sys, textwrap, time
from collections import Counter
from pathlib import Path

import pytest

from mixcot_nb.backends import TransformersEngine, register_engine
from mixcot_nb.core import PAPER_BENCHMARKS, PAPER_PROMPT, RecipeError, paper_average, read_jsonl, render_prompt
from mixcot_nb.core import BenchmarkSummary, EvalSummary
from mixcot_nb.evaluation import (EvalRecipe, count_parameters, grade_responses,
                                  read_records, run_eval, run_evaluation, summarise_records, unjudged)
from mixcot_nb.problems import load_problems
from math500_check import MATH500_14B, check_math500_14b

ROOT = Path(__file__).resolve().parent.parent


def _recipe(model, data_dir, out, **kw):
    base = dict(model=str(model), engine={"engine": "transformers", "batch_size": 4}, benchmarks=["math500"],
                data={"math500": str(data_dir/"math500")}, limit=5, max_new_tokens=12, output_dir=str(out))
    return EvalRecipe(**{**base, **kw})


def _check_consistent(out: Path, bench: str, n_problems: int, n: int):
    recs = read_records(out/f"{bench}.jsonl")
    raw = read_jsonl(out/f"{bench}.jsonl")
    assert len(raw) == len(recs) == n_problems * n, "every item exactly once, no duplicate lines"
    assert Counter(r.sample_idx for r in recs) == {i: n_problems for i in range(n)}
    summary = json.loads((out/"summary.json").read_text())["benchmarks"][bench]
    assert summary["n"] == n_problems * n and summary["problems"] == n_problems and summary["complete"]
    assert summary["correct"] == sum(r.correct for r in recs)
    assert summary["no_answer_rate"] == sum(r.answer is None for r in recs) / len(recs)
    assert summary["truncation_rate"] == sum(r.finish_reason == "length" for r in recs) / len(recs)
    assert summary["completion_tokens"]["mean"] == sum(r.completion_tokens for r in recs) / len(recs)
    for r in recs:
        assert r.prompt_tokens > 0 and 0 < r.completion_tokens <= 12 and r.finish_reason in ("stop", "length")
        assert (r.finish_reason == "length") == (r.completion_tokens == 12) or r.finish_reason == "stop"
        assert r.correct == (r.decided_by in ("exact", "normalised", "math_verify", "judge") and r.answer is not None)
    return recs, summary


def test_tiny_model_records_and_summary(tiny_model, data, tmp_path):
    problems = load_problems("math500", path=data/"math500", limit=5)
    res = run_evaluation(_recipe(tiny_model, data, tmp_path/"e", n=2, temperature=1.0), progress=False)
    recs, summary = _check_consistent(tmp_path/"e", "math500", 5, 2)
    assert isinstance(res, EvalSummary) and res.folder == tmp_path/"e" and res.benchmarks["math500"].model_dump(mode="json") == summary
    assert {r.problem_id for r in recs} == {p.id for p in problems}
    assert {r.gold for r in recs} == {p.answer for p in problems}
    assert summary["ci_method"] == "bootstrap_problems" and set(summary["pass_at_k"]) == {"1", "2"}
    assert summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1]
    whole = json.loads((tmp_path/"e"/"summary.json").read_text())
    assert whole["num_parameters"] == count_parameters(tiny_model) > 10_000
    assert whole["paper_average"] is None          # math500 alone is not the paper's five
    # the trained tiny model ends its turns: some responses stop before the limit
    assert any(r.finish_reason == "stop" for r in recs)


def test_greedy_gsm8k_bare_prompt_and_batching_agree(tiny_model, data, tmp_path):
    "Greedy records are the same batched and one at a time; GSM8K gets the bare question."
    kw = dict(benchmarks=["gsm8k"], data={"gsm8k": str(data/"gsm8k")}, limit=3)
    a = run_evaluation(_recipe(tiny_model, data, tmp_path/"a", **kw), progress=False)
    b = run_evaluation(_recipe(tiny_model, data, tmp_path/"b", engine={"engine": "transformers", "batch_size": 1}, **kw), progress=False)
    ra, rb = read_records(tmp_path/"a"/"gsm8k.jsonl"), read_records(tmp_path/"b"/"gsm8k.jsonl")
    assert [r.response for r in ra] == [r.response for r in rb] and a.benchmarks["gsm8k"].accuracy == b.benchmarks["gsm8k"].accuracy
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    q = load_problems("gsm8k", path=data/"gsm8k", limit=1)[0].problem
    bare = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    assert ra[0].prompt_tokens == len(tok(bare, add_special_tokens=False).input_ids)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from mixcot_nb.evaluation import EvalRecipe, run_evaluation
    run_evaluation(EvalRecipe.model_validate_json(sys.argv[1]), progress=False)
""")


def test_sigkill_mid_run_then_resume(tiny_model, data, tmp_path):
    "A real run killed with SIGKILL after its first appends resumes: every item evaluated exactly once, old lines kept."
    out = tmp_path/"killed"
    recipe = _recipe(tiny_model, data, out, limit=12, max_new_tokens=12,   # one engine call, streamed batch by batch
                     engine={"engine": "transformers", "batch_size": 1})
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, recipe.model_dump_json()], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    f, deadline = out/"math500.jsonl", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if f.exists() and f.read_bytes().count(b"\n") >= 2: break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    before = f.read_bytes()
    n_before = before.count(b"\n")
    assert 2 <= n_before < 12, n_before
    run_evaluation(recipe, progress=False)
    after = f.read_bytes()
    assert after.startswith(before[:before.rfind(b"\n") + 1]), "lines written before the kill are kept as they were"
    _check_consistent(out, "math500", 12, 1)
    # a third run has nothing to do: the file does not change
    run_evaluation(recipe, progress=False)
    assert f.read_bytes() == after


def test_torn_last_line_is_recovered(tiny_model, data, tmp_path):
    out = tmp_path/"torn"
    recipe = _recipe(tiny_model, data, out, limit=3)
    run_evaluation(recipe, progress=False)
    f = out/"math500.jsonl"
    lines = f.read_bytes().splitlines(keepends=True)
    f.write_bytes(b"".join(lines[:2]) + lines[2][:40])         # a crash mid-write of the last line
    run_evaluation(recipe, progress=False)
    _check_consistent(out, "math500", 3, 1)


def test_refuses_to_mix_settings_and_bad_recipes(tiny_model, data, tmp_path):
    recipe = _recipe(tiny_model, data, tmp_path/"e", limit=1)
    run_evaluation(recipe, progress=False)
    with pytest.raises(RecipeError, match="different max_new_tokens"):
        run_evaluation(recipe.model_copy(update=dict(max_new_tokens=13)), progress=False)
    with pytest.raises(ValueError, match="unknown benchmark"):
        EvalRecipe(model="m", benchmarks=["math500", "aime"], output_dir="o")
    assert EvalRecipe(model="m", output_dir="o").benchmarks == PAPER_BENCHMARKS


def test_openai_engine_against_a_real_server(data, tmp_path):
    "The OpenAI-compatible path end to end: a chat-completions server on 127.0.0.1 that answers with reference solutions."
    sys.path.insert(0, str(ROOT/"tests"))
    from teacher_server import TeacherServer
    problems = load_problems("math500", path=data/"math500", limit=6)
    server = TeacherServer(problems, error_rate=0.5)
    try:
        recipe = EvalRecipe(model="teacher", engine={"engine": "openai", "base_urls": [server.url], "max_concurrency": 4},
                            benchmarks=["math500"], data={"math500": str(data/"math500")}, limit=6, n=2, temperature=0.7,
                            output_dir=str(tmp_path/"api"))
        res = run_evaluation(recipe, progress=False).benchmarks["math500"]
    finally:
        server.close()
    recs = read_records(tmp_path/"api"/"math500.jsonl")
    want = sum(server.correct(p.problem, 42, j) for p in problems for j in range(2))
    assert len(recs) == 12 and res.correct == want and 0 < want < 12
    assert res.pass_at_k["2"] >= res.pass_at_k["1"] == res.accuracy


def test_grade_real_harness_file(data, tmp_path):
    "Qwen2.5-14B-Instruct's MATH500 responses: their harness says 80.4; we differ on four known responses."
    s = grade_responses(data/MATH500_14B, "math500", tmp_path/"imp", data=data/"math500")
    check_math500_14b(data, [(r.gold, r.answer, r.correct) for r in read_records(tmp_path/"imp"/"math500.jsonl")])
    assert isinstance(s, BenchmarkSummary) and s.source == str(data/MATH500_14B)
    assert round(100 * s.accuracy, 1) == 80.8 and s.ci95[0] < 0.804 < s.ci95[1]
    assert s.n == 500 and s.complete and s.truncation_rate is None
    assert json.loads((tmp_path/"imp"/"summary.json").read_text())["benchmarks"]["math500"] == s.model_dump(mode="json")
    # the multi-sample file: 100 problems x 8 responses, pass@k over samples
    s8 = grade_responses(data/"shortcot_qwen25_math_rm_maj_example"/"math_cot_100.jsonl", "math_test", tmp_path/"imp8",
                         data=data/"math_hendrycks")
    assert s8.n == 800 and s8.samples_per_problem == 8 and s8.ci_method == "bootstrap_problems"
    assert s8.pass_at_k["8"] >= s8.pass_at_k["4"] >= s8.pass_at_k["1"] == pytest.approx(s8.accuracy)
    assert not s8.complete                     # 100 of the 5,000 MATH test problems


def test_paper_average_and_statistics():
    assert paper_average(dict(math_test=64.7, amc23=45.0, gsm8k=81.4, olympiadbench=28.6, aime24=10.0)) == pytest.approx(45.94)
    assert summarise_records([]).n == 0
    s = summarise_records([])
    assert paper_average({b: s for b in PAPER_BENCHMARKS}) == 0.0


def test_openai_concurrency_stays_full_across_old_chunk_boundaries(data, tmp_path):
    """Real HTTP, one slow request in every 8 problems: streamed, `max_concurrency` requests stay in flight until the
    queue runs dry; cut into chunks of 8 (the old way), each chunk's slow request leaves the other slots idle."""
    sys.path.insert(0, str(ROOT/"tests"))
    from fault_server import FaultServer
    problems = load_problems("math500", path=data/"math500", limit=40)
    faults = {render_prompt(PAPER_PROMPT, p.problem): ["slow:2.5"] for p in problems[3::8]}

    def utilisation(reqs, k):
        "Mean requests in flight over `k`, between the first and the last request's start."
        a, b = min(r.t_start for r in reqs), max(r.t_start for r in reqs)
        ts = [a + i * 0.01 for i in range(int((b - a) / 0.01))]
        return sum(sum(r.t_start <= t < r.t_end for r in reqs) for t in ts) / (k * len(ts))

    shares = {}
    for chunk in (None, 8):
        with FaultServer(latency=0.5, faults=faults) as srv:
            out = tmp_path/f"chunk-{chunk}"
            recipe = EvalRecipe(model="fault-model", engine={"engine": "openai", "base_urls": srv.base_urls, "max_concurrency": 4},
                                benchmarks=["math500"], data={"math500": str(data/"math500")}, limit=40, max_new_tokens=64,
                                output_dir=str(out), chunk_size=chunk)
            run_evaluation(recipe, progress=False)
            shares[chunk] = utilisation(srv.requests, 4)
            assert srv.max_in_flight == 4 and len(srv.requests) == 40
        recs = read_records(out/"math500.jsonl")
        assert sorted(r.problem_id for r in recs) == sorted(p.id for p in problems) == sorted({r.problem_id for r in recs})
    assert shares[None] > 0.8 and shares[8] < 0.7, shares   # ideally 1.0 and 0.6; slack for a loaded machine


def test_sampling_fields_pass_through_and_are_checked(tiny_model, data, tmp_path):
    "top_k=1 samples greedily at any temperature; a typo in `sampling` is refused with a hint; `sampling` is part of resuming."
    greedy = run_evaluation(_recipe(tiny_model, data, tmp_path/"g", limit=3), progress=False)
    topk = run_evaluation(_recipe(tiny_model, data, tmp_path/"k", limit=3, temperature=1.5, sampling={"top_k": 1}), progress=False)
    assert [r.response for r in read_records(tmp_path/"g"/"math500.jsonl")] == [r.response for r in read_records(tmp_path/"k"/"math500.jsonl")]
    assert greedy.benchmarks["math500"].n == topk.benchmarks["math500"].n == 3
    with pytest.raises(ValueError, match="did you mean: min_tokens"):
        _recipe(tiny_model, data, tmp_path/"x", sampling={"extra": {"min_token": 4}})
    with pytest.raises(ValueError, match="sampling.max_tokens: set `max_new_tokens`"):
        _recipe(tiny_model, data, tmp_path/"x", sampling={"max_tokens": 4})
    with pytest.raises(RecipeError, match="different sampling"):
        run_evaluation(_recipe(tiny_model, data, tmp_path/"k", limit=3, temperature=1.5, sampling={"top_k": 2}), progress=False)


# ---- the judge after the student's engine is released ------------------------------------------------------------

EVENTS, ENGINES_BUILT = [], []


@register_engine
class RecordingEngine(TransformersEngine):
    "The transformers engine, recording when it is built (with whether every engine built before was released) and closed."
    name = "recording"

    def __init__(self, model, **kw):
        EVENTS.append(("init", str(model), all(e.model is None for e in ENGINES_BUILT)))
        super().__init__(model, **kw)
        ENGINES_BUILT.append(self)

    def close(self):
        EVENTS.append(("close", self.model_name, None))
        super().close()


def _judged_recipe(tiny_model, judge_model, data, out):
    return _recipe(tiny_model, data, out, limit=8, max_new_tokens=64, engine={"engine": "recording", "batch_size": 4},
                   judge={"engine": "recording", "model": str(judge_model)})


def test_judge_loads_after_the_student_engine_is_released(tiny_model, judge_model, data, tmp_path):
    EVENTS.clear(); ENGINES_BUILT.clear()
    recipe = _judged_recipe(tiny_model, judge_model, data, tmp_path/"j")
    res = run_evaluation(recipe, progress=False)
    assert EVENTS == [("init", str(tiny_model), True), ("close", str(tiny_model), None),
                      ("init", str(judge_model), True), ("close", str(judge_model), None)]
    recs = read_records(tmp_path/"j"/"math500.jsonl")
    misses = [r for r in recs if r.answer is not None and r.decided_by not in ("exact", "normalised", "math_verify")]
    assert misses and unjudged(recs) == [] and all(r.judged for r in misses)
    assert any(r.decided_by == "judge" and r.correct for r in recs), "the judge's verdicts reach the records"
    assert res.benchmarks["math500"].decided_by.get("judge") == sum(r.decided_by == "judge" for r in recs)
    assert json.loads((tmp_path/"j"/"summary.json").read_text()) == res.model_dump(mode="json")
    # nothing left: a second run builds neither engine
    EVENTS.clear()
    assert run_evaluation(recipe, progress=False).benchmarks == res.benchmarks and EVENTS == []
    with pytest.raises(RecipeError, match="released first"):   # a caller's engine cannot be released before a local judge
        run_evaluation(recipe, progress=False, engine=ENGINES_BUILT[0])
    with pytest.warns(DeprecationWarning, match="use run_evaluation"):          # the old name still works, and says so
        assert run_eval(recipe, progress=False).benchmarks == res.benchmarks and EVENTS == []


KILL_AT_JUDGE = textwrap.dedent("""
    import os, signal, sys
    from mixcot_nb.backends import TransformersEngine, register_engine
    from mixcot_nb.evaluation import EvalRecipe, run_evaluation

    @register_engine
    class Recording(TransformersEngine):
        name = "recording"
        def __init__(self, model, **kw):
            if str(model) == sys.argv[2]: os.kill(os.getpid(), signal.SIGKILL)   # killed as the judge's engine starts
            super().__init__(model, **kw)

    run_evaluation(EvalRecipe.model_validate_json(sys.argv[1]), progress=False)
""")


def test_kill_between_generation_and_judging_resumes_with_the_judge_only(tiny_model, judge_model, data, tmp_path):
    out = tmp_path/"k"
    recipe = _judged_recipe(tiny_model, judge_model, data, out)
    proc = subprocess.run([sys.executable, "-c", KILL_AT_JUDGE, recipe.model_dump_json(), str(judge_model)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    before = read_records(out/"math500.jsonl")
    assert len(before) == 8 and unjudged(before) and not any(r.judged or r.decided_by == "judge" for r in before)
    EVENTS.clear(); ENGINES_BUILT.clear()
    run_evaluation(recipe, progress=False)
    assert EVENTS == [("init", str(judge_model), True), ("close", str(judge_model), None)], "the student is not loaded again"
    after = read_records(out/"math500.jsonl")
    assert [r.response for r in after] == [r.response for r in before] and unjudged(after) == []
    assert any(r.decided_by == "judge" for r in after)
    summary = json.loads((out/"summary.json").read_text())["benchmarks"]["math500"]
    assert summary["complete"] and summary["correct"] == sum(r.correct for r in after)


# ---- the extraction policy of the headline figure ----------------------------------------------------------------

def test_lenient_policy_flips_the_headline(data, tmp_path):
    "A tiny model trained to state its answer without a box: strict counts none, lenient all; each figure stays beside the other."
    from pydantic import ValidationError
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from mixcot_nb.backends import fit_replies
    from mixcot_nb.core import write_jsonl
    from mixcot_nb.testing import build_tiny_chat_model
    threes = [r for r in read_jsonl(data/"math500"/"test.jsonl") if r["answer"] == "3"][:4]
    (tmp_path/"math500").mkdir()
    write_jsonl(tmp_path/"math500"/"test.jsonl", threes)
    base = build_tiny_chat_model(tmp_path/"base", train_steps=0, data_file=data/"math_hendrycks"/"train.jsonl")
    tok, model = AutoTokenizer.from_pretrained(base), AutoModelForCausalLM.from_pretrained(base)
    fit_replies(model, tok, [(render_prompt(PAPER_PROMPT, r["problem"]), "So the answer is 3.") for r in threes], steps=40,
                batch_size=4, lr=5e-3)
    model.save_pretrained(tmp_path/"stater"); tok.save_pretrained(tmp_path/"stater")
    kw = dict(data={"math500": str(tmp_path/"math500")}, limit=4, max_new_tokens=16)
    strict = run_evaluation(_recipe(tmp_path/"stater", data, tmp_path/"s", **kw), progress=False).benchmarks["math500"]
    lenient = run_evaluation(_recipe(tmp_path/"stater", data, tmp_path/"l", policy="lenient", **kw), progress=False).benchmarks["math500"]
    recs = read_records(tmp_path/"l"/"math500.jsonl")
    assert [r.answer for r in recs] == ["3"] * 4 and all(r.policy == "lenient" and r.strict_correct is False for r in recs)
    assert (strict.policy, strict.accuracy, lenient.policy, lenient.accuracy) == ("strict", 0.0, "lenient", 1.0)
    assert strict.lenient_accuracy == lenient.accuracy and lenient.strict_accuracy == strict.accuracy
    assert json.loads((tmp_path/"l"/"summary.json").read_text())["benchmarks"]["math500"]["accuracy"] == 1.0
    with pytest.raises(RecipeError, match="different policy"):        # one folder, one policy
        run_evaluation(_recipe(tmp_path/"stater", data, tmp_path/"s", policy="lenient", **kw), progress=False)
    with pytest.raises(ValidationError, match="policy"):
        _recipe(tmp_path/"stater", data, tmp_path/"x", policy="loose")


def test_grading_behind_the_stream_neither_waits_nor_loses(tmp_path):
    """Real HTTP and real math-verify. The first reply's answer costs math-verify seconds; the replies that come 0.3 s
    later are appended before it, so the stream did not wait for the comparison. Then a fatal error mid-stream: every
    reply that came back before it is graded and kept, and the rerun asks only for the rest."""
    sys.path.insert(0, str(ROOT/"tests"))
    from fault_server import FaultServer
    rows = [{"problem": r"\boxed{(x+y-z)^{60}}", "answer": "(x+y+z)^{60}"}] + \
           [{"problem": rf"\boxed{{{i}}}", "answer": str(i)} for i in range(4)]
    (tmp_path/"data").mkdir()
    (tmp_path/"data"/"test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = lambda srv, out, concurrency: EvalRecipe(
        model="fault-model", output_dir=str(out), benchmarks=["math500"], data={"math500": str(tmp_path/"data")},
        engine={"engine": "openai", "base_urls": srv.base_urls, "max_concurrency": concurrency},
        prompt="{problem}", max_new_tokens=64)
    with FaultServer(faults={r["problem"]: ["slow:0.3"] for r in rows[1:]}) as srv:
        run_evaluation(recipe(srv, tmp_path/"behind", 8), progress=False)
    recs = read_records(tmp_path/"behind"/"math500.jsonl")
    assert [r.gold for r in recs][-1] == "(x+y+z)^{60}" and len(recs) == 5
    assert [r.correct for r in recs[:4]] == [True] * 4 and not recs[-1].correct and recs[-1].answer == "(x+y-z)^{60}"

    with FaultServer(faults={rows[3]["problem"]: ["400"]}) as srv:      # one request at a time, in order: the 4th fails
        with pytest.raises(Exception, match="400"):
            run_evaluation(recipe(srv, tmp_path/"failed", 1), progress=False)
    kept = read_records(tmp_path/"failed"/"math500.jsonl")
    assert sorted(r.gold for r in kept) == ["(x+y+z)^{60}", "0", "1"]
    assert [r.decided_by for r in kept if r.gold in ("0", "1")] == ["exact", "exact"]
    with FaultServer() as srv:
        run_evaluation(recipe(srv, tmp_path/"failed", 1), progress=False)
        assert len(srv.requests) == 2
    _check_consistent(tmp_path/"failed", "math500", 5, 1)
