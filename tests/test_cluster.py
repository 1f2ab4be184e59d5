"""poolbench.cluster: SLURM's allocation against trainer.devices x trainer.num_nodes, from the
environment SLURM gives a task (as seen on the local cluster: the batch script has no
SLURM_STEP_ID, srun's tasks do). Fast, no cluster needed."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from poolbench.cluster import allocation_problem, check_allocation, device_count, slurm_step


def srun_task(nodes: int, per_node: int, rank: int = 0, **extra) -> dict:
    """The environment srun gives task ``rank`` of a step of ``nodes`` x ``per_node`` tasks."""
    return {"SLURM_JOB_ID": "77", "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes),
            "SLURM_NTASKS": str(nodes * per_node), "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})",
            "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_NODES": str(nodes),
            "SLURM_STEP_NUM_TASKS": str(nodes * per_node),
            "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{nodes})", "SLURM_PROCID": str(rank),
            **extra}


def batch_script(nodes: int, per_node: int) -> dict:
    env = srun_task(nodes, per_node)
    for k in ("SLURM_STEP_ID", "SLURM_STEP_NUM_NODES", "SLURM_STEP_NUM_TASKS",
              "SLURM_STEP_TASKS_PER_NODE"):
        del env[k]
    return env


def test_outside_slurm_nothing_is_checked():
    assert slurm_step({}) is None
    assert allocation_problem(8, 4, env={}) is None


def test_matching_allocations_pass():
    assert allocation_problem(1, 1, env=batch_script(1, 1)) is None  # one run per array task
    assert allocation_problem(1, 1, env=srun_task(1, 1)) is None
    assert allocation_problem(2, 1, env=srun_task(1, 2, rank=1)) is None
    assert allocation_problem(4, 2, env=srun_task(2, 4, rank=5)) is None
    assert allocation_problem("4", 2, env=srun_task(2, 4)) is None
    assert allocation_problem([0, 1], 1, env=srun_task(1, 2)) is None


@pytest.mark.parametrize("devices, nodes, env, says", [
    # the case: devices=2 in a one-task job would silently train on one device
    (2, 1, batch_script(1, 1), "trainer.devices=2 x trainer.num_nodes=1 = 2 processes, but "
                               "SLURM job 77 runs 1 task(s) on 1 node(s) (tasks per node: 1)"),
    (1, 1, srun_task(1, 4), "= 1 process, but SLURM job 77 runs 4 task(s) on 1 node(s)"),
    (4, 1, srun_task(2, 2), "= 4 processes, but SLURM job 77 runs 4 task(s) on 2 node(s) "
                            "(tasks per node: 2,2)"),
    (2, 2, srun_task(1, 4), "trainer.num_nodes=2 = 4 processes, but SLURM job 77 runs 4 "
                            "task(s) on 1 node(s)"),
    # the right counts, but the batch script itself, not srun's tasks
    (2, 1, batch_script(1, 2), "this process is the job's batch script, not one of srun's"),
])
def test_a_mismatch_names_both_sides(devices, nodes, env, says):
    problem = allocation_problem(devices, nodes, env=env)
    assert problem is not None and says in problem, problem
    if "batch script" not in says:
        assert f"--nodes={nodes} --ntasks-per-node={devices}" in problem, "says what to ask for"


def test_check_allocation_raises_at_once(monkeypatch):
    for k, v in batch_script(1, 1).items():
        monkeypatch.setenv(k, v)
    cfg = OmegaConf.create({"trainer": {"devices": 2, "num_nodes": 1}})
    with pytest.raises(ValueError, match=r"trainer.devices=2 x trainer.num_nodes=1"):
        check_allocation(cfg)
    cfg.trainer.devices = 1
    check_allocation(cfg)


def test_device_count_takes_counts_and_lists_and_refuses_the_rest():
    assert [device_count(v) for v in (1, "3", [0, 2], "0,1,")] == [1, 3, 2, 2]
    for bad in ("auto", True, -1.5):
        with pytest.raises(ValueError, match="trainer.devices="):
            device_count(bad)
