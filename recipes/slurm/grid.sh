#!/bin/bash
# Submit a whole `mixcot run` experiment to Slurm: one job per unit not yet done, each asking for what it needs
# (CPU partition and memory for world, mix and report; tensor x data parallel GPUs for sampling and evaluation;
# the launcher's GPUs, nodes and memory for training) and waiting (afterok) on only the units it reads, so one failed
# unit holds back only what depends on it. Machines and partitions: the recipe's `resources`.
#   bash recipes/slurm/grid.sh recipes/paper/grid.yaml [DIR]      # scripts in DIR (default .slurm/<recipe name>)
# Check progress with `mixcot status <run_dir>`; after a failure, fix it and run this again: only what is not done is sent.
set -euo pipefail
RECIPE=$1
DIR=${2:-.slurm/$(basename "$RECIPE" .yaml)}
mixcot run "$RECIPE" --slurm "$DIR"
bash "$DIR/submit.sh"
