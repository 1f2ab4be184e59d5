"""slurm/grid.sbatch (plain ``sbatch --array``, no submitit) and the smoke experiment through
the submitit launcher, against a real SLURM cluster (slurm/local-cluster.sh start).

Marked ``slurm`` (skipped, with the reason, when the cluster is not up) and ``slow`` where
they train. Every test submits from a fresh folder under a job name of its own, cancels that
name at the end, and bounds every wait. Helpers and the ``cluster``/``jobs`` fixtures come
from tests/test_slurm.py.

    slurm/local-cluster.sh start && python -m pytest -m slurm tests/test_slurm_sbatch.py
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from test_slurm import (  # noqa: F401  (cluster, jobs: fixtures)
    LAUNCHER, ROOT, Jobs, _env, _run, check, cluster, jobs, read_json, sacct_rows, submit,
    submitit_logs, wait_for,
)

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slurm]

SBATCH = ROOT / "slurm" / "grid.sbatch"
# The script's defaults ask for a GPU, 8 CPUs, 32 GB and 6 hours; the local node has none of
# that to spare. Command-line options override the #SBATCH lines.
LOCAL = ["--gpus-per-node=0", "--cpus-per-task=1", "--mem=1G", "--time=10"]
TINY = ["model.width=8", "data.batch_size=32", "data.val_size=100", "trainer.limit_train_batches=4",
        "logger.wandb.enabled=false", "callbacks.progress=plain"]
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def sbatch_env() -> dict:
    """The submitting environment: no POOLBENCH_ROOT (the script must find the checkout from
    its submitted path), and this interpreter's environment for the jobs."""
    env = _env()
    env.pop("POOLBENCH_ROOT", None)
    env.pop("POOLBENCH_VENV", None)
    prefix = Path(sys.prefix).resolve()
    if (ROOT / ".venv").exists() and (ROOT / ".venv").resolve() == prefix:
        pass  # the script's default
    elif sys.prefix != sys.base_prefix:
        env["POOLBENCH_VENV"] = sys.prefix
    else:
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def sbatch(jobs: Jobs, workdir: Path, array: str, *args: str) -> str:
    """Submit slurm/grid.sbatch as an array from ``workdir`` (not the checkout); the job id."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = ["sbatch", "--parsable", f"--array={array}", f"--job-name={jobs.name}", *LOCAL,
           str(SBATCH), *args]
    r = _run(cmd, cwd=workdir, env=sbatch_env())
    assert r.returncode == 0, f"sbatch failed: {r.stderr}"
    return r.stdout.strip().split(";")[0]


def wait_array(jobs: Jobs, job_id: str, ntasks: int, timeout: float) -> list[dict]:
    """Wait until no task of the job is queued or running and sacct has every task's final
    state; sacct's final records (requeued attempts excluded)."""
    wait_for(lambda: not jobs.ids(), timeout, f"array {job_id} to finish", interval=1)

    def final():
        rows = [r for r in sacct_rows(job_id) if r["state"].split()[0] in FINAL_STATES]
        return rows if len(rows) == ntasks else None

    return wait_for(final, 30, f"sacct to report the {ntasks} tasks of {job_id}", interval=0.5)


def task_log(workdir: Path, job_id: str, task: int) -> str:
    logs = list(workdir.glob(f"*-{job_id}_{task}.out"))  # --output=%x-%A_%a.out
    assert len(logs) == 1, f"no single log of task {job_id}_{task} in {sorted(workdir.iterdir())}"
    return logs[0].read_text(errors="replace")


def grid(*args: str) -> list[dict]:
    r = _run([sys.executable, "-m", "poolbench.grid", *args, "--json"], timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def grid_summary(*args: str) -> str:
    r = _run([sys.executable, "-m", "poolbench.grid", *args, "--summary"], timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def data_root(cluster, tmp_path_factory):
    from poolbench.data.fixtures import write_cifar100

    root = tmp_path_factory.mktemp("data")
    write_cifar100(root)
    return root


# ---------------------------------------------------------------------------------------------
# fast: the script's plumbing, no training


def test_sbatch_array_maps_tasks_to_grid_runs(jobs, tmp_path):
    """Each task finds the checkout (sbatch runs a spool copy of the script, submitted here from
    another directory), its environment, and runs run SLURM_ARRAY_TASK_ID of the grid: with
    every run already finished, poolbench-train skips exactly that run's directory."""
    args = ["smoke", f"paths.outputs={tmp_path / 'outputs'}", "data=cifar100", "model=vgg16",
            "seed=0", "pool=max,avg,gated"]
    runs = grid(*args)
    assert len(runs) == 3
    for run in runs:
        Path(run["run_dir"]).mkdir(parents=True)
        Path(run["run_dir"], "results.json").write_text('{"status": "done"}')
    t0 = time.monotonic()
    job_id = sbatch(jobs, tmp_path / "logs", "0-2", *args)
    rows = wait_array(jobs, job_id, 3, timeout=120)
    elapsed = time.monotonic() - t0
    assert {r["state"] for r in rows} == {"COMPLETED"}, rows
    for run in runs:
        log = task_log(tmp_path / "logs", job_id, run["index"])
        assert f"checkout {ROOT}" in log, log
        assert f"run {run['index']} of smoke: poolbench-train {' '.join(run['overrides'])}" in log
        assert f"skipping finished run (done): {run['run_dir']} " in log, log
    print(f"3-task array of skipped runs: {elapsed:.1f} s from sbatch to sacct")


def test_sbatch_bad_index_fails_the_task_with_the_reason(jobs, tmp_path):
    job_id = sbatch(jobs, tmp_path, "1", "smoke", "data=cifar100", "model=vgg16", "pool=max",
                    "seed=0", f"paths.outputs={tmp_path}")
    (row,) = wait_array(jobs, job_id, 1, timeout=60)
    assert row["state"] == "FAILED" and row["exit_code"] == "2:0", row
    log = task_log(tmp_path, job_id, 1)
    assert "--index 1 is out of range: smoke has 1 runs (0..0)" in log, log
    assert "run 1 of smoke" not in log


# ---------------------------------------------------------------------------------------------
# slow: real training


@pytest.fixture(scope="module")
def sbatch_grid(data_root, tmp_path_factory):
    """smoke restricted to 2 runs (max, avg), trained by a 2-task array of grid.sbatch."""
    base = tmp_path_factory.mktemp("sbatch_grid")
    args = ["smoke", f"paths.outputs={base / 'outputs'}", f"data.root={data_root}",
            "data=cifar100", "model=vgg16", "seed=0", "pool=max,avg", *TINY,
            "trainer.max_epochs=2", "threads=null"]  # threads: from the task's CPUs
    jobs = Jobs()
    t0 = time.monotonic()
    try:
        job_id = sbatch(jobs, base / "logs", "0-1", *args)
        rows = wait_array(jobs, job_id, 2, timeout=400)
    finally:
        jobs.close()
    return {"args": args, "logs": base / "logs", "job_id": job_id, "rows": rows,
            "seconds": time.monotonic() - t0}


@pytest.mark.slow
def test_sbatch_array_trains_every_run_of_the_grid(sbatch_grid):
    assert {r["state"] for r in sbatch_grid["rows"]} == {"COMPLETED"}, sbatch_grid["rows"]
    runs = grid(*sbatch_grid["args"])
    assert [r["status"] for r in runs] == ["done", "done"]
    for run in runs:
        res = read_json(Path(run["run_dir"]) / "results.json")
        assert res["status"] == "done" and res["epochs_run"] == 2
        assert res["threads"] == 1  # OMP_NUM_THREADS from --cpus-per-task=1, not the node's
        assert res["pool"] == ("max", "avg")[run["index"]]
        log = task_log(sbatch_grid["logs"], sbatch_grid["job_id"], run["index"])
        assert f"[poolbench] done: {run['run_dir']} " in log, log[-3000:]
    assert grid_summary(*sbatch_grid["args"]) == "smoke: 2 runs: 2 done"
    print(f"2-task training array: {sbatch_grid['seconds']:.1f} s from sbatch to sacct")


@pytest.mark.slow
def test_sbatch_resubmitting_a_finished_array_reruns_nothing(sbatch_grid, jobs):
    runs = grid(*sbatch_grid["args"])
    before = {r["index"]: Path(r["run_dir"], "results.json").stat().st_mtime_ns for r in runs}
    logs = sbatch_grid["logs"] / "again"
    t0 = time.monotonic()
    job_id = sbatch(jobs, logs, "0-1", *sbatch_grid["args"])
    rows = wait_array(jobs, job_id, 2, timeout=120)
    elapsed = time.monotonic() - t0
    assert {r["state"] for r in rows} == {"COMPLETED"}, rows
    for run in runs:
        log = task_log(logs, job_id, run["index"])
        assert f"skipping finished run (done): {run['run_dir']} " in log, log
        assert "epoch 1/" not in log
    after = {r["index"]: Path(r["run_dir"], "results.json").stat().st_mtime_ns for r in runs}
    assert after == before
    print(f"re-submitted 2-task array, nothing to run: {elapsed:.1f} s from sbatch to sacct")


@pytest.mark.slow
def test_sbatch_task_signalled_mid_training_is_requeued_and_resumes(data_root, jobs, tmp_path):
    """USR1 to the batch shell -- what --signal=B:USR1@120 sends before the time limit -- stops
    the training, requeues the task, and the requeued task resumes from last.ckpt."""
    epochs = 5
    args = ["smoke", f"paths.outputs={tmp_path / 'outputs'}", f"data.root={data_root}",
            "data=cifar100", "model=vgg16", "seed=0", "pool=max", *TINY,
            f"trainer.max_epochs={epochs}"]
    (run,) = grid(*args)
    run_dir = Path(run["run_dir"])
    logs = tmp_path / "logs"
    t0 = time.monotonic()
    job_id = sbatch(jobs, logs, "0", *args)
    task = f"{job_id}_0"

    def first_epoch_done():
        # last.ckpt of an epoch is published when the next one starts (after the epoch's
        # metrics row: callbacks.LastCheckpoint), a moment after "epoch 1/5 done"
        out = list(logs.glob(f"*-{task}.out"))
        return out and f"epoch 1/{epochs} done" in out[0].read_text(errors="replace") and \
            ((run_dir / "last.ckpt").exists() or f"epoch 2/{epochs} done" in out[0].read_text())

    wait_for(first_epoch_done, 300, "the first epoch to finish", interval=0.1)
    assert not (run_dir / "results.json").exists(), "the run finished before it was signalled"
    assert (run_dir / "last.ckpt").exists(), (
        "no last.ckpt after the first epoch: a run stopped now would restart from scratch "
        "(train.py's last-checkpoint callback must save every epoch)")
    r = _run(["scancel", "--signal=USR1", "--batch", task])
    assert r.returncode == 0, r.stderr
    t_signal = time.monotonic()
    (row,) = wait_array(jobs, job_id, 1, timeout=400)
    t_done = time.monotonic()
    assert row["state"] == "COMPLETED", row

    log = task_log(logs, job_id, 0)
    first, _, second = log.partition("(restart 1)")
    assert "caught USR1" in first and f"requeued {task}" in first, log[-4000:]
    assert "[poolbench] done" not in first, "the signal came too late: the run had finished"
    assert second, f"no second attempt in the log:\n{log[-4000:]}"
    m = re.search(r"resuming from \S+last\.ckpt after (\d+) completed epoch", second)
    assert m, second[-4000:]
    assert 1 <= int(m.group(1)) < epochs
    assert f"[poolbench] done: {run_dir} " in second
    assert "resuming from" in (run_dir / "train.log").read_text()
    res = read_json(run_dir / "results.json")
    assert res["status"] == "done" and res["epochs_run"] == epochs
    import pandas as pd

    logged = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["train/loss"])["epoch"]
    assert sorted(logged.astype(int)) == list(range(epochs)), "each epoch logged once"
    states = [r["state"] for r in sacct_rows(job_id, duplicates=True)]
    assert states == ["REQUEUED", "COMPLETED"], states
    print(f"requeue: signal to requeued task done {t_done - t_signal:.1f} s, "
          f"test {t_done - t0:.1f} s")


@pytest.mark.slow
def test_sbatch_time_limit_signal_requeues_up_to_the_limit(data_root, jobs, tmp_path):
    """A real 1-minute time limit with --signal=B:USR1@45 (SLURM sends it, to the batch shell):
    the task is requeued once, then (POOLBENCH_MAX_REQUEUES=1) fails instead of looping."""
    args = ["smoke", f"paths.outputs={tmp_path / 'outputs'}", f"data.root={data_root}",
            "data=cifar100", "model=vgg16", "seed=0", "pool=max", *TINY,
            "trainer.max_epochs=200"]
    env = sbatch_env()
    env["POOLBENCH_MAX_REQUEUES"] = "1"
    cmd = ["sbatch", "--parsable", "--array=0", f"--job-name={jobs.name}", *LOCAL, "--time=1",
           "--signal=B:USR1@45", str(SBATCH), *args]
    r = _run(cmd, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().split(";")[0]
    (row,) = wait_array(jobs, job_id, 1, timeout=300)
    log = task_log(tmp_path, job_id, 0)
    assert row["state"] == "FAILED" and row["exit_code"] == "1:0", (row, log[-3000:])
    assert log.count("caught USR1") == 2, log[-3000:]
    assert f"requeued {job_id}_0" in log
    assert "not requeueing: already requeued 1 times (POOLBENCH_MAX_REQUEUES=1)" in log
    states = [r["state"] for r in sacct_rows(job_id, duplicates=True)]
    assert states == ["REQUEUED", "FAILED"], states


# ---------------------------------------------------------------------------------------------
# the smoke experiment through the submitit launcher


@pytest.mark.slow
def test_smoke_experiment_through_the_submitit_launcher(jobs, tmp_path):
    """`poolbench-train -m experiment=smoke hydra/launcher=local_cluster`, restricted to
    2 models x 2 methods: one job array, every results.json, and poolbench-grid agrees."""
    from poolbench.data.fixtures import write_cifar100

    outputs = tmp_path / "outputs"
    write_cifar100(outputs / "fixtures")  # smoke's data.root: ${paths.outputs}/fixtures
    overrides = [f"paths.outputs={outputs}", "data=cifar100", "seed=0", "pool=max,tmaxavg",
                 "callbacks.progress=plain"]
    t0 = time.monotonic()
    check(submit([sys.executable, "-m", "poolbench.train", "-m", "experiment=smoke", LAUNCHER,
                  f"hydra.launcher.name={jobs.name}", *overrides], timeout=540))
    elapsed = time.monotonic() - t0
    runs = grid("smoke", *overrides)
    assert len(runs) == 4
    for run in runs:
        res = read_json(Path(run["run_dir"]) / "results.json")
        assert res["status"] == "done", f"{run['run_dir']}: {res['status']}\n" \
            f"{(res.get('error') or '')[-1500:]}"
        assert res["experiment"] == "smoke"
        assert res["epochs_run"] == 2
    scripts = list(outputs.glob(".submitit/*/*/*_submission.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-3%" in scripts[0].read_text()
    assert "Traceback" not in submitit_logs(outputs)
    assert grid_summary("smoke", *overrides) == "smoke: 4 runs: 4 done"
    print(f"smoke, 4 runs through the submitit launcher: {elapsed:.1f} s")
