#!/usr/bin/env bash
# Reproduce the paper: train its grid and K x T ablation, then build every table and figure.
#
#   ./reproduce_results.sh                      # paper_grid + ablation_kt, locally, one run at a time
#   ./reproduce_results.sh --launcher slurm     # the same as SLURM job arrays (conf/hydra/launcher/slurm.yaml)
#   ./reproduce_results.sh --launcher local_cluster --smoke   # SLURM on slurm/local-cluster.sh's node (no GPU)
#   ./reproduce_results.sh --smoke              # the grid's shape on generated fixture data, CPU, minutes
#   ./reproduce_results.sh --dry-run [--smoke]  # list the runs and their status; train nothing
#   ./reproduce_results.sh --smoke trainer.max_epochs=3   # extra Hydra overrides apply to every run
#   ./reproduce_results.sh --launcher slurm hydra.launcher.timeout_min=720   # hydra.* ones to the launcher
#
# Idempotent: finished runs are skipped, interrupted ones resume from their last.ckpt.
# Sets up its own virtualenv (scripts/venv-run) on first use.
set -euo pipefail
cd "$(dirname "$0")"

launcher=""
smoke=0
dry=0
overrides=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --dry-run) dry=1 ;;
        --launcher) shift; launcher="${1:?--launcher needs a name: local, slurm, local_cluster}" ;;
        --launcher=*) launcher="${1#--launcher=}" ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "reproduce_results.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) overrides+=("$1") ;;
    esac
    shift
done
# local: Hydra's basic launcher, one run after another; any other name is a config in
# conf/hydra/launcher/ (slurm: a cluster's GPUs; local_cluster: slurm/local-cluster.sh's node).
case "$launcher" in
    ""|local) launcher_args=() ;;
    *)
        if [ ! -f "conf/hydra/launcher/$launcher.yaml" ]; then
            choices="$(cd conf/hydra/launcher && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')"
            echo "reproduce_results.sh: --launcher must be local or one of: $choices(got '$launcher')" >&2
            exit 2
        fi
        launcher_args=("hydra/launcher=$launcher") ;;
esac

run() { scripts/venv-run "$@"; }
outputs="${POOLBENCH_OUTPUTS:-outputs}"
if [ "$smoke" = 1 ]; then
    experiments=(smoke)
    # Writes them if missing, cut short or written with other settings; keeps them otherwise.
    echo "== fixture datasets in $outputs/fixtures"
    run poolbench-fixtures "$outputs/fixtures"
else
    experiments=(paper_grid ablation_kt)
fi
overrides+=("paths.outputs=$(cd "$outputs" 2>/dev/null && pwd || echo "$PWD/$outputs")")
# Overrides of Hydra itself (hydra.launcher.timeout_min=..., hydra/launcher=...) go to
# poolbench-train only: they never change a run's directory, and poolbench-grid composes
# without the launcher.
grid_overrides=()
for o in "${overrides[@]}"; do
    case "$o" in hydra.*|hydra/*|+hydra.*|++hydra.*|~hydra.*) ;; *) grid_overrides+=("$o") ;; esac
done

for exp in "${experiments[@]}"; do
    summary="$(run poolbench-grid "$exp" "${grid_overrides[@]}" --summary)"
    echo "== $summary"
    if [ "$dry" = 1 ]; then
        run poolbench-grid "$exp" "${grid_overrides[@]}"
        continue
    fi
    start=$(date +%s)
    # Each run prints "[poolbench] run i/N: <run dir>" (N from here).
    POOLBENCH_SWEEP_SIZE="$(run poolbench-grid "$exp" "${grid_overrides[@]}" --count)" \
        run poolbench-train -m "experiment=$exp" "${launcher_args[@]}" "${overrides[@]}"
    summary="$(run poolbench-grid "$exp" "${grid_overrides[@]}" --summary)"
    echo "== $summary ($(( $(date +%s) - start )) s)"
done
[ "$dry" = 1 ] && exit 0

for exp in "${experiments[@]}"; do
    echo "== tables and figures for $exp"
    run poolbench-results "$outputs/$exp"
done
echo "== done: tables and figures are under ${experiments[*]/#/$outputs/}/report/"
