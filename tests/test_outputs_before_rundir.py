"""Run directories made by an older poolbench are still found, skipped and read.

``tests/data/outputs_before_rundir/`` was written by main 8147ebd (before the run-directory
rules moved into ``poolbench.rundir``) with ``tests/data/make_outputs_before_rundir.sh``:
six runs of the smoke experiment, one per status. Whatever the code does to run
directories later, re-running those commands must skip the finished ones (same paths, same
hashes), ``poolbench-grid`` must report their statuses and the results collector must read
them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poolbench.grid import main as grid_main

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "tests" / "data" / "outputs_before_rundir"

# The overrides each run was made with, besides COMMON (see make_outputs_before_rundir.sh).
RUNS = {
    "max": ["pool=max"],
    "tmaxavg": ["pool=tmaxavg", "pool.topk=2"],
    "avg": ["pool=avg", "optim.lr=1e30", "callbacks.divergence_check_every_n_steps=1"],
    "gated": ["pool=gated"],
    "channel_adaptive": ["pool=channel_adaptive"],
    "learnable_t": ["pool=learnable_t"],
}
DIRS = {"max": "seed=0", "tmaxavg": "seed=0-5db88b4b", "avg": "seed=0-52498374",
        "gated": "seed=0", "channel_adaptive": "seed=0", "learnable_t": "seed=0"}
# Statuses as poolbench-grid and the collector report them. Before rundir.py, grid said
# "missing" for learnable_t (started, no checkpoint) where the collector said "incomplete";
# both now say "incomplete" ("missing": no directory at all).
STATUS = {"max": "done", "tmaxavg": "done", "avg": "diverged", "gated": "failed",
          "channel_adaptive": "interrupted", "learnable_t": "incomplete"}


def common(outputs: Path, data_root: Path) -> list[str]:
    return ["experiment=smoke", "data=cifar100", "model=vgg16", "seed=0",
            f"data.root={data_root}", f"paths.outputs={outputs}", "threads=1",
            "callbacks.progress=plain"]


@pytest.fixture
def outputs(tmp_path):
    """A copy of the old tree (re-running must not touch the committed files)."""
    out = tmp_path / "outputs"
    shutil.copytree(TREE, out)
    return out


def run_dir(outputs: Path, pool: str) -> Path:
    return outputs / "smoke" / "cifar100" / "vgg16" / pool / DIRS[pool]


def train(outputs: Path, *overrides: str):
    # data.root does not exist: a run that trained instead of skipping would fail.
    cmd = [sys.executable, "-m", "poolbench.train",
           *common(outputs, outputs / "no-data-here"), *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_tree_is_as_made():
    found = sorted(str(p.relative_to(TREE)) for p in TREE.rglob("seed=*"))
    assert found == sorted(f"smoke/cifar100/vgg16/{p}/{d}" for p, d in DIRS.items())


@pytest.mark.parametrize("pool", ["max", "tmaxavg", "avg"])
def test_finished_runs_are_skipped(outputs, pool):
    d = run_dir(outputs, pool)
    before = (d / "results.json").read_bytes()
    proc = train(outputs, *RUNS[pool])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = f"[poolbench] skipping finished run ({STATUS[pool]}): {d}  (force=true retrains)"
    assert line in proc.stdout.splitlines(), proc.stdout
    assert (d / "results.json").read_bytes() == before


def test_failed_run_is_retried(outputs):
    proc = train(outputs, *RUNS["gated"])
    assert "skipping" not in proc.stdout
    assert proc.returncode != 0 and "CIFAR-100 was not found" in proc.stderr
    res = json.loads((run_dir(outputs, "gated") / "results.json").read_text())
    assert res["status"] == "failed" and "no-data-here" in res["error"]


def test_grid_reports_their_statuses(outputs, capsys):
    for pool, extra in RUNS.items():
        args = ["smoke", *common(outputs, outputs / "data"), *extra, "--json"]
        assert grid_main(args) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert len(rows) == 1, rows
        assert rows[0]["run_dir"] == str(run_dir(outputs, pool))
        assert rows[0]["status"] == STATUS[pool], pool


def test_collector_reads_them(outputs):
    from poolbench.results.collect import collect_files

    runs = collect_files(outputs / "smoke").runs.set_index("pool")
    assert sorted(runs.index) == sorted(RUNS)
    assert runs["status"].to_dict() == STATUS
    assert set(runs["experiment"]) == {"smoke"} and set(runs["seed"]) == {0}
    for pool in ("max", "tmaxavg"):
        res = json.loads((run_dir(outputs, pool) / "results.json").read_text())
        assert runs.loc[pool, "test_top1_final"] == res["test_top1_final"]
        assert runs.loc[pool, "predictions"] is not None
    assert runs.loc["tmaxavg", "topk"] == 2
