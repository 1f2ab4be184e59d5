"""A trivial Hydra app for the SLURM launcher tests (tests/test_slurm.py), not the training.

Each run writes ``<output_dir>/result.json`` with its ``x``, its SLURM ids and its attempt
number. A run keeps a state file in its output directory across attempts, the way training
keeps last.ckpt: a requeued attempt finds the state the first attempt left behind.

    python tests/slurm_app/app.py -m hydra/launcher=local_cluster \
        hydra.searchpath=[file://$PWD/conf] hydra.sweep.dir=/tmp/sweep x=1,2,3

``hang_first_attempt=true`` makes the first attempt wait (up to ``hang_s``) to be signalled,
after writing its state, so a test can scancel it and watch submitit requeue it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from poolbench.config import register_resolvers

register_resolvers()  # ${poolbench_root:} in the launcher configs


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"attempts": []}
    attempt = {
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT", "0"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "previous_attempts_seen": len(state["attempts"]),
        "scontrol": shutil.which("scontrol"),
    }
    state["attempts"].append(attempt)
    _write_json(state_file, state)
    if cfg.hang_first_attempt and len(state["attempts"]) == 1:
        print(f"attempt 1 of x={cfg.x} waiting to be signalled", flush=True)
        deadline = time.time() + cfg.hang_s
        while time.time() < deadline:
            time.sleep(0.2)
    time.sleep(cfg.sleep_s)
    _write_json(out / "result.json", {"x": cfg.x, "attempts": state["attempts"]})
    print(f"x={cfg.x} done after {len(state['attempts'])} attempt(s)", flush=True)


if __name__ == "__main__":
    main()
