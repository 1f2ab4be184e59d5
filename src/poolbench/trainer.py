"""The Lightning Trainer of a run, from ``conf/trainer/`` (every key is passed to
``lightning.Trainer``): precision resolved for the device at hand, SLURM's environment
without Lightning's requeueing, checkpoints written atomically, the data module's own
per-process samplers, library logging reduced to what a run's log needs, and :func:`fit`,
which tells a finished run from a diverged or interrupted one.

DDP (``trainer.devices`` x ``trainer.num_nodes`` > 1) runs with Lightning's ``ddp``
strategy: its own launcher re-executes the command for the other processes on one node,
SLURM's ``srun`` starts them on a cluster. Strategies that fork or spawn the training
function (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) are refused: a run's claim,
evaluation and results live in the launching process.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import lightning as L
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf

from . import rundir
from .callbacks import AtomicCheckpointIO, rich_progress
from .module import DivergedError

log = logging.getLogger("poolbench.train")


def resolve_precision(requested: str, accelerator: str) -> tuple[str, str | None]:
    """(precision to use, message or None). 'auto' is 16-mixed on CUDA, 32-true on CPU."""
    import torch

    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    requested = str(requested)
    if requested == "auto":
        if on_cuda:
            return "16-mixed", None
        return "32-true", ("no CUDA device: using precision 32-true on CPU instead of the "
                           "default 16-mixed")
    if not on_cuda and requested in ("16-mixed", "16", "16-true"):
        return "32-true", (f"precision {requested} does not run on CPU: using 32-true "
                           "(bf16-mixed is available on CPU)")
    return requested, None


def trainer_precision(trainer_cfg) -> str:
    """``trainer.precision`` as it will run here (:func:`resolve_precision`, logged)."""
    precision, msg = resolve_precision(trainer_cfg.precision,
                                       str(trainer_cfg.get("accelerator", "auto")))
    if msg:
        log.warning(msg)
    return precision


def quiet_libraries() -> None:
    """One copy of each log line (Hydra's handlers), without tips and known-harmless warnings."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    for pattern in (".*exists and is not empty.*", ".*smaller than the logging interval.*",
                    ".*The `srun` command is available on your system.*",
                    ".*isinstance\\(treespec, LeafSpec\\).*", ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=pattern)


def build_trainer(cfg: DictConfig, run_dir: Path, precision: str, callbacks, loggers):
    """``lightning.Trainer`` with every ``trainer.*`` key, ``precision`` resolved;
    checkpoints written atomically; no ``DistributedSampler`` (the data module's loaders
    take each process's part themselves); under SLURM, Lightning does not requeue (slurm/
    does)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("precision")
    plugins = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = L.Trainer(**kwargs, precision=precision, callbacks=callbacks, logger=loggers,
                        default_root_dir=str(run_dir), plugins=plugins,
                        use_distributed_sampler=False,
                        enable_progress_bar=rich_progress(cfg.callbacks.progress))
    _check_launcher(trainer)
    return trainer


def _check_launcher(trainer) -> None:
    """Refuse process launches whose processes this project's run logic cannot follow."""
    launcher = trainer.strategy.launcher
    if isinstance(launcher, _MultiProcessingLauncher):
        raise ValueError(
            f"trainer.strategy={type(trainer.strategy).__name__} forks or spawns the training "
            "function, but a run's claim, evaluation and results.json live in the launching "
            "process: use trainer.strategy=ddp (or auto)")
    if isinstance(launcher, _SubprocessScriptLauncher) and trainer.world_size > 1 and \
            not launcher.cluster_environment.creates_processes_externally and _in_multirun():
        raise ValueError(
            f"a local Hydra multirun (-m) cannot train with {trainer.world_size} processes: "
            "Lightning starts the other processes by re-running the command, which would "
            "re-run the whole sweep; launch the runs one at a time (poolbench-grid --index), "
            "or through SLURM (hydra/launcher=slurm, one task per device)")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def wait_for_other_processes(trainer, timeout_s: float = 300.0) -> None:
    """On global rank 0 of Lightning's own launcher: wait for the processes it started
    (ranks 1..N-1) and raise if one failed, so the command's exit status covers every
    rank (under SLURM, srun's does)."""
    failed = []
    for rank, proc in enumerate(getattr(trainer.strategy.launcher, "procs", None) or [], 1):
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = f"killed after {timeout_s:.0f} s"
        if code != 0:
            failed.append(f"local rank {rank} (pid {proc.pid}): exit status {code}")
    if failed:
        raise RuntimeError("other processes of this run failed after it ended: "
                           + "; ".join(failed))


def fit(trainer, module, dm, ckpt_path: str | None) -> tuple[str, str | None]:
    """(status, error): done, or diverged with why; an interrupted fit raises
    KeyboardInterrupt (the run stays interrupted and resumes when re-run)."""
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    except DivergedError as e:
        log.error("run diverged: %s", e)
        return rundir.DIVERGED, str(e)
    if trainer.interrupted:
        raise KeyboardInterrupt("training interrupted; re-run the same command to resume")
    return rundir.DONE, None
