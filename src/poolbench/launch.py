"""Which process of a launch decides about a run directory, and how the others learn it.

A run may be trained by several processes (DDP: ``trainer.devices`` x ``trainer.num_nodes``).
They start in one of two ways:

* **Lightning's launcher** (one node, no SLURM tasks): the command runs once, as global
  rank 0, which at ``trainer.fit`` re-executes the same command for ranks 1..N-1 with
  ``LOCAL_RANK`` set; they inherit rank 0's environment as it is at that moment.
* **an external launcher** (SLURM's ``srun``, one task per device): every rank starts at
  once, with its rank in the environment (``SLURM_PROCID``).

Only global rank 0 decides (skip the run, or train it from which checkpoint, after taking
its lease: :mod:`poolbench.lease`) and only it writes or deletes files; the others follow
its decision (:func:`receive`) and never run the skip / force / resume logic themselves.
Rank 0 hands the decision over (:func:`hand_off`) in its environment
(``POOLBENCH_DECISION``: Lightning's children inherit it) and, when the other ranks start
on their own, in a small file in the run directory, ``.launch-<launch id>.json``, for
which they wait a bounded time (:data:`DECISION_TIMEOUT_S`; a clear error, never a hang).
A launch id names one start of one set of processes: SLURM's job, step and restart count,
or ``$POOLBENCH_LAUNCH_ID`` (set it, the same on every node, for other launchers).

No torch or Lightning here: a re-run must decide in well under a second.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from .utils import atomic_write_json, read_json

ENV_DECISION = "POOLBENCH_DECISION"
ENV_LAUNCH_ID = "POOLBENCH_LAUNCH_ID"
DECISION_TIMEOUT_S = 600.0  # how long a rank > 0 waits for rank 0's decision file
_RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")

TRAIN, SKIP, WAIT = "train", "skip", "wait"  # what rank 0 decided (WAIT: not yet, waiting)


def rank_variables() -> dict[str, int]:
    """The rank variables a launcher set for this process (RANK, SLURM_PROCID, LOCAL_RANK,
    NODE_RANK, GROUP_RANK), those that are set."""
    return {k: int(os.environ[k]) for k in _RANK_VARS if (os.environ.get(k) or "").isdigit()}


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, the one that decides and writes: no launcher
    started it as another rank (every rank variable it has is 0)."""
    return not any(rank_variables().values())


def launch_id() -> str | None:
    """The id of this launch when its ranks start on their own (SLURM tasks, or
    ``$POOLBENCH_LAUNCH_ID``), else None (one process, or Lightning's own launcher)."""
    env = os.environ
    if env.get(ENV_LAUNCH_ID):
        return env[ENV_LAUNCH_ID]
    if int(env.get("SLURM_NTASKS") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return (f"slurm-{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', 'batch')}"
                f".{env.get('SLURM_RESTART_COUNT') or 0}")
    return None


def decision_path(run_dir: str | Path, launch: str) -> Path:
    return Path(run_dir) / f".launch-{re.sub(r'[^A-Za-z0-9_.-]', '_', launch)}.json"


def decision(run_dir: str | Path, action: str, message: str | None = None,
             ckpt_path: str | None = None, epochs_done: int = 0) -> dict:
    """What rank 0 decided about ``run_dir``, as handed to the other ranks."""
    return {"run_dir": str(run_dir), "launch": launch_id(), "action": action,
            "message": message, "ckpt_path": ckpt_path, "epochs_done": int(epochs_done),
            "written_at": time.time()}


def hand_off(d: dict) -> None:
    """Give rank 0's decision ``d`` to the other ranks of this launch: in the environment
    (for the children Lightning spawns later) and, with a launch id, in the decision file."""
    os.environ[ENV_DECISION] = json.dumps(d)
    if d["launch"] is not None:
        atomic_write_json(decision_path(d["run_dir"], d["launch"]), d)


def withdraw(run_dir: str | Path) -> None:
    """Delete this launch's decision file (rank 0, when the run ends)."""
    launch = launch_id()
    if launch is not None:
        decision_path(run_dir, launch).unlink(missing_ok=True)


def tidy(run_dir: str | Path, older_than_s: float = DECISION_TIMEOUT_S) -> None:
    """Delete other launches' decision files older than ``older_than_s`` (their ranks have
    read them or given up); the owner calls this when it takes the run."""
    mine = launch_id()
    for path in Path(run_dir).glob(".launch-*.json"):
        try:
            old = time.time() - path.stat().st_mtime > older_than_s
        except OSError:
            continue
        if old and (mine is None or path != decision_path(run_dir, mine)):
            path.unlink(missing_ok=True)


def receive(run_dir: str | Path, timeout_s: float = DECISION_TIMEOUT_S,
            poll_s: float = 0.2) -> dict:
    """Rank 0's decision about ``run_dir``, on a rank > 0: from the launch's decision file,
    waiting up to ``timeout_s`` for it (longer while rank 0 reports that it waits for the
    directory's owner); without a launch id (Lightning's children), from the environment."""
    run_dir = Path(run_dir)
    rank, launch = " ".join(f"{k}={v}" for k, v in rank_variables().items()), launch_id()
    if launch is None:  # one of the children Lightning's launcher started
        inherited = json.loads(os.environ.get(ENV_DECISION) or "null")
        if inherited and inherited.get("run_dir") == str(run_dir):
            return inherited
        raise RuntimeError(
            f"this process ({rank}) is not global rank 0, but it neither inherited rank 0's "
            f"decision about {run_dir} (as the processes Lightning starts do) nor has a launch "
            "id to read it from a file: start the processes with srun (one task per device), "
            f"or set {ENV_LAUNCH_ID} to one value, unique to this launch, on every node")
    path, deadline, seen = decision_path(run_dir, launch), time.monotonic() + timeout_s, None
    while True:
        d = read_json(path)
        if d and d.get("launch") == launch:
            if d["action"] != WAIT:
                return d
            if d["written_at"] != seen:  # rank 0 is alive and still waiting: wait on
                seen, deadline = d["written_at"], time.monotonic() + timeout_s
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"this process ({rank}) waited {timeout_s:.0f} s for global rank 0's decision about "
                f"{run_dir} ({path} did not appear): did rank 0 start, with the same "
                "overrides and paths.outputs?")
        time.sleep(poll_s)
