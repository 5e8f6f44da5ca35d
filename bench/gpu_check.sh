#!/usr/bin/env bash
# For a machine with a CUDA GPU: every `gpu`- and `vllm`-flagged check, then vLLM offline against the transformers
# engine on the same GPU and the same tiny local model (tokens per second). Prints each figure and a summary; exits
# non-zero if any step failed.
#
#   bash bench/gpu_check.sh            # with the environment's python3
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh
#
# The environment needs mixcot with its test tools (pip install -e ".[dev,api]"), a CUDA build of torch and, for the
# vLLM parts, vLLM itself (pip install -e ".[vllm]"). Nothing is downloaded: the model is built locally, the data is
# ../shared/data (or $MIXCOT_DATA). Results: bench/results/backends_gpu.json.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-$(mktemp -d)}
status=0
summary=()

step() {   # step NAME CMD...: run, time and record one check
  local name=$1; shift
  echo; echo "== $name"
  local t0=$(date +%s) rc=0
  "$@" || rc=$?
  if [ $rc -eq 0 ]; then summary+=("ok      $name ($(( $(date +%s) - t0 ))s)")
  else summary+=("FAILED  $name (exit $rc, $(( $(date +%s) - t0 ))s)"); status=1; fi
}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
"$PY" - <<'PY'
import importlib
for name in ("torch", "transformers", "vllm", "openai", "nbdev", "mixcot_nb"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:13s}{getattr(mod, '__version__', '')}")
    except Exception as e: print(f"{name:13s}MISSING ({type(e).__name__}: {str(e)[:80]})")
import torch
print("cuda         ", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
if ! "$PY" -c "import mixcot_nb.backends" 2>/dev/null; then
  echo "mixcot is not importable with $PY: install it first (pip install -e '.[dev,api]')" >&2; exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA GPU visible to torch: nothing to check here" >&2; exit 2
fi
"$PY" -c "import vllm" 2>/dev/null || echo "note: vllm is not importable: its cells and tests will be skipped, its figure left out"

if "$PY" -c "import nbdev" 2>/dev/null; then
  step "nbdev-test --flags 'gpu vllm'" "$PY" -c "from nbdev.test import nbdev_test; nbdev_test(flags='gpu vllm', n_workers=1)"
else summary+=("skipped nbdev-test (nbdev not installed)"); fi
step "pytest -m 'gpu or vllm'" "$PY" -m pytest -q -rs -m "gpu or vllm" tests
step "throughput: vLLM offline vs transformers on the GPU" "$PY" bench/backends.py --gpu

echo; echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
