#!/usr/bin/env bash
# Reproduce the paper: train its grid and K x T ablation, then build every table and figure.
#
#   ./reproduce_results.sh                      # paper_grid + ablation_kt, locally, one run at a time
#   ./reproduce_results.sh --launcher slurm     # the same as SLURM job arrays (conf/hydra/launcher/slurm.yaml)
#   ./reproduce_results.sh --smoke              # the grid's shape on generated fixture data, CPU, minutes
#   ./reproduce_results.sh --dry-run [--smoke]  # list the runs and their status; train nothing
#   ./reproduce_results.sh --smoke trainer.max_epochs=3   # extra Hydra overrides apply to every run
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
        --launcher) shift; launcher="${1:?--launcher needs local or slurm}" ;;
        --launcher=*) launcher="${1#--launcher=}" ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "reproduce_results.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) overrides+=("$1") ;;
    esac
    shift
done
case "$launcher" in
    ""|local) launcher_args=() ;;
    slurm) launcher_args=("hydra/launcher=slurm") ;;
    *) echo "reproduce_results.sh: --launcher must be local or slurm, got '$launcher'" >&2; exit 2 ;;
esac

run() { scripts/venv-run "$@"; }
outputs="${POOLBENCH_OUTPUTS:-outputs}"
if [ "$smoke" = 1 ]; then
    experiments=(smoke)
    if [ ! -d "$outputs/fixtures/cifar-100-python" ] || [ ! -d "$outputs/fixtures/tiny-imagenet-200" ]; then
        echo "== generating fixture datasets in $outputs/fixtures"
        rm -rf "$outputs/fixtures"
        run poolbench-fixtures "$outputs/fixtures"
    fi
else
    experiments=(paper_grid ablation_kt)
fi
overrides+=("paths.outputs=$(cd "$outputs" 2>/dev/null && pwd || echo "$PWD/$outputs")")

for exp in "${experiments[@]}"; do
    echo "== $exp: $(run poolbench-grid "$exp" "${overrides[@]}" --summary)"
    if [ "$dry" = 1 ]; then
        run poolbench-grid "$exp" "${overrides[@]}"
        continue
    fi
    start=$(date +%s)
    run poolbench-train -m "experiment=$exp" "${launcher_args[@]}" "${overrides[@]}"
    echo "== $exp: $(run poolbench-grid "$exp" "${overrides[@]}" --summary) ($(( $(date +%s) - start )) s)"
done
[ "$dry" = 1 ] && exit 0

for exp in "${experiments[@]}"; do
    echo "== tables and figures for $exp"
    run poolbench-results "$outputs/$exp"
done
echo "== done: tables and figures are under ${experiments[*]/#/$outputs/}/report/"
