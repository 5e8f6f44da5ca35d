#!/bin/bash
# Submit a whole `mixcot run` experiment to Slurm: one array job per stage, one task per unit, each stage waiting
# for the previous one (afterok). Units already done under the current recipe are left out.
#   bash recipes/slurm/grid.sh recipes/paper/grid.yaml
# Check progress with `mixcot status <run_dir>`; resubmitting after a failure runs only what is not done.
set -euo pipefail
RECIPE=$1
mkdir -p logs .slurm-units
dep=""
for stage in sample mix train eval report; do
  list=.slurm-units/$stage.txt
  mixcot run "$RECIPE" --plan --only "$stage*" | awk -F'\t' '$2 != "done" {print $1}' > "$list"
  n=$(wc -l < "$list")
  [ "$n" -eq 0 ] && continue
  job=$(sbatch --parsable --array=0-$((n - 1)) ${dep:+--dependency=afterok:$dep} \
        --export=ALL,RECIPE="$RECIPE",UNITS="$list" recipes/slurm/grid.sbatch)
  echo "$stage: $n units, job $job"
  dep=$job
done
