#!/usr/bin/env bash
# One command for an offline CUDA GPU machine (prepared for one H200): install the wheels this repository brings
# (bench/wheels, made by `bash bench/gpu_wheels.sh`; only those the image lacks), then, within about 10 minutes:
#   1. pytest -m gpu                          the gpu-flagged tests
#   2. nbdev-test --flags gpu                 the notebooks with gpu-flagged cells (00, 03, 06, 07), gpu cells on
#   3. python bench/training.py --gpu         `mixcot train` (run_training) vs a bare TRL script on a model of
#                                             Qwen2.5-0.5B's shape (random weights), bf16: tokens/s, MFU vs 989 TFLOPS;
#                                             and the transformers engine's generation tokens/s
#   4. bench/backends.py --gpu                vLLM vs transformers, only where vLLM is installed
# Prints each step's result and a summary; exits non-zero if a step failed. Results: bench/results/*_gpu.json.
#
#   bash bench/gpu_check.sh                   # on the GPU machine (PYTHON=python3 by default)
#   PYTHON=/path/to/image-like/python bash bench/gpu_check.sh --cpu-dry   # without a GPU: the install, the imports and
#                                             the benchmark's tiny CPU path
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0; [ "${1:-}" = "--cpu-dry" ] && DRY=1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MIXCOT_DATA=${MIXCOT_DATA:-$PWD/../shared/data}
[ -d "$MIXCOT_DATA" ] || export MIXCOT_DATA="$PWD/tests/data"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0; summary=(); T0=$(date +%s)

step() {   # step NAME TIMEOUT CMD...: run with a time limit, record ok/FAILED and seconds
  local name=$1 limit=$2; shift 2
  echo; echo "== $name (limit ${limit}s)"
  local t0=$(date +%s) rc=0
  timeout "$limit" "$@" || rc=$?
  if [ $rc -eq 0 ]; then summary+=("ok      $name ($(( $(date +%s) - t0 ))s)")
  else summary+=("FAILED  $name (exit $rc, $(( $(date +%s) - t0 ))s)"); status=1; fi
}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"

echo; echo "== install: the wheels the image lacks, from bench/wheels (no network)"
missing=$("$PY" - <<'PY'
import importlib.metadata as m, re
for line in open("bench/gpu_wheels.txt"):
    spec = line.split("#")[0].strip()
    if not spec: continue
    name = re.split(r"[=<>]", spec)[0]
    try: m.version(name)
    except m.PackageNotFoundError: print(spec)
PY
)
if [ -z "$missing" ]; then echo "nothing to install"
elif [ ! -d bench/wheels ]; then echo "bench/wheels/ is missing: run 'bash bench/gpu_wheels.sh' where there is network" >&2; exit 2
else "$PY" -m pip install -q --no-index --no-deps --find-links bench/wheels $missing || { echo "install failed" >&2; exit 2; }
fi
"$PY" -c "import mixcot_nb.training, mixcot_nb.evaluation, mixcot_nb.pipeline, trl, datasets; print('mixcot imports: ok')" || exit 2

if [ $DRY -eq 1 ]; then
  step "benchmark, tiny CPU path" 600 "$PY" bench/training.py --gpu --tiny --steps 5 --repeats 1 --out bench/results/training_gpu_dry.json
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA GPU visible to torch" >&2; exit 2; }
  step "pytest -m gpu" 180 "$PY" -m pytest -q -rs -m gpu -p no:cacheprovider tests
  step "nbdev-test --flags gpu (00, 03, 06, 07)" 300 "$PY" -c "
from nbdev.test import nbdev_test
nbdev_test(flags='gpu', n_workers=4, file_re='^(00|03|06|07)_')"
  step "benchmark: mixcot train vs bare TRL, Qwen2.5-0.5B shape, bf16; generation" 240 "$PY" bench/training.py --gpu --steps 40 --repeats 2
  if "$PY" -c "import vllm" 2>/dev/null; then step "vLLM offline vs transformers" 240 "$PY" bench/backends.py --gpu
  else summary+=("skipped vLLM vs transformers (vllm is not in the image)"); fi
fi
echo; echo "== summary ($(( $(date +%s) - T0 ))s)"
printf '%s\n' "${summary[@]}"
exit $status
