"Report: a synthetic run directory with known numbers, per-item records, figures; the paper's tables recomputed."
import csv
from pathlib import Path

import pytest

from mixcot_nb.core import RunDir, write_json, write_jsonl
from mixcot_nb.evaluation import EvalRecord, summarise_records
from mixcot_nb.report import (PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, accuracy_table, build_report, gain_table,
                              gap_table, load_results, paper_run)

# student -> arm -> benchmark -> correct out of N problems (one sample each)
N = {"math500": 40, "gsm8k": 50}
KNOWN = {"tiny-s": {"long": {"math500": 10, "gsm8k": 20}, "short": {"math500": 16, "gsm8k": 25},
                    "large": {"math500": 12, "gsm8k": 20}, "small": {"math500": 14, "gsm8k": 30},
                    "mix-long": {"math500": 18, "gsm8k": 30}, "mix-large": {"math500": 20, "gsm8k": 25}},
         "tiny-l": {"long": {"math500": 30, "gsm8k": 40}, "short": {"math500": 20, "gsm8k": 35},
                    "large": {"math500": 24, "gsm8k": 40}, "small": {"math500": 24, "gsm8k": 40}}}
TOKENS = {"long": 300, "short": 60, "large": 120, "small": 80, "mix-long": 100, "mix-large": 90}


def _write_eval(d: Path, arm: str, counts: dict, records: bool = True, params: int | None = None):
    benches = {}
    for b, c in counts.items():
        recs = [EvalRecord(benchmark=b, problem_id=f"{b}/p{i}", sample_idx=0, response="x", gold="1",
                           answer="1" if i < c else "2", correct=i < c, decided_by="exact" if i < c else "mismatch",
                           prompt_tokens=10, completion_tokens=TOKENS[arm] + i, finish_reason="length" if i == 0 else "stop")
                for i in range(N[b])]
        if records: write_jsonl(d/f"{b}.jsonl", recs)
        benches[b] = summarise_records(recs, expected=N[b])
    write_json(d/"summary.json", {"model": f"m-{arm}", "num_parameters": params, "benchmarks": benches})


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
    with pytest.raises(ValueError, match=r"s__long/summary.json: field 'benchmarks'"): load_results(r)
    with pytest.raises(FileNotFoundError, match="no evaluation summaries"): build_report(tmp_path/"empty")
