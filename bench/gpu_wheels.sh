#!/usr/bin/env bash
# Download the wheels of bench/gpu_wheels.txt into bench/wheels/ for an offline GPU machine, and print their total size
# (the budget: 64 MiB). Core wheels for every Python in GPU_PYS; heavy ones (pandas, matplotlib...) for GPU_PY only.
#   bash bench/gpu_wheels.sh                       # GPU_PY=3.11 GPU_PYS="3.11 3.12 3.13" (trl 1.16 needs Python >= 3.11)
#   GPU_PY=3.12 bash bench/gpu_wheels.sh           # the image's Python is 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
GPU_PY=${GPU_PY:-3.11}
GPU_PYS=${GPU_PYS:-3.11 3.12 3.13}
W=bench/wheels
rm -rf "$W"; mkdir -p "$W"
core=$(mktemp); heavy=$(mktemp)
grep -v '^#' bench/gpu_wheels.txt | grep -v '# heavy' | sed 's/ *#.*//' | grep . > "$core"
grep '# heavy' bench/gpu_wheels.txt | sed 's/ *#.*//' > "$heavy"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for py in $GPU_PYS; do
  "$PIP" download -q --no-deps --only-binary=:all: "${plat[@]}" --python-version "$py" -d "$W" -r "$core"
done
"$PIP" download -q --no-deps --only-binary=:all: "${plat[@]}" --python-version "$GPU_PY" -d "$W" -r "$heavy"
rm -f "$core" "$heavy"
ls -1 "$W" | wc -l | xargs echo "wheels:"
du -cb "$W"/*.whl | tail -1 | awk '{printf "total: %.1f MiB (budget 64 MiB)\n", $1 / 1048576; exit ($1 > 64 * 1048576)}'
