#!/usr/bin/env bash
# The vLLM checks, in the second environment (tools/setup_vllm_env.sh): vLLM's offline engine and a real vLLM
# OpenAI-compatible server on 127.0.0.1 (pytest -m vllm), and every notebook cell flagged `vllm`.
set -euo pipefail
VENV=${1:-.venv-vllm}
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-$(mktemp -d)}
echo "== vllm: pytest -m vllm"
"$VENV/bin/python" -m pytest -q -m vllm tests/test_vllm.py
echo "== vllm: nbdev-test --flags vllm"
PATH="$(cd "$VENV/bin" && pwd):$PATH" nbdev-test --flags vllm --n-workers 1 --file-re '^0[3-4]_.*\.ipynb$'
