"Grading on real responses, the curated equivalence set, public grader suites, both extraction policies, hard time limits (main thread, threads, pool workers) and the judge hook."
import json, multiprocessing as mp, string, threading, time
from concurrent.futures import ProcessPoolExecutor
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pathlib import Path

from mixcot_nb.core import JsonlError
from math500_check import MATH500_14B, check_math500_14b
from mixcot_nb.grading import (FLOAT_REL_TOL, JUDGE_SYSTEM, POLICIES, Verdict, answers_match, chat_judge,
                               extract_answer, final_segment, find_answer, grade, grade_many, grade_policies,
                               grade_suite_case, hendrycks_is_equiv, judge_messages, last_boxed, match_answers,
                               math_verify_plain, normalise_answer, numbers_match, parse_judgement,
                               read_grader_suite, reference_answer, summarise)
from mixcot_nb.testing import EQUIV_CASES, math_verify_alone, read_harness_jsonl

TIMEOUT = 1.0
SLOW = ("(x+y+z)^{60}", "(x+y-z)^{60}")      # passes the guards; sympy needs about 6 s: only a kill stops it
PATHOLOGICAL = ["10^{10^{10^{10^{10}}}}", "1000000!", "9^{9^{9}}", "2^{100000000}", "\\frac{", "\\frac{1}{2",
                "}{", "{" * 5000, "\\sqrt{" * 2000 + "2" + "}" * 2000, "1+" * 50_000 + "1", "9" * 100_000,
                "5\x00\x00", "\x00" * 100, "(" * 300 + ")" * 300, "\\boxed{\\boxed{\\boxed{", SLOW[1]]


# ---------------------------------------------------------------- extraction

def test_last_boxed_forms():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}"
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("$\\boxed 12$ more") == "12"
    assert last_boxed("\\boxed{\\frac{1}{2}") is None
    assert last_boxed("nothing") is None and last_boxed(None) is None


def test_think_rule():
    assert extract_answer("<think>\\boxed{1}</think> so \\boxed{2}") == "2"
    assert extract_answer("<think>\\boxed{1}</think><think>again \\boxed{3}") is None       # last think unclosed
    assert extract_answer("<think>no answer yet \\boxed{1}") is None
    assert extract_answer("</think>\\boxed{4}") == "4"                                      # template opened it
    assert extract_answer("<think>\\boxed{1}</think> no box after") is None
    assert final_segment("<|begin_of_thought|>x<|end_of_thought|><|begin_of_solution|>\\boxed{9}<|end_of_solution|>tail \\boxed{8}") == "\\boxed{9}"


def test_final_answer_forms():
    assert extract_answer("Final Answer: The final answer is $5$. I hope it is correct.") == "5"
    assert extract_answer("Final Answer: 5") == "5"
    assert extract_answer("Final Answer: \\(x^2\\)") == "x^2"
    assert extract_answer("Thus the final answer is: 12.") == "12"
    assert extract_answer("I think that's the final answer.") is None


def test_gsm8k_rule_on_the_real_references(data):
    rows = [json.loads(l) for l in open(data/"gsm8k"/"test.jsonl")]
    golds = [reference_answer(r["answer"], "gsm8k") for r in rows]
    assert all(g and "#" not in g and "," not in g for g in golds)
    assert all(answers_match(g, extract_answer(r["answer"], "gsm8k")) for g, r in zip(golds, rows))
    assert extract_answer("It costs $1,250. Then 3 more", "gsm8k") == "3"
    assert extract_answer("\\boxed{18}. Check: 18 = 9 x 2", "gsm8k") == "2"               # the harness: the last number
    assert extract_answer("\\boxed{18}. Check: 18 = 9 x 2", "gsm8k", "lenient") == "18"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable + "\x00{}\\$^_αβ∞−", max_size=400))
def test_extraction_and_normalisation_never_crash(text):
    for s in (text, "\\boxed{" + text, text + "</think>" + text, "<think>" + text, "Final Answer: " + text, "\\boxed{1} and " + text):
        for policy in POLICIES:
            a, how = find_answer(s, policy=policy)
            assert (a is None and how is None) or (isinstance(a, str) and how is not None)
        assert isinstance(normalise_answer(s), str)


# ---------------------------------------------------------------- extraction policies

def test_strict_policy_is_the_paper_rule():
    # the last box, whatever follows it; no "Answer:" endings; no fallback to the last number
    assert find_answer("\\boxed{255}. So she has $10,455. Final Answer: The final answer is $10,455$.") == ("255", "boxed")
    assert find_answer("6 + 3 = 9.\nAnswer: 9") == (None, None)
    assert find_answer("\\boxed{-2} and \\boxed{1}") == ("1", "boxed")
    assert find_answer("Final Answer: The largest $n$ is 34.") == ("The largest $n$ is 34", "final_answer")
    assert find_answer("Therefore the answer is 12 sequences") == (None, None)


LENIENT = [  # (response, answer, rule): each class of the lenient policy
    ("Final Answer: The largest $n$ is 34.", "34", "final_answer"),
    ("Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.", "3", "final_answer"),
    ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120", "final_answer"),
    ("Natalia sold 48 + 24 = 72 clips.\nAnswer: 72", "72", "answer_phrase"),
    ("So the answer is 42.", "42", "answer_phrase"),
    ("The answer is $-\\frac{1}{2}$.", "-\\frac{1}{2}", "answer_phrase"),
    ("the integers are \\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]", "-2, 1", "boxes"),
    ("$$\\boxed{(3, 3)} \\text{ for part (a) and } \\boxed{(1, 1)}$$", "(3, 3), (1, 1)", "boxes"),
    ("First \\boxed{5}. Then, checking the other case, we find \\boxed{7}", "7", "boxed"),
    ("\\boxed{004} as computed. So, \\boxed{004}", "004", "boxed"),
    ("$\\boxed{255}$ So, Dr. Zaius has $10,455. Final Answer: The final answer is $10,455$. I hope it is correct.", "10,455", "final_answer"),
    ("Therefore, there are 12 distinct sequences. I hope it is correct. <|im_start|>user", "12", "last_number"),
    ("So $y = 8.8 - 2.8 = 6$ and the ordered pair is $(7, 6)$.", "(7, 6)", "last_math"),
    ("Thus $x = 5+5+1 = 7 = 11$", "11", "last_math"),
    ("the probability that Alice wins is 2/3.", "2/3", "last_number"),
]


@pytest.mark.parametrize("response,answer,rule", LENIENT)
def test_lenient_policy_reads_what_a_careful_reader_reads(response, answer, rule):
    assert find_answer(response, policy="lenient") == (answer, rule)


def test_lenient_policy_keeps_the_no_answer_cases():
    for resp in ["<think>so \\boxed{3} maybe", "so \\boxed{1} and then \\boxed{12", "I think that's the final answer.", "", "model AZYUK",
                 "Squaring both sides: x^2 + y^2 < (x + k/2)^2 + (y - 1/2"]:
        assert find_answer(resp, policy="lenient") == (None, None), resp
    with pytest.raises(ValueError, match="unknown extraction policy"): find_answer("x", policy="loose")


def test_every_verdict_records_policy_and_rule():
    items = [(r, a) for r, a, _ in LENIENT] + [("no answer here", "5")]
    both = grade_policies(items, progress=False)
    assert set(both) == set(POLICIES)
    for policy, vs in both.items():
        assert all(v.policy == policy for v in vs)
        assert all((v.extracted_by is None) == (v.answer is None) == (v.decided_by == "no_answer") for v in vs)
    assert [v.extracted_by for v in both["lenient"][:-1]] == [rule for *_, rule in LENIENT]
    assert all(v.correct for v in both["lenient"][:-1]) and not both["lenient"][-1].correct
    assert sum(v.correct for v in both["strict"]) < len(LENIENT)
    assert grade_many(items, policy="lenient", progress=False) == both["lenient"]
    assert grade_many(items, progress=False) == both["strict"] == [grade(r, a) for r, a in items]
    assert summarise(both["lenient"])["extracted_by"]["boxes"] == 2


def test_math500_fixture_strict_and_lenient(data):
    rows = read_harness_jsonl(data/MATH500_14B)
    both = grade_policies(rows, progress=False)
    check_math500_14b(data, [(r["gold"], v.answer, v.correct) for r, v in zip(rows, both["strict"])])   # the paper's rule: unchanged
    assert sum(v.correct for v in both["lenient"]) >= sum(v.correct for v in both["strict"])
    assert all(s.correct <= l.correct for s, l in zip(both["strict"], both["lenient"]) if s.extracted_by == "boxed")


# ---------------------------------------------------------------- equivalence

def test_curated_set_ours_beats_math_verify_and_hendrycks():
    acc = lambda f: sum(f(g, p) == eq for g, p, eq, _ in EQUIV_CASES) / len(EQUIV_CASES)
    ours, mv, hend = acc(answers_match), acc(math_verify_alone), acc(hendrycks_is_equiv)
    print(f"curated set ({len(EQUIV_CASES)} pairs): ours {ours:.3f}, math-verify {mv:.3f}, hendrycks {hend:.3f}")
    assert len(EQUIV_CASES) >= 60
    assert ours >= 0.97 and ours >= mv and ours >= hend + 0.3


def test_curated_set_covers_each_normalisation():
    tags = " ".join(t for *_, t in EQUIV_CASES)
    for need in ["text unit", "degrees", "percent", "dollar", "thousands", "leading zeros", "prefix", "dfrac",
                 "\\left", "mixed number", "trailing .0", "spaces", "interval", "set", "ordered pair"]:
        assert need in tags, need


def test_no_false_positive_from_normalisation():
    for g, p in [("100", "1"), ("150", "15"), ("1,2", "12"), ("10\\text{ cm}^2", "100"), ("2\\frac{1}{2}", "1"),
                 ("\\text{east}", "seat"), ("(1,2)", "\\{1,2\\}"), ("0.07", "7"), ("x=5", "x=-5")]:
        assert not answers_match(g, p), (g, p)


def test_hendrycks_baseline_quirks():
    assert hendrycks_is_equiv("\\frac{1}{2}", "0.5") and hendrycks_is_equiv("\\dfrac12", "1/2")
    assert not hendrycks_is_equiv("\\frac14", "0.25")                       # only 0.5 is special-cased
    assert not hendrycks_is_equiv("50", "50%")                              # the fork removes \% only
    assert hendrycks_is_equiv("5\\text{ cm}", "5")
    assert not hendrycks_is_equiv("5\\text{ cm}\\text{ m}", "5")            # two units: raises, raw comparison
    assert hendrycks_is_equiv("k=7", "7") and not hendrycks_is_equiv("abc=7", "7")


def test_math500_references_match_themselves(data):
    rows = [json.loads(l) for l in open(data/"math500"/"test.jsonl")]
    assert len(rows) == 500
    assert all(answers_match(r["answer"], extract_answer(r["solution"]) or "") for r in rows)


def test_exact_values_before_floats():
    assert numbers_match("0.0000001", "0.0000002") is False                    # tiny distinct values stay distinct
    assert not answers_match("10^{-9}", "2\\cdot10^{-9}") and not answers_match("1\\times10^{-12}", "1.5\\times10^{-12}")
    assert not answers_match("10", "10.0000001") and answers_match("10", "10.000")
    assert answers_match("\\frac{1}{3}", "0.3333333") and not answers_match("\\frac{1}{3}", "0.333")
    assert FLOAT_REL_TOL == 1e-6 and answers_match("\\frac{1}{7}", "0.142857") and not answers_match("\\frac{1}{7}", "0.14285")
    assert answers_match("\\frac{\\sqrt{2}}{2}", "0.7071068") and not answers_match("\\sqrt{3}", "1.732")


def test_list_or_thousands_decided_by_the_reference():
    assert not answers_match("32349", "32, 349")                # a comma and a space: a list
    assert answers_match("32, 349", "32,349") and answers_match("100, 200", "100,200")   # the reference is a list
    assert answers_match("32349", "32,349") and answers_match("\\$32,\\!348", "32348")     # the reference is a number
    assert answers_match("14{,}916", "14{, }916") and answers_match("11,\\! 111,\\! 111,\\! 100", "11111111100")
    assert answers_match("1,22", "1.22") and answers_match("0,111", "0.111")              # a decimal comma
    assert not answers_match("12", "1,2") and not answers_match("1,000", "1")


@pytest.mark.parametrize("a,b", [("x \\in [-2, 7]", "-2 \\le x \\le 7"), ("[2,\\infty)", "x \\ge 2"), ("(3,\\infty)", "x>3"),
                                 ("(-\\infty,5]", "5 \\ge x"), ("(0,1)", "0<f(x)<1"), ("[-2,7]", "-2 \\leq x \\leq 7")])
def test_intervals_and_inequalities_both_directions(a, b):
    assert answers_match(a, b) and answers_match(b, a)


def test_intervals_and_inequalities_keep_their_ends():
    for a, b in [("[2,\\infty)", "x > 2"), ("(-2,7)", "-2 \\le x \\le 7"), ("(-\\infty, 5)", "x > 5"), ("(1,2)", "\\{1,2\\}")]:
        assert not answers_match(a, b) and not answers_match(b, a), (a, b)


# ---------------------------------------------------------------- public grader test suites

SUITES = sorted((Path(__file__).parent/"data"/"grader_suites").glob("*.jsonl"))


def test_public_suites_mixcot_agrees_at_least_as_often_as_math_verify():
    cases = [c for f in SUITES for c in read_grader_suite(f)]
    assert len(SUITES) == 3 and len(cases) == 330
    got = {k: [f(c) for c in cases] for k, f in {"strict": lambda c: grade_suite_case(c, "strict", timeout=20),
                                                    "lenient": lambda c: grade_suite_case(c, "lenient", timeout=20),
                                                    "math-verify": lambda c: math_verify_plain(c["gold"], c["pred"])}.items()}
    agree = {(k, kind): sum(v == c["expected"] for v, c in zip(vs, cases) if c["kind"] == kind) for k, vs in got.items()
             for kind in ("pair", "response")}
    print(agree)
    assert agree["lenient", "response"] >= agree["math-verify", "response"] > agree["strict", "response"]
    assert agree["lenient", "pair"] >= agree["math-verify", "pair"]
    # the cases math-verify gets and mixcot does not are two labels that record math-verify's own behaviour:
    # six-decimal rounding (0.0666668 = 0.066666793) and a parse that stops at \mathrm{e} (1 - 1/e = 1 + 1/e)
    worse = [c["id"] for c, o, m in zip(cases, got["lenient"], got["math-verify"]) if o != c["expected"] and m == c["expected"]]
    assert worse == ["areal/test_math_verify_reward::test_worker_rounding_matches_six_decimal_places",
                     "math_verify/test_yujianll::test_string_extraction[9]"]


def test_grader_suite_files_are_checked(tmp_path):
    bad = tmp_path/"suite.jsonl"
    bad.write_text('{"id": "a", "source": "s", "kind": "pair", "gold": "1", "pred": "1", "expected": true}\n'
                   '{"id": "b", "source": "s", "kind": "essay", "gold": "1", "pred": "1", "expected": true}\n')
    with pytest.raises(JsonlError, match="suite.jsonl:2: field 'kind'"): read_grader_suite(bad)
    bad.write_text('{"id": "a", "source": "s", "kind": "pair", "gold": "1", "pred": "1", "expected": "yes"}\n')
    with pytest.raises(JsonlError, match="suite.jsonl:1: field 'expected'"): read_grader_suite(bad)


# ---------------------------------------------------------------- real responses

FILES = {"shortcot_14b": ("shortcot_qwen25_14b_instruct/math500.jsonl", 500, 0.98),
         "shortcot_math_x8": ("shortcot_qwen25_math_rm_maj_example/math_cot_100.jsonl", 800, 0.99),
         "longcot_style": ("longcot_style_math500/math500_even.jsonl", 250, 0.85)}
THEIR_MISTAKES = {("(2,\\infty)", "[2, \\infty)"), ("10,\\!080", "10080"), ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
                  ("10{,}000", "10000"), ("3 \\pm 2 \\sqrt{2}", "3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}")}


@pytest.mark.parametrize("name", FILES)
def test_agreement_with_the_harness_labels(name, data):
    path, n, threshold = FILES[name]
    rows = read_harness_jsonl(data/path)
    vs = grade_many(rows, progress=False)
    assert len(vs) == n and all(isinstance(v, Verdict) for v in vs)
    agree = sum(v.correct == r["their_score"] for r, v in zip(rows, vs)) / n
    print(f"{name}: agreement {agree:.3f}, ours {summarise(vs)['accuracy']:.3f}")
    assert agree >= threshold
    for r, v in zip(rows, vs):
        if v.correct == r["their_score"]: continue
        # every disagreement is a known kind: their last-number fallback on an unboxed response, or their mistake
        fallback = v.decided_by == "no_answer" and r["their_score"] and "\\boxed" not in (final_segment(r["response"]) or "")
        assert fallback or (r["gold"], v.answer) in THEIR_MISTAKES, (r["gold"], v.answer, r["their_pred"])


# ---------------------------------------------------------------- time limits

def _check_all_within(fn, inputs, timeout=TIMEOUT):
    for s in inputs:
        t0 = time.monotonic()
        ok, rule = fn(s)
        elapsed = time.monotonic() - t0
        assert elapsed < 3 * timeout, (s[:40], elapsed)
        assert isinstance(ok, bool) and rule in {"exact", "normalised", "math_verify", "timeout", "mismatch"}


def test_pathological_inputs_main_thread():
    _check_all_within(lambda s: match_answers("5", s, timeout=TIMEOUT), PATHOLOGICAL)
    _check_all_within(lambda s: match_answers(s, "5", timeout=TIMEOUT), PATHOLOGICAL)
    assert match_answers(*SLOW, timeout=TIMEOUT) == (False, "timeout")
    assert answers_match("\\frac12", "0.5")                     # the pool recovered after the kill


def test_pathological_inputs_from_threads():
    results, errors = {}, []
    def work(i, s):
        try:
            t0 = time.monotonic()
            results[i] = (match_answers("5", s, timeout=TIMEOUT), time.monotonic() - t0)
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(PATHOLOGICAL[-6:])]
    t0 = time.monotonic()
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors and len(results) == 6
    assert time.monotonic() - t0 < 3 * TIMEOUT + 2, "threads queued behind each other"
    assert all(el < 3 * TIMEOUT for _, el in results.values())
    assert results[5][0] == (False, "timeout")


def _in_worker(s):
    t0 = time.monotonic()
    return match_answers("5", s, timeout=TIMEOUT), time.monotonic() - t0


@pytest.mark.parametrize("kind", ["daemonic multiprocessing.Pool", "ProcessPoolExecutor"])
def test_time_limit_inside_worker_processes(kind):
    ctx = mp.get_context("fork")
    inputs = [SLOW[1], "1000000!", "\\frac{1}{2}"]
    if kind.startswith("daemonic"):
        with ctx.Pool(1) as pool: out = pool.map(_in_worker, inputs)
    else:
        with ProcessPoolExecutor(1, mp_context=ctx) as ex: out = list(ex.map(_in_worker, inputs))
    assert [r for r, _ in out] == [(False, "timeout"), (False, "timeout"), (False, "mismatch")]
    assert all(el < 3 * TIMEOUT for _, el in out)


@pytest.mark.parametrize("policy", POLICIES)
def test_grade_many_with_pathological_items(policy):
    items = ([("\\boxed{5}", "5")] + [(s, "5") for s in PATHOLOGICAL] + [("\\boxed{" + s + "}", "5") for s in PATHOLOGICAL]
             + [("Final Answer: " + s, "5") for s in PATHOLOGICAL] + [("\\(" * 50_000, "5"), ("Answer: " * 20_000, "5")]
             + [("\\boxed{" + SLOW[1] + "}", SLOW[0]), ("\\boxed{x(x+2)}", "x^2+2x")])
    t0 = time.monotonic()
    vs = grade_many(items, timeout=TIMEOUT, progress=False, policy=policy)
    elapsed = time.monotonic() - t0
    assert len(vs) == len(items) and vs[0].decided_by == "exact"
    assert vs[-2].decided_by == "timeout" and vs[-1].decided_by == "math_verify"
    assert elapsed < 3 * TIMEOUT * 2 + 5, elapsed      # at most a couple of kills in flight per worker, plus start-up


TOKENS = list("0123456789xy+-*/^_{}()[],.=!") + ["\\frac", "\\sqrt", "\\pi", "\\infty", "\\left(", "\\right)",
                                                 "\\{", "\\}", "\\cup", "\\text{ cm}", "\\%", "\\begin{pmatrix}", "\\\\"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join), st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_random_latex_gets_a_verdict_in_time(gold, pred):
    t0 = time.monotonic()
    ok, rule = match_answers(gold, pred, timeout=TIMEOUT)
    assert time.monotonic() - t0 < 3 * TIMEOUT and isinstance(ok, bool)


# ---------------------------------------------------------------- grade, grade_many, judge

def test_grade_many_matches_grade_and_keeps_order():
    items = [("\\boxed{1}", "1"), {"response": "\\boxed{2}", "gold": "3", "problem": "p"}, ("no answer", "4"),
             ("Final Answer: 0.5", "\\frac{1}{2}"), ("\\boxed{\\dfrac{3}{6}}", "0.5"), ("\\boxed{(2,1)}", "(1,2)")] * 5
    expected = [grade(*it) if isinstance(it, tuple) else grade(it["response"], it["gold"]) for it in items]
    assert grade_many(items, progress=False) == expected
    assert grade_many(items, workers=0, progress=False) == expected
    s = summarise(expected)
    assert s["n"] == 30 and s["by"]["no_answer"] == 5 and s["no_answer_rate"] == pytest.approx(1 / 6)


def test_grade_many_progress_bar(capsys):
    grade_many([("\\boxed{1}", "1")] * 3, progress=True)
    assert "grading" in capsys.readouterr().err


class CountingJudge:
    "A real judge with a call log: accepts when the letters and digits are equal ignoring case."
    def __init__(self): self.calls = []
    def __call__(self, problem, gold, pred):
        self.calls.append((problem, gold, pred))
        key = lambda s: "".join(c for c in s.lower() if c.isalnum())
        return key(gold) == key(pred)


def test_judge_only_sees_rule_misses_with_an_answer():
    judge = CountingJudge()
    items = [dict(response="\\boxed{5}", gold="5", problem="a"), dict(response="no box", gold="5", problem="b"),
             dict(response="\\boxed{\\text{North East}}", gold="\\text{north-east}", problem="c"),
             dict(response="\\boxed{7}", gold="8", problem="d")]
    vs = grade_many(items, judge=judge, progress=False)
    assert [v.decided_by for v in vs] == ["exact", "no_answer", "judge", "judge"]
    assert [v.correct for v in vs] == [True, False, True, False]
    assert [c[0] for c in judge.calls] == ["c", "d"]


def test_chat_judge_uses_the_paper_prompt():
    seen = []
    def chat(messages):
        seen.append(messages)
        return "True" if "Answer: 4" in messages[1]["content"] and "Generated Answer: four" in messages[1]["content"] else "False"
    judge = chat_judge(chat)
    assert grade("\\boxed{four}", "4", problem="2+2?", judge=judge).decided_by == "judge"
    assert seen[0][0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert seen[0][1]["content"].endswith("Problem: 2+2?\nCorrect Answer: 4\nModel's Generated Answer: four\nYour judgement:")
    assert judge_messages(None, "1", "2")[1]["content"].count("\n") == 4
    assert [parse_judgement(t) for t in ["True.", "False", "true", ""]] == [True, False, None, None]
