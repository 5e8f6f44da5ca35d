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

echo "== README.md is made from nbs/index.ipynb"
python tools/readme.py --check

echo "== nbdev-test (every notebook; tests/test_notebooks.py checks the flagged cells in a real Jupyter kernel)"
nbdev-test --n-workers 2

echo "== docs (nbdev notebook processing, HTML without Quarto)"
python tools/docs.py

echo "== pytest"
python -m pytest -q -m "not gpu and not vllm"
