#!/usr/bin/env bash
# Reproduce the paper's grid end to end: train every run, then build tables and figures.
#
# Not wired up yet: the training stack and grid experiments land with later issues.
# Until then this prints what it will do and runs the pooling benchmark, the part of the
# pipeline that exists today.
set -euo pipefail
cd "$(dirname "$0")"
cat <<'MSG'
reproduce_results.sh will:
  1. train the paper grid (8 methods x {cifar100, tinyimagenet} x {vgg16, resnet18} x 3 seeds)
     and the K x T ablation, locally or as SLURM job arrays (--launcher slurm);
  2. build the paper's tables and figures from the finished runs' results.json files.
Today only the pooling library exists; running its benchmark instead:
MSG
exec scripts/venv-run poolbench-bench latency --quick "$@"
