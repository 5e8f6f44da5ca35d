"Report: synthetic run directories with known numbers (real records): tables, figures, the paper's tables, gates, pairing."
import csv, json
from pathlib import Path

import pytest
from matplotlib.text import Text

from mixcot_nb.core import EvalSummary, RunDir, agg_figure, write_json, write_jsonl
from mixcot_nb.evaluation import EvalRecord, summarise_records
from mixcot_nb.report import (PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, Gate, _by_family, _place_labels, accuracy_table,
                              build_report, compare_arms, format_gates, gain_table, gap_table, generic_gates, load_results,
                              paper_run, plot_gaps)

# student -> arm -> benchmark -> correct out of N problems (one sample each)
N = {"math500": 40, "gsm8k": 50}
KNOWN = {"tiny-s": {"base": {"math500": 14, "gsm8k": 24}, "long": {"math500": 10, "gsm8k": 20}, "short": {"math500": 16, "gsm8k": 25},
                    "large": {"math500": 12, "gsm8k": 20}, "small": {"math500": 14, "gsm8k": 30},
                    "mix-long": {"math500": 18, "gsm8k": 30}, "mix-large": {"math500": 20, "gsm8k": 25}},
         "tiny-l": {"base": {"math500": 20, "gsm8k": 34}, "long": {"math500": 28, "gsm8k": 36}, "short": {"math500": 20, "gsm8k": 35},
                    "large": {"math500": 24, "gsm8k": 40}, "small": {"math500": 24, "gsm8k": 40}}}
TOKENS = {"base": 50, "long": 300, "short": 60, "large": 120, "small": 80, "mix-long": 100, "mix-large": 90}


def _write_eval(d: Path, arm: str, counts: dict, records: bool = True, params: int | None = None):
    benches = {}
    for b, c in counts.items():
        recs = [EvalRecord(benchmark=b, problem_id=f"{b}/p{i}", sample_idx=0, response="x", gold="1",
                           answer="1" if i < c else "2", correct=i < c, decided_by="exact" if i < c else "mismatch",
                           prompt_tokens=10, completion_tokens=TOKENS[arm] + i, finish_reason="length" if i == 0 else "stop")
                for i in range(N[b])]
        if records: write_jsonl(d/f"{b}.jsonl", recs)
        benches[b] = summarise_records(recs, expected=N[b])
    write_json(d/"summary.json", EvalSummary(model=f"m-{arm}", num_parameters=params, benchmarks=benches).model_dump(mode="json"))


@pytest.fixture
def run(tmp_path):
    r = RunDir(tmp_path/"run")
    for student, arms in KNOWN.items():
        for arm, counts in arms.items():
            _write_eval(r.evals(student, arm), arm, counts, records=student == "tiny-s", params=None)
    return r


def _avg(student, arm): return 100 * sum(KNOWN[student][arm][b] / N[b] for b in N) / len(N)


def test_known_numbers_exactly(run):
    results = load_results(run)
    acc = {(r["student"], r["arm"]): r for r in accuracy_table(results)}
    for student, arms in KNOWN.items():
        for arm, counts in arms.items():
            row = acc[(student, arm)]
            for b in N: assert row[b] == 100 * counts[b] / N[b]
            assert row["average"] == pytest.approx(_avg(student, arm), abs=1e-12)
            assert row["average_over"] == "gsm8k+math500"
    gaps = {r["student"]: r for r in gap_table(results, students={"tiny-s": 1e6, "tiny-l": 1e8})}
    for s in KNOWN:
        assert gaps[s]["gap_long"] == pytest.approx(_avg(s, "long") - _avg(s, "short"), abs=1e-12)
        assert gaps[s]["gap_large"] == pytest.approx(_avg(s, "large") - _avg(s, "small"), abs=1e-12)
        assert gaps[s]["gap_long_lo"] < gaps[s]["gap_long"] < gaps[s]["gap_long_hi"]
    assert gaps["tiny-s"]["params"] == 1e6 and gaps["tiny-s"]["gap_long_ci"] == "paired_bootstrap"
    assert gaps["tiny-l"]["gap_long_ci"] == "normal"          # summaries only: normal approximation
    # with records, paired: long's correct problems are a subset of short's, so every resample's gap is <= 0
    assert gaps["tiny-s"]["gap_long_hi"] <= 0
    gains = {(r["student"], r["mix"], r["over"]): r["gain"] for r in gain_table(results)}
    assert gains[("tiny-s", "mix-long", "long")] == pytest.approx(_avg("tiny-s", "mix-long") - _avg("tiny-s", "long"))
    assert gains[("tiny-s", "mix-large", "small")] == pytest.approx(_avg("tiny-s", "mix-large") - _avg("tiny-s", "small"))
    assert not any(k[0] == "tiny-l" for k in gains)           # no mix arms for that student


def test_results_are_typed_summaries_that_know_their_folder(run):
    results = load_results(run)
    s = results["tiny-s"]["long"]
    assert isinstance(s, EvalSummary) and s.folder == run.evals("tiny-s", "long") and s.benchmarks["gsm8k"].n == N["gsm8k"]
    assert "folder" not in json.loads((s.folder/"summary.json").read_text())


def test_summaries_from_before_policies_and_without_records_report_as_before(tmp_path):
    "A summary.json as older versions wrote it (no `policy`, no `strict_accuracy`, no records): strict, normal intervals."
    r = RunDir(tmp_path/"old")
    for arm, acc in (("long", 0.30), ("short", 0.40)):
        write_json(r.evals("s", arm)/"summary.json", {"model": f"m-{arm}", "adapter": None, "engine": "transformers", "num_parameters": 1000,
                   "n": 1, "temperature": 0.0, "max_new_tokens": 256, "paper_average": None, "updated": "2026-11-01T00:00:00+00:00",
                   "benchmarks": {"lab": {"n": 40, "problems": 40, "samples_per_problem": 1, "correct": int(40 * acc), "accuracy": acc,
                                          "lenient_accuracy": acc, "ci95": [acc - 0.1, acc + 0.1], "ci_method": "wilson",
                                          "pass_at_k": {"1": acc}, "completion_tokens": {"n": 40, "mean": 60.0, "median": 60.0,
                                                                                         "p95": 64, "max": 64},
                                          "prompt_tokens_mean": 50.0, "truncation_rate": 0.0, "no_answer_rate": 0.0,
                                          "decided_by": {"exact": int(40 * acc)}, "expected": 40, "complete": True}}})
    g = gap_table(load_results(r))[0]
    assert g["gap_long"] == pytest.approx(-10.0) and g["gap_long_ci"] == "normal" and g["gap_long_warning"] is None


def test_identical_arms_have_a_zero_gap_and_zero_width_interval(tmp_path):
    r = RunDir(tmp_path/"same")
    for arm in ("long", "short"): _write_eval(r.evals("s", arm), "long", KNOWN["tiny-s"]["long"])
    g = gap_table(load_results(r))[0]
    assert (g["gap_long"], g["gap_long_lo"], g["gap_long_hi"]) == (0.0, 0.0, 0.0) and g["gap_large"] is None


def test_build_report_files_and_figures(run):
    page = build_report(run.root, students={"tiny-s": 1e6, "tiny-l": 1e8})
    out = page.parent
    assert out == run.report
    for name in ("accuracy", "gaps", "gains", "lengths"):
        assert (out/f"{name}.md").stat().st_size > 0
        with open(out/f"{name}.csv") as f: rows = list(csv.DictReader(f))
        assert rows
    for fig in ("gaps_vs_size.png", "accuracy_by_arm.png", "lengths_by_arm.png"):
        data = (out/fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    text = page.read_text()
    for fig in ("gaps_vs_size.png", "accuracy_by_arm.png", "lengths_by_arm.png"): assert f"]({fig})" in text
    assert "Paper: Tables 1 and 2" in text and "<img src='gaps_vs_size.png'" in (out/"report.html").read_text()
    with open(out/"gaps.csv") as f: gaps = {r["student"]: r for r in csv.DictReader(f)}
    assert float(gaps["tiny-l"]["gap_long"]) == pytest.approx(_avg("tiny-l", "long") - _avg("tiny-l", "short"))
    with open(out/"lengths.csv") as f: lengths = {(r["student"], r["arm"]): r for r in csv.DictReader(f)}
    row = lengths[("tiny-s", "long")]
    mean = sum(300 + i for b in N for i in range(N[b])) / sum(N.values())
    assert float(row["mean_tokens"]) == pytest.approx(mean) and float(row["truncation_rate"]) == pytest.approx(2 / 90)


def test_report_beside_the_paper_and_sizes_from_summaries(tmp_path):
    r = RunDir(tmp_path/"named")
    for arm in ("long", "short"): _write_eval(r.evals("Qwen2.5-3B-Instruct", arm), arm, KNOWN["tiny-l"][arm], params=3_085_938_688)
    page = build_report(r.root, out_dir=tmp_path/"out")
    acc = (tmp_path/"out"/"accuracy.md").read_text()
    assert "paper: Qwen2.5-3B | mix-long" in acc and "| 45.9 |" in acc
    assert gap_table(load_results(r))[0]["params"] == 3_085_938_688
    assert build_report(r.root, out_dir=tmp_path/"noref", reference=False).read_text().count("paper:") == 0
    assert page.exists()


def test_paper_tables_recomputed(tmp_path):
    "Table 3's averages from its per-benchmark numbers; Tables 1 and 2's gaps from their averages; within rounding."
    results = load_results(paper_run(tmp_path/"paper"))
    acc = {(r["student"], r["arm"]): r["average"] for r in accuracy_table(results)}
    assert [round(acc[("Qwen2.5-3B", a)], 1) for a in ("long", "short", "mix-long", "mix-large")] == [40.3, 43.4, 45.9, 45.8]
    off = {k: abs(acc[k] - PAPER_TABLE3[k[0]][k[1]]["average"]) for k in acc}
    assert {k for k, v in off.items() if v > 0.1 + 1e-9} == {("Llama-3.2-3B", "small")}   # the paper's typo: 31.84 printed 31.2
    qwen = [f"Qwen2.5-{x}" for x in ("0.5B", "1.5B", "3B", "7B", "14B", "32B")]
    assert [PAPER_TABLE1[s][2] for s in qwen] == [-4.7, -7.1, -3.1, 1.7, 4.9, 13.7]
    for table in (PAPER_TABLE1, PAPER_TABLE2):
        for s, (pa, pb, gap) in table.items(): assert abs(pa - pb - gap) <= 0.1 + 1e-9
    g = {r["student"]: r for r in gap_table(results)}
    assert round(g["Qwen2.5-3B"]["gap_long"], 1) == PAPER_TABLE1["Qwen2.5-3B"][2]
    assert round(g["Qwen2.5-3B"]["gap_large"], 1) == PAPER_TABLE2["Qwen2.5-3B"][2]


def test_bad_summary_is_named(tmp_path):
    r = RunDir(tmp_path/"bad")
    r.evals("s", "long").mkdir(parents=True)
    (r.evals("s", "long")/"summary.json").write_text('{"model": "m"}')
    with pytest.raises(ValueError, match=r"s__long/summary.json: field 'benchmarks': Field required"): load_results(r)
    with pytest.raises(FileNotFoundError, match="no evaluation summaries"): build_report(tmp_path/"empty")


def _lab_eval(run: RunDir, student: str, arm: str, correct: int, n: int = 40, first: int = 0, cut: int = 0,
              params: int | None = None, finish: bool = True):
    "Real records of `n` lab problems from `first`: the first `correct` right, the last `cut` truncated without an answer."
    recs = [EvalRecord(benchmark="lab", problem_id=f"lab/p{i}", sample_idx=0, response="x", gold="1",
                       answer=None if k >= n - cut else "1" if k < correct else "2", correct=k < correct,
                       decided_by="exact" if k < correct else "no_answer" if k >= n - cut else "mismatch",
                       completion_tokens=20 + k, finish_reason=("length" if k >= n - cut else "stop") if finish else None)
            for k, i in enumerate(range(first, first + n))]
    write_jsonl(run.evals(student, arm)/"lab.jsonl", recs)
    summary = EvalSummary(model=f"{student}:{arm}", num_parameters=params, benchmarks={"lab": summarise_records(recs, expected=n)})
    write_json(run.evals(student, arm)/"summary.json", summary.model_dump(mode="json"))


def test_fixture_passes_its_gates_and_shows_gaps(run):
    gates = generic_gates(run, students={"tiny-s": 1e6, "tiny-l": 1e8})
    assert [(g.name, g.passed) for g in gates] == [("short-keeps-base", True), ("truncation", True), ("no-answer", True),
                                                    ("headroom", True)]
    assert "tiny-l: short 60.0 vs base 59.0 (+1.0)" in gates[0].detail and "tiny-l long 71.0%" in gates[3].detail
    assert "largest student tiny-l (100,000,000 parameters)" in gates[1].detail
    text = build_report(run.root, students={"tiny-s": 1e6, "tiny-l": 1e8}).read_text()
    assert "All 4 gates passed." in text and "Not interpretable" not in text
    assert text.index("## Validity gates") < text.index("## Accuracy by arm")


def test_failing_gates_make_the_gaps_not_interpretable(tmp_path):
    r = RunDir(tmp_path/"run")
    for arm, c in (("base", 20), ("short", 22), ("long", 16)): _lab_eval(r, "xs", arm, c, params=131_776)
    for arm, c, cut in (("base", 24, 0), ("short", 18, 0), ("long", 26, 3)): _lab_eval(r, "s", arm, c, cut=cut, params=689_920)
    gates = generic_gates(r)
    assert {g.name: g.passed for g in gates} == {"short-keeps-base": False, "truncation": False, "no-answer": False,
                                                  "headroom": True}
    assert "s: short 45.0 vs base 60.0 (-15.0)" in gates[0].detail and "s long 7.5%" in gates[1].detail
    assert "s long 65.0%" in gates[3].detail
    block = format_gates(gates)
    assert block.splitlines()[0] == "validity gates: 3 of 4 failed; gaps not interpretable"
    assert "  FAIL  short-keeps-base  " in block and "  pass  headroom          " in block
    page = build_report(r, extra_gates=[Gate(name="style", passed=False, detail="long arm 40% in style")])
    assert json.loads((page.parent/"gates.json").read_text())[-1] == {"name": "style", "passed": False, "detail": "long arm 40% in style"}
    text = page.read_text()
    gaps = text.split("## Learnability gaps")[1].split("## Mix")[0]
    assert "**Not interpretable**: the run failed `short-keeps-base`" in gaps and "`style` (long arm 40% in style)" in gaps
    assert "gap_long" not in gaps and "gaps_vs_size.png" not in gaps and "| s | 689920 | 65.0 | 45.0 |" in gaps
    assert "4 of 5 gates failed" in (page.parent/"report.html").read_text()
    md = (page.parent/"gaps.md").read_text()       # what `mixcot run` prints under the gates
    assert md.startswith("_Not interpretable: the run failed the gates short-keeps-base, truncation, no-answer, style")
    assert "gap_long" not in md and "gap_long" in (page.parent/"gaps.csv").read_text()


def test_headroom_and_gates_over_seeds(tmp_path):
    "Replicates: base under the student's own name, short averaged over seeds; headroom from the largest student's best arm."
    r = RunDir(tmp_path/"run")
    _lab_eval(r, "s", "base", 30, params=690_000)
    for seed, (short, long) in enumerate(((29, 32), (31, 34), (30, 33))):
        _lab_eval(r, f"s.steps.s{seed}", "short", short); _lab_eval(r, f"s.steps.s{seed}", "long", long)
    groups = {f"s.steps.s{i}": {"student": "s", "budget": "steps", "seed": i} for i in range(3)}
    gates = {g.name: g for g in generic_gates(r, students={"s": 690_000}, groups=groups)}
    assert gates["short-keeps-base"].passed and "s (steps): short 75.0 vs base 75.0 (+0.0) over 3 seeds" in gates["short-keeps-base"].detail
    assert not gates["headroom"].passed and "s (steps) long 82.5%" in gates["headroom"].detail


def test_gates_that_cannot_be_computed_fail_and_say_why(tmp_path):
    r = RunDir(tmp_path/"run")
    _lab_eval(r, "s", "long", 20, params=1000, finish=False)      # imported: no finish reasons, no base, no short arm
    gates = {g.name: g for g in generic_gates(r)}
    assert not gates["short-keeps-base"].passed and "s: not computed, no base evaluation" in gates["short-keeps-base"].detail
    assert not gates["truncation"].passed and "not computed for s long (no truncation_rate" in gates["truncation"].detail
    assert gates["no-answer"].passed and gates["headroom"].passed
    _lab_eval(r, "s", "base", 20)
    assert "s: not computed, no short arm" in generic_gates(r)[0].detail
    assert generic_gates(paper_run(tmp_path/"paper")) == []        # published tables are not the run's own evaluations
    assert format_gates([]).startswith("validity gates: none")


def test_different_problem_sets_are_compared_on_shared_problems(tmp_path):
    r = RunDir(tmp_path/"run")
    for arm, c in (("base", 10), ("short", 20)): _lab_eval(r, "s", arm, c, first=10, params=1000)
    _lab_eval(r, "s", "long", 24, params=1000)                     # problems 0-39 (0-23 right); short: 10-49 (10-29 right)
    res = load_results(r)
    c = compare_arms(res["s"]["long"], res["s"]["short"], ["lab"])
    assert c["shared"] == 30 and c["diff"] == pytest.approx(100 * (14 - 20) / 30) and c["ci"] == "paired_bootstrap"
    assert c["lo"] < c["diff"] < c["hi"] < 0                         # the unpaired difference is +10
    assert c["warning"] == "lab: 40 vs 40 problems, 30 shared; compared on the shared problems only"
    g = gap_table(res)[0]
    assert (g["P_long"], g["P_short"], g["gap_long_shared"]) == (pytest.approx(100 * 14 / 30), pytest.approx(100 * 20 / 30), 30)
    text = build_report(r).read_text()
    assert "**Different problem sets**: s, long gap (long vs short): lab: 40 vs 40 problems, 30 shared" in text
    assert "| s | 1000 | 46.7 | 66.7 | -20.0 |" in text
    same = compare_arms(res["s"]["short"], res["s"]["base"], ["lab"])
    assert same["warning"] is None and same["shared"] == 40


def test_summaries_of_different_sizes_warn_without_records(tmp_path):
    r = RunDir(tmp_path/"run")
    for arm, n in (("long", 40), ("short", 30)):
        _lab_eval(r, "s", arm, 10, n=n)
        (r.evals("s", arm)/"lab.jsonl").unlink()
    res = load_results(r)
    c = compare_arms(res["s"]["long"], res["s"]["short"], ["lab"])
    assert c["ci"] == "normal" and c["warning"].startswith("lab: 40 vs 30 problems; no per-item records")


def test_a_student_name_holding_the_separator_stays_apart(tmp_path):
    r = RunDir(tmp_path/"run")
    for student, c in (("lab", 10), ("lab__s", 30)):
        for arm in ("long", "short"): _lab_eval(r, student, arm, c)
    assert r.evals("lab__s", "long").name == "lab__s__long"
    res = load_results(r)
    assert sorted(res) == ["lab", "lab__s"] and sorted(res["lab__s"]) == ["long", "short"]
    assert res["lab__s"]["long"].benchmarks["lab"].correct == 30 and res["lab"]["long"].benchmarks["lab"].correct == 10
    assert RunDir.split("lab__s__mix-long") == ("lab__s", "mix-long")
    with pytest.raises(ValueError, match="arm 's__long' must not contain '__'"): r.evals("lab", "s__long")


def test_integer_parameters_panels_for_present_gaps_and_true_captions(tmp_path):
    r = RunDir(tmp_path/"run")
    for student, params in (("xs", 131_776.0), ("s", 689_920.0)):
        for arm, c in (("base", 14), ("short", 16), ("long", 12), ("mix-long", 18)): _lab_eval(r, student, arm, c, cut=1)
    page = build_report(r, students={"xs": 131_776.0, "s": 689_920.0})
    out = page.parent
    gaps = {row["student"]: row for row in csv.DictReader(open(out/"gaps.csv"))}
    assert gaps["xs"]["params"] == "131776" and "| xs | 131776 |" in (out/"gaps.md").read_text()
    assert "131776.0" not in page.read_text()
    png = (out/"gaps_vs_size.png").read_bytes()
    assert int.from_bytes(png[16:20], "big") < 700                  # one panel (long), not an empty Large-gap panel
    text = page.read_text()
    acc = text.split("## Accuracy by arm")[1].split("##")[0]
    assert "paper's five" not in acc and "the benchmark every arm of a student shares (lab)" in acc
    gap = text.split("## Learnability gaps")[1].split("##")[0]
    assert "Large teacher gap" not in gap and "Long CoT gap = P_long - P_short" in gap
    gains = text.split("## Mix Distillation gains")[1].split("##")[0]
    assert "| s | mix-long | long | 45.0 | 30.0 | 15.0 |" in gains
    assert "## Response length and truncation" in text and "lengths_by_arm.png" in text
    assert plot_gaps([{"student": "x", "params": 1000, "gap_long": None}], tmp_path/"none.png") is None


def test_labels_stay_apart_and_inside(tmp_path):
    "Six students at nearly one size: every label is inside the axes and no two labels overlap."
    fig = agg_figure(figsize=(5, 4)); ax = fig.subplots()
    pts = [(1e5 * 1.03 ** i, -20 + 2 * i, -25 + 2 * i, -15 + 2 * i, f"student-{i}") for i in range(6)]
    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=5, ls="none", marker="o")
    ax.set_xscale("log"); ax.set_xlim(1e4, 1e7); ax.set_ylim(-60, 20)
    texts = _place_labels(ax, pts, [(p[0], p[2], p[3]) for p in pts])
    r = fig.canvas.get_renderer()
    for t in texts: t.update_positions(r)
    boxes, inside = [Text.get_window_extent(t, r) for t in texts], ax.get_window_extent(r)     # the text, not its leader
    assert sorted(t.get_text() for t in texts) == [f"student-{i}" for i in range(6)]
    assert all(inside.contains(b.x0, b.y0) and inside.contains(b.x1, b.y1) for b in boxes)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    again = _place_labels(agg_figure(figsize=(5, 4)).subplots(), pts)     # deterministic: same offsets for the same input
    assert len(again) == 6


def test_replicates_pooled_in_tables_and_figures(tmp_path):
    "Seeds and budget rules: a panel per student and rule (its base once), pooled lengths, sizes from the student's own."
    r = RunDir(tmp_path/"run")
    groups = {}
    for student, base in (("xs", 14), ("s", 18)):
        _lab_eval(r, student, "base", base)
        for budget in ("steps", "tokens"):
            for seed in range(2):
                name = f"{student}.{budget}.s{seed}"
                groups[name] = {"student": student, "budget": budget, "seed": seed}
                for arm, c in (("short", base + 2 + seed), ("long", base - 3 + seed)): _lab_eval(r, name, arm, c, cut=1)
    fams = _by_family(load_results(r), groups)
    assert list(fams) == ["s (steps)", "s (tokens)", "xs (steps)", "xs (tokens)"]
    assert {a: len(v) for a, v in fams["s (steps)"].items()} == {"base": 1, "long": 2, "short": 2}
    page = build_report(r, students={"xs": 131_776, "s": 689_920}, groups=groups)
    rows = list(csv.DictReader(open(page.parent/"lengths_pooled.csv")))
    assert len(rows) == 4 * 2 and {row["seeds"] for row in rows} == {"2"}
    pooled = {(row["student"], row["budget"]): row for row in csv.DictReader(open(page.parent/"gaps_pooled.csv"))}
    assert pooled[("s", "steps")]["params"] == "689920" and float(pooled[("s", "steps")]["gap_long"]) == pytest.approx(-100 * 5 / 40)
    text = page.read_text()
    assert "## Lengths over seeds" in text and "![Learnability gaps](gaps_vs_size.png)" in text
    for fig in ("gaps_vs_size.png", "accuracy_by_arm.png", "lengths_by_arm.png"): assert (page.parent/fig).stat().st_size > 5000
