"""The MATH500 self-check, in one place: our grader against the Qwen2.5-Math harness on Qwen2.5-14B-Instruct's responses.

The harness scored the 500 responses 80.4 (402 correct); we score 80.8 (404): the two disagree on four known responses,
listed below with our verdict. tests/test_grading.py (grade_policies) and tests/test_evaluation.py (grade_responses)
both call `check_math500_14b`; nbs/07_evaluation.ipynb shows the same comparison as documentation.
"""
from pathlib import Path

from mixcot_nb.core import read_jsonl

MATH500_14B = "shortcot_qwen25_14b_instruct/math500.jsonl"
HARNESS_DISAGREEMENTS = {("(2,\\infty)", "[2, \\infty)"): False, ("10,\\!080", "10080"): True,        # (gold, our answer): our verdict
                         ("11,\\! 111,\\! 111,\\! 100", "11111111100"): True, ("3 \\pm 2 \\sqrt{2}", "3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}"): True}


def check_math500_14b(data:Path, verdicts:list[tuple[str, str | None, bool]]):
    "Our (gold, answer, correct) for the 500 responses of `data`/MATH500_14B differ from the harness's scores on the four known ones only."
    theirs = [r["score"][0] for r in read_jsonl(data/MATH500_14B)]
    assert len(verdicts) == len(theirs) == 500
    assert {(g, a): c for (g, a, c), t in zip(verdicts, theirs) if c != t} == HARNESS_DISAGREEMENTS
    assert sum(c for *_, c in verdicts) == 404 and sum(theirs) == 402
