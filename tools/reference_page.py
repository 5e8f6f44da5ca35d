"""Write the recipe reference page `nbs/recipes_reference.ipynb` from the recipe models: `python tools/reference_page.py [--check]`.

The page's one code cell calls `mixcot_nb.cli.recipe_reference()`; its saved output (what the docs show) is refreshed here,
and `--check` fails when the saved output differs from what the models say now.
"""
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT/"nbs"/"recipes_reference.ipynb"
INTRO = """Every recipe is YAML read into one of the pydantic models below, validated field by field: an unknown key, a wrong
type or a value out of range fails with the file and the key path named. Nested settings are models of their own
(linked). `mixcot train`, `eval` and `run` take `--set KEY.PATH=VALUE` to change one field without editing a file,
validated the same way. `sft` and `train.sft` take TRL's `SFTConfig` fields verbatim; `sampling` takes vLLM's
sampling fields. This page is generated from the models (`tools/reference_page.py`); a test keeps it current."""


def build() -> nbformat.NotebookNode:
    "The page: front matter, an introduction, and the reference as the saved output of one hidden code cell."
    from mixcot_nb.cli import recipe_reference
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    cell = nbformat.v4.new_code_cell("#| echo: false\nfrom IPython.display import Markdown\nfrom mixcot_nb.cli import recipe_reference\nMarkdown(recipe_reference())")
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/markdown": recipe_reference(), "text/plain": "<IPython.core.display.Markdown object>"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Recipe reference\n\n> Every key of every recipe: type, default and meaning, from the models themselves"),
                nbformat.v4.new_markdown_cell(INTRO), cell]
    for i, c in enumerate(nb.cells): c.id = f"recipes{i:04d}"
    return nb


def main() -> int:
    nb = build()
    if "--check" in sys.argv:
        old = nbformat.read(PAGE, as_version=4) if PAGE.exists() else None
        if old is None or old.cells[-1].outputs[0]["data"]["text/markdown"] != nb.cells[-1].outputs[0]["data"]["text/markdown"]:
            print(f"{PAGE.relative_to(ROOT)} is out of date with the recipe models: run `python tools/reference_page.py`", file=sys.stderr)
            return 1
        return 0
    nbformat.write(nb, PAGE)
    return 0


if __name__ == "__main__": sys.exit(main())
