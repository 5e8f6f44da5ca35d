#!/usr/bin/env bash
# Every check CI runs, in order. Run from the repository root with the project's environment active.
set -euo pipefail
snapshot() { find nbs mixcot_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' | sort | xargs sha256sum; }

echo "== nbdev-clean and nbdev-export change nothing"
before=$(snapshot)
nbdev-clean
nbdev-export
after=$(snapshot)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "nbdev-clean or nbdev-export changed the files above: run them and commit" >&2; exit 1
fi

echo "== no notebook holds Jupyter widget state (nbdev-clean keeps it; progress bars keep their text output)"
python - <<'PY'
import json, pathlib, sys
W = "application/vnd.jupyter.widget-view+json"
bad = [str(p) for p in sorted(pathlib.Path("nbs").rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts
       and (lambda d: "widgets" in d["metadata"] or any(W in o.get("data", {}) for c in d["cells"] for o in c.get("outputs", [])))(json.loads(p.read_text()))]
if bad: sys.exit("widget state in " + ", ".join(bad) + ": drop metadata.widgets and widget-view outputs (see CONTRIBUTING.md)")
PY

echo "== README.md is made from nbs/index.ipynb"
python tools/readme.py --check

echo "== ruff (pyflakes and syntax errors; rules in pyproject.toml)"
ruff check mixcot_nb tests bench tools recipes

echo "== the generated paper recipes are what recipes/paper/train/generate.py and recipes/paper/variants.py write"
python tools/check_recipes.py

echo "== nbdev-test (every notebook; tests/test_notebooks.py checks the flagged cells in a real Jupyter kernel)"
nbdev-test --n-workers 2

echo "== docs (nbdev notebook processing, HTML without Quarto)"
python tools/docs.py

echo "== pytest"
python -m pytest -q -m "not gpu and not vllm"
