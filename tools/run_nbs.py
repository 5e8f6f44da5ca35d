"""Run notebooks top to bottom in a real Jupyter kernel, as a user would in JupyterLab.

`python tools/run_nbs.py [NOTEBOOK ...] [--save]`: every notebook under nbs/ by default; `--save` writes the outputs
back (run `nbdev-clean` afterwards). Cells marked `#| eval: false` are not run, as in nbdev. Cells flagged `#| gpu`
or `#| vllm` skip themselves on machines without one, through `%load_ext mixcot_nb.core`.
"""
import sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def never_runs(cell) -> bool:
    "A cell marked `#| eval: false`, which nbdev never executes (e.g. an exported `if __name__ == '__main__'` guard)."
    return cell.cell_type == "code" and any(l.replace(" ", "") == "#|eval:false" for l in cell.source.splitlines())


def run(path: Path, save: bool) -> None:
    nb = nbformat.read(path, as_version=4)
    skipped = {i: c.source for i, c in enumerate(nb.cells) if never_runs(c)}
    for i in skipped: nb.cells[i].source = ""
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for i, src in skipped.items(): nb.cells[i].source = src
    if save: nbformat.write(nb, path)


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--save"]
    paths = [Path(a) for a in args] or sorted(p for p in (ROOT/"nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    failed = []
    for p in paths:
        t = time.time()
        try: run(p, "--save" in sys.argv)
        except Exception as e:
            failed.append(p)
            print(f"FAILED {p}: {str(e)[-2000:]}", file=sys.stderr)
            continue
        print(f"ok {p.relative_to(ROOT) if p.is_absolute() else p} ({time.time() - t:.0f}s)")
    return 1 if failed else 0


if __name__ == "__main__": sys.exit(main())
