"""Grading throughput and agreement: `grade_many` (the project's parallel grader) against a plain sequential loop of
math-verify alone, on the 800 + 500 + 250 real responses in ../shared/data; and agreement of mixcot (strict and lenient
policies) and plain math-verify with the public grader test suites in tests/data/grader_suites.

Both sides get the same extracted answers (`extract_answer`). The baseline loop is `math_verify_alone(gold, pred)`:
`verify(parse("$gold$"), parse("$pred$"))` in this process, one item after another, timed without the extraction;
`grade_many` is timed end to end (extraction, rules, pool start-up, math-verify in workers), under the strict policy
(the paper's rule, the default) and, as `grade_policies`, under both policies at once (what `mixcot eval` and
`mixcot grade` run). All arms run interleaved, so background load hits each alike; the best of `--repeat` is kept.
Where the verdicts differ, the pair is looked up in the hand-labelled `EQUIV_CASES` to say which side is right.

Run: nice -n 10 python bench/grading.py [--data DIR] [--workers N]   (writes bench/results/grading.json)
"""
import argparse, json, logging, os, platform, time
from pathlib import Path

from mixcot_nb.core import example_data_dir
from mixcot_nb.grading import (extract_answer, grade_many, grade_policies, grade_suite_case, hendrycks_is_equiv,
                               math_verify_plain, read_grader_suite, summarise, warm_up)
from mixcot_nb.testing import EQUIV_CASES, math_verify_alone, read_harness_jsonl

ROOT = Path(__file__).resolve().parents[1]
FILES = {"shortcot_math_x8": "shortcot_qwen25_math_rm_maj_example/math_cot_100.jsonl",
         "shortcot_14b": "shortcot_qwen25_14b_instruct/math500.jsonl",
         "longcot_style": "longcot_style_math500/math500_even.jsonl"}


def suite_agreement() -> dict:
    "Per kind of case (pair, response): how many public-suite cases each grader gets right, out of n."
    cases = [c for f in sorted((ROOT/"tests"/"data"/"grader_suites").glob("*.jsonl")) for c in read_grader_suite(f)]
    graders = {"mixcot_strict": lambda c: grade_suite_case(c, "strict", timeout=20), "mixcot_lenient": lambda c: grade_suite_case(c, "lenient", timeout=20),
               "math_verify": lambda c: math_verify_plain(c["gold"], c["pred"])}
    got = {k: [f(c) == c["expected"] for c in cases] for k, f in graders.items()}
    return {kind: {"n": sum(c["kind"] == kind for c in cases),
                   **{k: sum(ok for ok, c in zip(v, cases) if c["kind"] == kind) for k, v in got.items()}}
            for kind in ("pair", "response")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder with the response files (default: $MIXCOT_DATA or ../shared/data)")
    ap.add_argument("--workers", type=int, default=None, help="grade_many workers (default: one per CPU)")
    ap.add_argument("--repeat", type=int, default=3, help="time each side this many times and keep the best")
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"/"grading.json"))
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    data = Path(args.data) if args.data else example_data_dir()
    rows = [dict(r, file=k) for k, f in FILES.items() for r in read_harness_jsonl(data/f)]
    n = len(rows)
    warm_up()   # sympy's lazy imports, paid once by either side; done before both timings

    t0 = time.perf_counter()
    answers = [extract_answer(r["response"]) for r in rows]
    t_extract = time.perf_counter() - t0

    runs = {"math_verify_loop": [], "grade_many": [], "grade_policies": [], "grade_many_1_worker": []}
    for _ in range(args.repeat):        # interleaved, so background load hits every side alike; best time kept
        t0 = time.perf_counter()
        mv = [a is not None and math_verify_alone(r["gold"], a) for r, a in zip(rows, answers)]
        runs["math_verify_loop"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        ours = grade_many(rows, workers=args.workers, progress=False)
        runs["grade_many"].append(time.perf_counter() - t0)
        assert [v.answer for v in ours] == answers

        t0 = time.perf_counter()
        both = grade_policies(rows, workers=args.workers, progress=False)
        runs["grade_policies"].append(time.perf_counter() - t0)
        assert both["strict"] == ours

        t0 = time.perf_counter()
        ours1 = grade_many(rows, workers=1, progress=False)    # same rules, no parallelism: what the rules alone buy
        runs["grade_many_1_worker"].append(time.perf_counter() - t0)
        assert [v.correct for v in ours1] == [v.correct for v in ours]
    t_mv, t_ours, t_both, t_ours1 = (min(runs[k]) for k in runs)
    hend = [a is not None and hendrycks_is_equiv(r["gold"], a) for r, a in zip(rows, answers)]

    labels = {(g, p): eq for g, p, eq, _ in EQUIV_CASES}
    diffs = []
    for r, a, m, v in zip(rows, answers, mv, ours):
        if m == v.correct: continue
        label = labels.get((r["gold"], a))
        who = "unlabelled" if label is None else "math-verify wrong" if label != m else "ours wrong"
        diffs.append(dict(file=r["file"], gold=r["gold"], pred=a, math_verify=m, ours=v.correct,
                          decided_by=v.decided_by, label=label, verdict=who))

    by_file = {k: summarise([v for r, v in zip(rows, ours) if r["file"] == k]) for k in FILES}
    res = dict(
        n=n, cpus=os.cpu_count(), workers=args.workers or os.cpu_count(), python=platform.python_version(),
        extract_s=round(t_extract, 3),
        math_verify_loop=dict(seconds=round(t_mv, 3), items_per_s=round(n / t_mv, 1), calls=sum(a is not None for a in answers),
                              accuracy=round(sum(mv) / n, 4)),
        grade_many=dict(seconds=round(t_ours, 3), items_per_s=round(n / t_ours, 1), **summarise(ours)),
        grade_policies=dict(seconds=round(t_both, 3), items_per_s=round(n / t_both, 1), lenient=summarise(both["lenient"])),
        grade_many_1_worker=dict(seconds=round(t_ours1, 3), items_per_s=round(n / t_ours1, 1)),
        hendrycks=dict(accuracy=round(sum(hend) / n, 4), agreement_with_ours=round(sum(h == v.correct for h, v in zip(hend, ours)) / n, 4)),
        speedup=round(t_mv / t_ours, 2), speedup_both_policies=round(t_mv / t_both, 2),
        suites=suite_agreement(),
        speedup_incl_extraction=round((t_mv + t_extract) / t_ours, 2),
        agreement=round(1 - len(diffs) / n, 4),
        differences={w: sum(d["verdict"] == w for d in diffs) for w in ["math-verify wrong", "ours wrong", "unlabelled"]},
        repeat=args.repeat, all_runs_s={k: [round(t, 3) for t in v] for k, v in runs.items()},
        difference_list=diffs, by_file=by_file)

    print(f"{n} responses, {res['cpus']} CPUs, extraction {t_extract:.2f}s (shared by both); best of {args.repeat} runs")
    print(f"{'grader':34} {'seconds':>8} {'items/s':>8} {'accuracy':>9}")
    print(f"{'math-verify alone, sequential':34} {t_mv:8.2f} {n/t_mv:8.1f} {sum(mv)/n:9.4f}")
    print(f"{'grade_many, ' + str(res['workers']) + ' workers':34} {t_ours:8.2f} {n/t_ours:8.1f} {res['grade_many']['accuracy']:9.4f}")
    print(f"{'grade_policies (strict + lenient)':34} {t_both:8.2f} {n/t_both:8.1f} {summarise(both['lenient'])['accuracy']:9.4f} (lenient)")
    print(f"{'grade_many, 1 worker':34} {t_ours1:8.2f} {n/t_ours1:8.1f} {'(same)':>9}")
    print(f"{'(hendrycks_is_equiv, for reference)':34} {'':8} {'':8} {sum(hend)/n:9.4f}")
    print(f"speedup {res['speedup']}x (with extraction on the baseline's side: {res['speedup_incl_extraction']}x; "
          f"both policies: {res['speedup_both_policies']}x)")
    print("public grader suites, cases agreeing with the expected verdict:")
    for kind, row in res["suites"].items(): print(f"  {kind:9} " + ", ".join(f"{k} {v}" for k, v in row.items()))
    print(f"verdict agreement {res['agreement']:.4f}; {len(diffs)} differences: {res['differences']}")
    for d in diffs: print(f"  {d['verdict']:18} gold={d['gold']!r} pred={d['pred']!r} math-verify={d['math_verify']} ours={d['ours']} ({d['decided_by']})")
    print("decided by:", res["grade_many"]["by"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
