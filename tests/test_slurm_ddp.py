"""One run on 2 SLURM tasks (CPU, gloo) on the local cluster (slurm/local-cluster.sh start):
through slurm/grid.sbatch (srun starts the ranks) and through the submitit launcher
(tasks_per_node from trainer.devices); and an allocation that does not match the trainer
failing at once, naming both.

Marked ``slurm`` (skipped, with the reason, when the cluster is not up) and ``slow`` where
they train. Multi-node is simulated in tests/test_ddp.py (test_two_slurm_nodes_one_task_each).

    slurm/local-cluster.sh start && python -m pytest -m slurm tests/test_slurm_ddp.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_slurm import LAUNCHER, Jobs, check, read_json, submit, submitit_logs  # noqa: F401
from test_slurm import cluster, jobs  # noqa: F401  (fixtures)
from test_slurm_sbatch import SBATCH, TINY, _run, data_root, sbatch_env, task_log, wait_array  # noqa: F401,E501

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slurm]

DDP = ("trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp", "threads=1")
# 2 tasks of 1 CPU each: the local node's 2 CPUs
LOCAL_DDP = ["--gpus-per-node=0", "--cpus-per-task=1", "--mem=2G", "--time=10"]


def sbatch_tasks(jobs: Jobs, workdir: Path, tasks_per_node: int, *args: str) -> str:
    """Submit grid.sbatch (array task 0) with ``tasks_per_node`` tasks; the job id."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = ["sbatch", "--parsable", "--array=0", f"--job-name={jobs.name}", *LOCAL_DDP,
           f"--ntasks-per-node={tasks_per_node}", str(SBATCH), *args]
    r = _run(cmd, cwd=workdir, env=sbatch_env())
    assert r.returncode == 0, f"sbatch failed: {r.stderr}"
    return r.stdout.strip().split(";")[0]


def check_ddp_run(outputs: Path) -> dict:
    (run_dir,) = [p.parent for p in outputs.rglob("config.json")]
    res = read_json(run_dir / "results.json")
    assert res["status"] == "done", res.get("error")
    assert (res["world_size"], res["batch_size_per_device"], res["global_batch_size"]) == \
        (2, 16, 32)
    assert np.load(run_dir / "test_predictions.npz")["final"].shape == (200,), "the whole test set"
    assert not (run_dir / "owner.json").exists() and not list(run_dir.glob(".launch-*"))
    return res


def test_sbatch_allocation_that_does_not_match_the_trainer_fails_at_once(jobs, tmp_path):
    """The issue's case: trainer.devices=2 in a one-task array task used to train on one
    device; now the task fails before anything is written, naming both."""
    outputs = tmp_path / "outputs"
    job_id = sbatch_tasks(jobs, tmp_path / "logs", 1, "smoke", f"paths.outputs={outputs}",
                          "data=cifar100", "model=vgg16", "pool=max", "seed=0", *DDP)
    (row,) = wait_array(jobs, job_id, 1, timeout=180)
    log = task_log(tmp_path / "logs", job_id, 0)
    assert row["state"] == "FAILED", (row, log[-3000:])
    assert "trainer.devices=2 x trainer.num_nodes=1 = 2 processes, but SLURM job" in log, log
    assert "runs 1 task(s) on 1 node(s)" in log and "--ntasks-per-node=2" in log, log
    assert not list(outputs.rglob("config.json")), "nothing written"


@pytest.mark.slow
def test_sbatch_two_tasks_train_one_run(data_root, jobs, tmp_path):  # noqa: F811
    outputs = tmp_path / "outputs"
    job_id = sbatch_tasks(jobs, tmp_path / "logs", 2, "smoke", f"paths.outputs={outputs}",
                          f"data.root={data_root}", "data=cifar100", "model=vgg16", "pool=max",
                          "seed=0", *TINY, "trainer.max_epochs=1", *DDP)
    (row,) = wait_array(jobs, job_id, 1, timeout=500)
    log = task_log(tmp_path / "logs", job_id, 0)
    assert row["state"] == "COMPLETED", (row, log[-4000:])
    assert "srun: 2 task(s) on 1 node(s)" in log
    assert log.count("[poolbench] done:") == 1, "one process speaks for the run"
    check_ddp_run(outputs)


@pytest.mark.slow
def test_submitit_launcher_two_tasks_train_one_run(data_root, jobs, tmp_path):  # noqa: F811
    outputs = tmp_path / "outputs"
    proc = submit([sys.executable, "-m", "poolbench.train", "-m", LAUNCHER,
                   f"hydra.launcher.name={jobs.name}", f"data.root={data_root}",
                   f"paths.outputs={outputs}", *TINY, "trainer.max_epochs=1", "seed=0", *DDP],
                  timeout=540)
    check(proc)
    scripts = list(outputs.glob(".submitit/*/*/*_submission.sh"))
    assert len(scripts) == 1 and "#SBATCH --ntasks-per-node=2" in scripts[0].read_text()
    check_ddp_run(outputs)
    assert "Traceback" not in submitit_logs(outputs)
