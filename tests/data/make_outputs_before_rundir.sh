#!/usr/bin/env bash
# How tests/data/outputs_before_rundir/ was made (once, with the code of main 8147ebd,
# before run-directory rules moved into src/poolbench/rundir.py). Kept for provenance: the
# tree must not be regenerated with newer code, or it stops testing backward compatibility.
#
#   POOLBENCH_VENV=... PYTHONPATH=src scripts/venv-run tests/data/make_outputs_before_rundir.sh OUT
#
# Six runs of the smoke experiment (VGG16 width 8, CIFAR-100 fixtures), one per status:
#   max               done, no hash (only identity and excluded keys overridden)
#   tmaxavg           done, hash suffix (pool.topk=2)
#   avg               diverged (optim.lr=1e30), hash suffix
#   gated             failed (data.root does not exist)
#   channel_adaptive  interrupted (SIGKILL once last.ckpt exists)
#   learnable_t       started only (SIGKILL once config.json exists)
# then stripped to what the run-directory rules read: results.json, config.json,
# metrics.csv, test_predictions.npz and last.ckpt, the latter emptied (only its existence
# is read; a real one is ~0.5 MB).
set -euo pipefail
out="$(realpath -m "${1:?usage: $0 OUT}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
poolbench-fixtures "$work/data" >/dev/null
common=(experiment=smoke data=cifar100 model=vgg16 seed=0 "data.root=$work/data"
        "paths.outputs=$work/outputs" threads=1 callbacks.progress=plain)
train() { poolbench-train "${common[@]}" "$@"; }

train pool=max
train pool=tmaxavg pool.topk=2
train pool=avg optim.lr=1e30 callbacks.divergence_check_every_n_steps=1
train pool=gated "data.root=$work/missing" || true   # fails: recorded as status failed

kill_when() {  # kill_when FILE OVERRIDES...: start a run, SIGKILL it once FILE exists
    local file="$1"; shift
    poolbench-train "${common[@]}" "$@" >/dev/null 2>&1 &   # not via train(): kill the
    local pid=$!                                                # python process, not a subshell
    until [ -e "$file" ]; do
        kill -0 "$pid" 2>/dev/null || { echo "run ended before $file appeared" >&2; exit 1; }
        sleep 0.05
    done
    kill -9 "$pid"; wait "$pid" || true
}
runs="$work/outputs/smoke/cifar100/vgg16"
kill_when "$runs/channel_adaptive/seed=0/last.ckpt" pool=channel_adaptive
kill_when "$runs/learnable_t/seed=0/config.json" pool=learnable_t

mkdir -p "$out"
(cd "$work/outputs" && find . -type f \( -name results.json -o -name config.json \
    -o -name metrics.csv -o -name test_predictions.npz -o -name last.ckpt \) \
    -not -path '*/.hydra/*' -print0 | xargs -0 cp --parents -t "$out")
find "$out" -name last.ckpt -exec truncate -s 0 {} +
find "$out" -type f | sort
du -sh "$out"
