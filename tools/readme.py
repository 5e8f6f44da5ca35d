"""Make README.md from nbs/index.ipynb (nbdev-readme needs Quarto): `python tools/readme.py [--check]`.

Hidden cells are dropped and nbdev directives stripped; code cells keep their saved outputs.
"""
import re, sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent
FOOTER = "\n<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n"


def render() -> str:
    nb = nbformat.read(ROOT/"nbs"/"index.ipynb", as_version=4)
    cells = []
    for c in nb.cells:
        if re.search(r"^#\|\s*hide\b", c.source, re.M): continue
        if c.cell_type == "code": c.source = re.sub(r"^#\|.*\n?", "", c.source, flags=re.M).strip()
        cells.append(c)
    nb.cells = cells
    nb.metadata["language_info"] = {"name": "python"}   # code blocks fenced as python
    md, _ = MarkdownExporter().from_notebook_node(nb)
    return re.sub(r"\n{3,}", "\n\n", md).strip() + "\n"


def main() -> int:
    text, readme = render(), ROOT/"README.md"
    if "--check" in sys.argv:
        body = readme.read_text() if readme.exists() else ""
        if body != text + FOOTER:
            print("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text + FOOTER)
    return 0


if __name__ == "__main__": sys.exit(main())
