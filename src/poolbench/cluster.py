"""The cluster allocation a run starts in, checked against what its trainer will ask for.

:func:`check_allocation` is called once per process at the start of every run
(``poolbench.train.run``), before the run directory is claimed or anything is written, so
a job whose SLURM allocation cannot run ``trainer.devices`` x ``trainer.num_nodes``
processes fails at once, on every rank, with the numbers of both sides (rather than later,
in Lightning, hanging in the rendezvous, or silently training on one device).

Inside a SLURM job the processes of a run are SLURM's tasks, started by ``srun`` (the
submitit launcher does that itself; ``slurm/grid.sbatch`` calls srun): one task per device,
``trainer.devices`` tasks on each of ``trainer.num_nodes`` nodes. So the job step this
process runs in must have exactly ``devices x num_nodes`` tasks on ``num_nodes`` nodes, and,
for more than one task, this process must be one of them (started by srun, not the batch
script itself). Outside SLURM nothing is checked (Lightning's own launcher starts the
processes of one node).

No torch or Lightning here: a re-run must decide in well under a second.
"""

from __future__ import annotations

import os
import re


def device_count(devices) -> int:
    """The number of processes per node that ``trainer.devices`` asks for: an int (or its
    string), or a list of device indices; a ValueError naming the value otherwise."""
    if isinstance(devices, bool):
        raise ValueError(f"trainer.devices={devices!r}: give a number of devices per node")
    if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()):
        return int(devices)
    if isinstance(devices, (list, tuple)) or type(devices).__name__ == "ListConfig":
        return len(devices)
    if isinstance(devices, str) and re.fullmatch(r"\d+(,\d+)*,?", devices):
        return len([d for d in devices.split(",") if d])
    raise ValueError(f"trainer.devices={devices!r} cannot be checked against a SLURM allocation: "
                     "give the number of devices per node (e.g. trainer.devices=4)")


def _tasks_per_node(text: str | None) -> list[int]:
    """SLURM's tasks-per-node list, e.g. ``2(x3),1`` -> [2, 2, 2, 1]."""
    out = []
    for part in (text or "").split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m:
            out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def slurm_step(env=None) -> dict | None:
    """This process's SLURM job step, as SLURM's environment describes it: ``tasks`` (all
    nodes), ``nodes``, ``per_node`` (tasks on each node), ``srun`` (whether srun started
    this process as one of the step's tasks); None outside a SLURM job."""
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return None
    nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES")
                or env.get("SLURM_JOB_NUM_NODES") or 1)
    per_node = _tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE")
                               or env.get("SLURM_TASKS_PER_NODE"))
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
                or sum(per_node) or 1)
    if not per_node and env.get("SLURM_NTASKS_PER_NODE", "").isdigit():
        per_node = [int(env["SLURM_NTASKS_PER_NODE"])] * nodes
    # srun sets a numeric step id in each task; the batch script itself runs in the
    # 'batch' step, without one (or with SLURM_STEP_ID unset).
    srun = (env.get("SLURM_STEP_ID") or "").isdigit() and "SLURM_PROCID" in env
    return {"tasks": tasks, "nodes": nodes, "per_node": per_node or [tasks // max(1, nodes)],
            "srun": srun, "job": env["SLURM_JOB_ID"]}


def allocation_problem(devices, num_nodes, env=None) -> str | None:
    """Why SLURM's job step cannot run a trainer of ``devices`` x ``num_nodes`` processes,
    naming both sides; None when it can (or outside SLURM)."""
    step = slurm_step(env)
    if step is None:
        return None
    per_device, nodes = device_count(devices), int(num_nodes)
    wanted = per_device * nodes
    trainer = (f"trainer.devices={per_device} x trainer.num_nodes={nodes} = {wanted} "
               f"process{'es' if wanted > 1 else ''}")
    slurm = (f"SLURM job {step['job']} runs {step['tasks']} task(s) on {step['nodes']} node(s) "
             f"(tasks per node: {','.join(map(str, step['per_node']))})")
    fix = (f"allocate --nodes={nodes} --ntasks-per-node={per_device}"
           + (f" --gpus-per-node={per_device}" if per_device > 1 else "")
           + " and start the run with srun (hydra/launcher=slurm and slurm/grid.sbatch do "
           "both from trainer.devices and trainer.num_nodes), or set trainer.devices and "
           "trainer.num_nodes to match the allocation")
    if step["tasks"] != wanted or step["nodes"] != nodes or \
            any(n != per_device for n in step["per_node"]):
        return f"{trainer}, but {slurm}: {fix}"
    if wanted > 1 and not step["srun"]:
        return (f"{trainer}, and {slurm}, but this process is the job's batch script, not one "
                f"of srun's tasks: the other {wanted - 1} would never start. Start the run "
                "with srun (slurm/grid.sbatch does)")
    return None


def check_allocation(cfg) -> None:
    """Raise ValueError naming SLURM's numbers (tasks, nodes, tasks per node) and the
    trainer's (``trainer.devices``, ``trainer.num_nodes``) when they do not match
    (:func:`allocation_problem`); nothing outside SLURM."""
    trainer = cfg.trainer
    problem = allocation_problem(trainer.devices, trainer.get("num_nodes", 1))
    if problem:
        raise ValueError(problem)
