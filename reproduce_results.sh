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

has_pool_override() {
    local o
    for o in "${overrides[@]}"; do case "$o" in pool=*|+pool=*|++pool=*) return 0 ;; esac; done
    return 1
}
# The smoke's runs are single-threaded (threads: 1), so with the local launcher it trains
# them as two sweeps side by side, each over half of the experiment's methods (every other
# one in the list: the costlier learned blends come last, and so split evenly), one per
# core. Their lines interleave; each names its half ("[1/2]"). Killing the script stops
# both (and finished runs are kept: run it again to resume).
train_two_halves() {
    local exp="$1" count="$2" pools pids=() status=0 i j
    pools="$(run python -c "from omegaconf import OmegaConf; \
print(OmegaConf.load('conf/experiment/$exp.yaml').hydra.sweeper.params.pool)")"
    IFS=, read -r -a pools <<< "$pools"
    trap 'kill "${pids[@]}" 2>/dev/null' EXIT
    trap 'exit 130' INT TERM
    for i in 1 2; do
        local mine=()
        for (( j = i - 1; j < ${#pools[@]}; j += 2 )); do mine+=("${pools[$j]}"); done
        local list
        list="$(IFS=,; echo "${mine[*]}")"
        # (unbuffered: through the pipe, each line shows when it is written)
        PYTHONUNBUFFERED=1 POOLBENCH_SWEEP_SIZE=$(( count * ${#mine[@]} / ${#pools[@]} )) \
            scripts/venv-run poolbench-train -m "experiment=$exp" "pool=$list" "${overrides[@]}" \
            > >(sed -u "s/^/[$i\/2] /") 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || status=$?; done
    trap - EXIT INT TERM
    return "$status"
}

for exp in "${experiments[@]}"; do
    summary="$(run poolbench-grid "$exp" "${grid_overrides[@]}" --summary)"
    echo "== $summary"
    if [ "$dry" = 1 ]; then
        run poolbench-grid "$exp" "${grid_overrides[@]}"
        continue
    fi
    start=$(date +%s)
    count="$(run poolbench-grid "$exp" "${grid_overrides[@]}" --count)"
    if [ "$smoke" = 1 ] && [ -z "$launcher" ] && ! has_pool_override; then
        train_two_halves "$exp" "$count"
    else
        # Each run prints "[poolbench] run i/N: <run dir>" (N from here).
        POOLBENCH_SWEEP_SIZE="$count" \
            run poolbench-train -m "experiment=$exp" "${launcher_args[@]}" "${overrides[@]}"
    fi
    echo "== $exp: trained in $(( $(date +%s) - start )) s"
done
[ "$dry" = 1 ] && exit 0

for exp in "${experiments[@]}"; do
    # The grid's status counts (seconds of Hydra compositions, one per method, model and
    # dataset) are taken on one core while the report is drawn on another; printed after it.
    counts="$(mktemp)"
    run poolbench-grid "$exp" "${grid_overrides[@]}" --summary > "$counts" &
    counting=$!
    echo "== tables and figures for $exp"
    run poolbench-results "$outputs/$exp" || {
        status=$?; kill "$counting" 2>/dev/null; rm -f "$counts"; exit "$status"; }
    wait "$counting"
    echo "== $(cat "$counts")"
    rm -f "$counts"
done
echo "== done: tables and figures are under ${experiments[*]/#/$outputs/}/report/"
