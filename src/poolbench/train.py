"""poolbench-train: one run of the grid (or a Hydra multirun of them).

    poolbench-train pool=stochastic_mix model=vgg16 data=cifar100 seed=1
    poolbench-train -m pool=max,softpool model=resnet18 seed=0,1,2

Hydra composes the run's config; then :func:`run`: the run directory (a pure function of
the run's identity, :mod:`poolbench.rundir`) decides: a finished run is skipped, an
interrupted one resumes from its ``last.ckpt``, ``force=true`` retrains; then
:func:`train_run`: build -> fit -> evaluate -> results.json, written once, atomically, at
the end. Callbacks and loggers are built by :mod:`poolbench.callbacks` and
:mod:`poolbench.loggers`. Heavy libraries are imported only after the skip check, so
skipping is fast.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import rundir
from .config import CONF_DIR, from_section, model_arguments, register_resolvers

register_resolvers()
log = logging.getLogger("poolbench.train")

_TRAINED_IN_PROCESS = 0  # runs train_run has started in this process (launch is the first's)


def set_threads(threads) -> None:
    """``threads``: CPU threads for the run's ops (``torch.set_num_threads``); None keeps
    PyTorch's default (one per core)."""
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads={threads!r} is not valid: use a whole number >= 1, or "
                         "null for PyTorch's default (one per core)")
    import torch

    torch.set_num_threads(threads)


def build(cfg: DictConfig):
    """(datamodule, LightningModule) for ``cfg``: each takes its config section (``data``,
    ``optim``) as keyword arguments."""
    from .data import PoolbenchDataModule
    from .models import build_model
    from .module import ClassifierModule

    dm = from_section(PoolbenchDataModule, cfg.data, "data", seed=cfg.seed)
    pool_hparams, model_kwargs = model_arguments(cfg)
    # input_size: a pool that cannot work at the data's resolution fails here, before training
    model = build_model(cfg.model.name, num_classes=dm.num_classes, pool=cfg.pool.name,
                        pool_hparams=pool_hparams, input_size=dm.image_size, **model_kwargs)
    module = from_section(
        ClassifierModule, cfg.optim, "optim", model, dm.num_classes, seed=cfg.seed,
        channels_last=cfg.channels_last,
        divergence_check_every_n_steps=cfg.callbacks.divergence_check_every_n_steps)
    return dm, module


def _resume(run_dir: Path) -> str | None:
    """The checkpoint to resume from (None: start), with metrics.csv cut back to it."""
    from .loggers import truncate_metrics

    ckpt_path, done = rundir.resume_point(run_dir)
    if ckpt_path:
        truncate_metrics(run_dir / rundir.METRICS, done - 1)
        log.info("resuming from %s after %d completed epoch(s)", ckpt_path, done)
    return ckpt_path


def train_run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, test and write results.json for one run. Returns the results dict."""
    import lightning as L
    import torch

    from .callbacks import FirstStepClock, build_callbacks
    from .config import project_root
    from .evaluate import evaluate, not_tested, speed
    from .loggers import build_loggers, update_summary, wandb_run_id
    from .models import model_summary
    from .trainer import build_trainer, fit, quiet_libraries, trainer_precision
    from .utils import device_description, git_commit, package_versions, process_start_time

    global _TRAINED_IN_PROCESS
    t_start = time.time()
    first_in_process = _TRAINED_IN_PROCESS == 0
    _TRAINED_IN_PROCESS += 1
    quiet_libraries()
    config = OmegaConf.to_container(cfg, resolve=True)
    rundir.start(run_dir, config)
    set_threads(cfg.get("threads"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, module = build(cfg)
    precision = trainer_precision(cfg.trainer)
    # Command to first step is the launch overhead of the first run a process trains only
    # (later runs of a multirun share the process and its start-up).
    clock = FirstStepClock(t_start, process_start_time() if first_in_process else None)
    callbacks, best = build_callbacks(cfg.callbacks, run_dir, (dm.val_size or 0) > 0, clock)
    ckpt_path = _resume(run_dir)
    loggers = build_loggers(cfg, run_dir, config)
    trainer = build_trainer(cfg, run_dir, precision, callbacks, loggers)
    status, error = fit(trainer, module, dm, ckpt_path)
    tested = evaluate(trainer, module, dm, best, run_dir) if status == rundir.DONE \
        else not_tested()
    results = rundir.results_record(
        config, run_dir, status, error, **tested, epochs_run=int(trainer.current_epoch),
        wall_time_s=time.time() - t_start, **clock.timing(),
        **speed(run_dir, module.epoch_times, len(dm.train_labels)),
        params=model_summary(module.model), precision=precision,
        threads=torch.get_num_threads(), device=device_description(),
        git_commit=git_commit(project_root()), versions=package_versions(),
        wandb_id=wandb_run_id(run_dir))
    rundir.write_results(run_dir, results)
    update_summary(loggers, results)
    _print_outcome(results)
    return results


def _print_outcome(results: dict) -> None:
    def top1(v):
        return "n/a" if v is None else f"{v:.4f}"

    print(f"[poolbench] {results['status']}: {results['run_dir']} (test top-1: final "
          f"{top1(results['test_top1_final'])}, best-val checkpoint "
          f"{top1(results['test_top1_best_val'])})", flush=True)


def run(cfg: DictConfig) -> dict | None:
    """Skip, resume or start the run ``cfg`` describes."""
    run_dir = Path(cfg.run_dir)
    status = rundir.finished_status(run_dir)
    if status and not cfg.force:
        print(f"[poolbench] {rundir.SKIP_NOTICE} ({status}): {run_dir}  (force=true retrains)",
              flush=True)
        return rundir.read_results(run_dir)
    if cfg.force:
        rundir.clear(run_dir)
    try:
        return train_run(cfg, run_dir)
    finally:
        # Always close the W&B run, so the next run of a multirun starts a fresh one. Only
        # poolbench.loggers starts W&B: not imported, nothing to finish.
        loggers = sys.modules.get("poolbench.loggers")
        if loggers is not None:
            loggers.finish_wandb()


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:
        print(f"[poolbench] run {_sweep_position(HydraConfig.get().job.num)}: {cfg.run_dir}",
              flush=True)
    try:
        run(cfg)
    except Exception:
        if multirun:  # one failed run must not abort the rest of a sweep: record it, go on
            log.exception("run failed: %s", cfg.run_dir)
        rundir.record_failure(Path(cfg.run_dir), cfg, traceback.format_exc(limit=20))
        if not multirun:
            raise


def _sweep_position(num: int) -> str:
    """``i/N`` for job ``num`` (0-based) of a sweep; N from ``$POOLBENCH_SWEEP_SIZE`` (which
    reproduce_results.sh sets from ``poolbench-grid --count``), else just ``i``."""
    total = os.environ.get("POOLBENCH_SWEEP_SIZE", "").strip()
    return f"{num + 1}/{total}" if total.isdigit() else str(num + 1)


if __name__ == "__main__":
    main()
