"""poolbench-train: one run of the grid (or a Hydra multirun of them).

    poolbench-train pool=stochastic_mix model=vgg16 data=cifar100 seed=1
    poolbench-train -m pool=max,softpool model=resnet18 seed=0,1,2

Hydra composes the run's config; then :func:`run`: the allocation is checked
(:mod:`poolbench.cluster`) and the run directory (a pure function of the run's identity,
:mod:`poolbench.rundir`) is claimed: a finished run is skipped, and so is one that another
live launch owns; otherwise this launch owns it, an interrupted run resumes from its
``last.ckpt``, ``force=true`` retrains; then :func:`train_run`: build -> fit -> evaluate ->
results.json, written once, atomically, at the end. Callbacks and loggers are built by
:mod:`poolbench.callbacks` and :mod:`poolbench.loggers`. Heavy libraries are imported only
after the skip check, so skipping is fast.

Under DDP (``trainer.devices=N``, ``trainer.num_nodes=M``) every process runs this: global
rank 0 claims the directory and the others follow its decision (:func:`rundir.claim`);
they all train, test and compute the results; rank 0 alone writes.
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

from . import cluster, rundir
from .config import CONF_DIR, from_section, model_arguments, register_resolvers

register_resolvers()
log = logging.getLogger("poolbench.train")

_TRAINED_IN_PROCESS = 0  # runs train_run has started in this process (launch is the first's)


def set_threads(threads) -> None:
    """``threads``: CPU threads for the run's ops (``torch.set_num_threads``, and
    ``OMP_NUM_THREADS`` for the processes Lightning starts, which it would otherwise set to
    cores / processes); None keeps PyTorch's default (one per core)."""
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads={threads!r} is not valid: use a whole number >= 1, or "
                         "null for PyTorch's default (one per core)")
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def build(cfg: DictConfig):
    """(datamodule, LightningModule) for ``cfg``: each takes its config section (``data``,
    ``optim``) as keyword arguments."""
    from .data import datamodule_class
    from .models import build_model
    from .module import ClassifierModule

    dm = from_section(datamodule_class(cfg.data.name), cfg.data, "data", seed=cfg.seed)
    pool_hparams, model_kwargs = model_arguments(cfg)
    # input_size: a pool that cannot work at the data's resolution fails here, before training
    model = build_model(cfg.model.name, num_classes=dm.num_classes, pool=cfg.pool.name,
                        pool_hparams=pool_hparams, input_size=dm.image_size, **model_kwargs)
    module = from_section(
        ClassifierModule, cfg.optim, "optim", model, dm.num_classes, seed=cfg.seed,
        channels_last=cfg.channels_last,
        divergence_check_every_n_steps=cfg.callbacks.divergence_check_every_n_steps)
    return dm, module


def _resume(claim: rundir.Claim) -> None:
    """Cut metrics.csv back to the checkpoint the run resumes from (rank 0): the rows of
    the epochs it completed; none when it starts afresh (a run killed before its first
    last.ckpt may have logged part of its first epoch)."""
    from .loggers import truncate_metrics

    if claim.leader:
        truncate_metrics(claim.run_dir / rundir.METRICS, claim.epochs_done - 1)
    if claim.ckpt_path:
        log.info("resuming from %s after %d completed epoch(s)", claim.ckpt_path,
                 claim.epochs_done)


def train_run(cfg: DictConfig, run_dir: Path, claim: rundir.Claim) -> dict | None:
    """Train, test and write results.json for one run (``claim``: rank 0's decision).
    Returns the results dict (global rank 0; None on the other ranks)."""
    import lightning as L

    from .callbacks import FirstStepClock, build_callbacks
    from .evaluate import evaluate, not_tested
    from .loggers import build_loggers, update_summary
    from .speed import apply_speed_knobs
    from .trainer import (build_trainer, fit, quiet_libraries, trainer_precision,
                          wait_for_other_processes)
    from .utils import process_start_time

    global _TRAINED_IN_PROCESS
    t_start = time.time()
    first_in_process = _TRAINED_IN_PROCESS == 0
    _TRAINED_IN_PROCESS += 1
    quiet_libraries()
    config = OmegaConf.to_container(cfg, resolve=True)
    if claim.leader:
        rundir.start(run_dir, config)
    set_threads(cfg.get("threads"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, module = build(cfg)
    apply_speed_knobs(cfg, module)  # torch.compile, cuDNN autotuning
    precision = trainer_precision(cfg.trainer)
    # Command to first step is the launch overhead of the first run a process trains only
    # (later runs of a multirun share the process and its start-up).
    clock = FirstStepClock(t_start, process_start_time() if first_in_process else None)
    callbacks, best = build_callbacks(cfg.callbacks, run_dir, (dm.val_size or 0) > 0, clock)
    _resume(claim)
    loggers = build_loggers(cfg, run_dir, config, claim.leader)
    trainer = build_trainer(cfg, run_dir, precision, callbacks, loggers)
    if trainer.is_global_zero != claim.leader:
        raise RuntimeError(f"Lightning made this process global rank {trainer.global_rank}, but "
                           f"its environment says {'' if claim.leader else 'not '}rank 0: the "
                           "launcher's rank variables disagree with Lightning's cluster "
                           "environment")
    status, error = fit(trainer, module, dm, claim.ckpt_path)
    tested = evaluate(trainer, module, dm, best, run_dir) if status == rundir.DONE \
        else not_tested()
    results = rundir.results_record(config, run_dir, status, error, **tested,
                                    **_measured(run_dir, trainer, dm, module, clock, precision, t_start))
    trainer.strategy.barrier("poolbench.results")  # all processes done: rank 0 writes the end
    if not claim.leader:
        return None
    claim.check_owner()
    rundir.write_results(run_dir, results)
    update_summary(loggers, results)
    _print_outcome(results)
    wait_for_other_processes(trainer)
    return results


def _measured(run_dir: Path, trainer, dm, module, clock, precision: str, t_start: float) -> dict:
    """results.json's fields that the run measured, besides its test accuracies."""
    from .evaluate import run_environment, speed
    from .loggers import wandb_run_id

    return dict(
        epochs_run=int(trainer.current_epoch), wall_time_s=time.time() - t_start,
        **clock.timing(), **speed(run_dir, module.epoch_times, len(dm.train_labels)),
        **run_environment(module.model, precision),
        wandb_id=wandb_run_id(run_dir), world_size=int(trainer.world_size),
        batch_size_per_device=dm.batch_size_per_device(), global_batch_size=dm.batch_size,
        optimizer_steps=int(trainer.global_step))


def _print_outcome(results: dict) -> None:
    def top1(v):
        return "n/a" if v is None else f"{v:.4f}"

    print(f"[poolbench] {results['status']}: {results['run_dir']} (test top-1: final "
          f"{top1(results['test_top1_final'])}, best-val checkpoint "
          f"{top1(results['test_top1_best_val'])})", flush=True)


def run(cfg: DictConfig) -> dict | None:
    """Skip, resume or start the run ``cfg`` describes (every process of a DDP launch)."""
    run_dir = Path(cfg.run_dir)
    cluster.check_allocation(cfg)  # SLURM's allocation vs trainer.devices x trainer.num_nodes
    claim = rundir.claim(run_dir, force=cfg.force, wait_for_owner=cfg.wait_for_owner)
    if claim.skipped:
        print(f"[poolbench] {claim.message}", flush=True)
        return rundir.read_results(run_dir)
    if not claim.leader:  # rank 0 tells what happens; the others log warnings and errors
        logging.getLogger("poolbench").setLevel(logging.WARNING)
    try:
        return train_run(cfg, run_dir, claim)
    finally:
        claim.release()
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
