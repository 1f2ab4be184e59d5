"""The Lightning Trainer of a run, from ``conf/trainer/`` (every key is passed to
``lightning.Trainer``): precision resolved for the device at hand, SLURM's environment
without Lightning's requeueing, library logging reduced to what a run's log needs, and
:func:`fit`, which tells a finished run from a diverged or interrupted one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from . import rundir
from .callbacks import rich_progress
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
    """``lightning.Trainer`` with every ``trainer.*`` key, ``precision`` resolved; under
    SLURM, Lightning does not requeue (slurm/ does)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("precision")
    plugins = [SLURMEnvironment(auto_requeue=False)] if "SLURM_JOB_ID" in os.environ else None
    return L.Trainer(**kwargs, precision=precision, callbacks=callbacks, logger=loggers,
                     default_root_dir=str(run_dir), plugins=plugins,
                     enable_progress_bar=rich_progress(cfg.callbacks.progress))


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
