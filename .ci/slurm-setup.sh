#!/usr/bin/env bash
# CI: install (if missing) and start the local single-node SLURM cluster with accounting,
# then prove it runs a job and records it. Idempotent; run it before the tests.
#
#   .ci/slurm-setup.sh                 # then: python -m pytest -m slurm
#
# Needs root (or passwordless sudo) and apt. State lives in ${POOLBENCH_SLURM_DIR:-/tmp/poolbench-slurm};
# slurm/local-cluster.sh stop (or wipe) takes it down again.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s%N)
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "slurm-setup: needs root or sudo" >&2; exit 1; }
    as_root=(sudo -n --preserve-env=POOLBENCH_SLURM_DIR)
fi
"${as_root[@]}" slurm/local-cluster.sh start </dev/null
# A job through the whole path: sbatch -> slurmctld -> slurmd -> sacct (polled here: sbatch
# --wait sleeps 2, 4, 8 s between checks).
out="$(mktemp -d)"
job="$(sbatch --parsable --time=1 --job-name=ci-smoke --output="$out/%j.out" \
       --wrap 'echo ok-from-$SLURM_JOB_ID' </dev/null)"
state=""
for _ in $(seq 1 300); do
    state="$(sacct -n -X -P -j "$job" -o State 2>/dev/null | head -n 1)"
    case "$state" in COMPLETED|FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
    sleep 0.2
done
[ "$state" = COMPLETED ] || { echo "slurm-setup: smoke job $job: sacct state '$state'" >&2; exit 1; }
grep -q "ok-from-$job" "$out/$job.out" || { echo "slurm-setup: smoke job $job wrote no output" >&2; exit 1; }
rm -rf "$out"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "slurm-setup: cluster up, smoke job $job completed and accounted, in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
