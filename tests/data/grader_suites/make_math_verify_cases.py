"""Rebuild math_verify_cases.jsonl from a checkout of huggingface/Math-Verify (the commit in README.md).

Reads the `@pytest.mark.parametrize` tables of the test files named in SELECT with `ast` (no code from them is run),
keeps the rows of tests that call math-verify with its default comparison settings, and writes one JSON line per
(gold, pred, expected) row. Run: python make_math_verify_cases.py /path/to/Math-Verify
"""
import ast, json, re, sys
from pathlib import Path

# test file -> test functions kept (tests with non-default precision, strictness, set-relation or string configs are left out)
SELECT = {"tests/test_all.py": ["test_number_extraction", "test_simple_fraction_notation", "test_sets_handling",
                                "test_latex_notation", "test_percent_notation", "test_latex_notation_math",
                                "test_relations_math", "test_matrix_extraction", "test_complex_math_expressions",
                                "test_math_extraction_edge_cases", "test_math_extraction_additional_cases",
                                "test_set_rel_assymetry"],
          "tests/test_numina_cases.py": ["test_numina_cases"], "tests/test_open_thoughts.py": ["test_open_thoughts"],
          "tests/test_boxed.py": ["test_boxed"], "tests/test_yujianll.py": ["test_string_extraction"]}


def kind(pred:str) -> str:
    "'response' when `pred` is text around an answer (a box, or a word outside math and LaTeX commands), else 'pair'."
    if re.search(r"\\(?:boxed|fbox)", pred): return "response"
    bare = re.sub(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]", " ", pred, flags=re.S)
    bare = re.sub(r"\\[A-Za-z]+(?:\{[^{}]*\})?", " ", bare)
    return "response" if re.search(r"[A-Za-z]{3,}", bare) else "pair"


def rows_of(path:Path, wanted:list[str]):
    tree = ast.parse(path.read_text())
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or fn.name not in wanted: continue
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"): continue
            names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
            for i, row in enumerate(ast.literal_eval(dec.args[1])):
                r = dict(zip(names, row))
                if r.get("precision", 6) != 6 or r.get("allow_set_relation_comp", False): continue
                expected = r.get("expected", r.get("result"))
                yield dict(test=fn.name, row=i, gold=r["gold"], pred=r["pred"], expected=bool(expected))


def main(repo:str):
    repo, out = Path(repo), Path(__file__).with_name("math_verify_cases.jsonl")
    lines = []
    for f, wanted in SELECT.items():
        for r in rows_of(repo/f, wanted):
            lines.append(dict(id=f"math_verify/{Path(f).stem}::{r['test']}[{r['row']}]", source=f"huggingface/Math-Verify {f}",
                              kind=kind(r["pred"]), gold=r["gold"], pred=r["pred"], expected=r["expected"]))
    out.write_text("".join(json.dumps(l, ensure_ascii=False) + "\n" for l in lines))
    print(f"{len(lines)} cases ({sum(l['kind'] == 'response' for l in lines)} responses) -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
