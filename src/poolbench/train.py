"""poolbench-train: one run of the grid (or a Hydra multirun of them).

    poolbench-train pool=stochastic_mix model=vgg16 data=cifar100 seed=1
    poolbench-train -m pool=max,softpool model=resnet18 seed=0,1,2

A run lives in a directory that is a pure function of its identity (poolbench.rundir).
Re-running the same command skips a finished run, resumes an interrupted one from its
``last.ckpt``, and ``force=true`` retrains. ``results.json`` is written once, atomically,
at the end. Heavy libraries are imported only after the skip check, so skipping is fast.
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
from .config import CONF_DIR, model_arguments, register_resolvers

register_resolvers()
log = logging.getLogger("poolbench.train")

_TRAINED_IN_PROCESS = 0  # runs train_run has started in this process (launch is the first's)


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


def _wandb_logger(cfg: DictConfig, run_dir: Path):
    import secrets

    from lightning.pytorch.loggers import WandbLogger

    w = cfg.logger.wandb
    id_file = run_dir / rundir.WANDB_ID  # kept so a resumed run continues the same W&B run
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)
    id_file.write_text(run_id + "\n")
    tags = [str(t) for t in (cfg.experiment_name, cfg.data.name, cfg.model.name, cfg.pool.name,
                             *cfg.tags)]
    return WandbLogger(
        project=w.project, entity=w.entity, mode=w.mode, save_dir=str(run_dir), id=run_id,
        resume="allow", group=f"{cfg.data.name}-{cfg.model.name}-{cfg.pool.name}",
        name=f"{cfg.pool.name}-{cfg.model.name}-{cfg.data.name}-seed{cfg.seed}",
        tags=tags, job_type=w.job_type, log_model=w.log_model,
    )


def build(cfg: DictConfig):
    """(datamodule, LightningModule) for ``cfg``."""
    from .data import PoolbenchDataModule
    from .models import build_model
    from .module import ClassifierModule

    d = cfg.data
    dm = PoolbenchDataModule(
        d.name, d.root, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
        val_size=d.val_size, split_seed=d.split_seed, loader=d.loader,
        num_workers=d.num_workers, download=d.download, crop_padding=d.crop_padding,
        flip=d.flip, seed=cfg.seed)
    pool_hparams, model_kwargs = model_arguments(cfg)
    model = build_model(cfg.model.name, num_classes=dm.num_classes, pool=cfg.pool.name,
                        pool_hparams=pool_hparams, **model_kwargs)
    o = cfg.optim
    module = ClassifierModule(
        model, dm.num_classes, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
        nesterov=o.nesterov, warmup_epochs=o.warmup_epochs, min_lr=o.min_lr, seed=cfg.seed,
        channels_last=cfg.channels_last,
        divergence_check_every_n_steps=cfg.callbacks.divergence_check_every_n_steps)
    return dm, module


def _epoch_metrics(run_dir: Path):
    """Per-epoch rows of metrics.csv (one row per epoch, columns merged)."""
    import pandas as pd

    path = run_dir / rundir.METRICS
    if not path.exists():
        return None
    df = pd.read_csv(path)
    if "epoch" not in df:
        return None
    return df.groupby("epoch").last().reset_index()


def _quiet_libraries() -> None:
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


def train_run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, test and write results.json for one run. Returns the results dict."""
    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from .callbacks import FirstStepClock, PlainProgress
    from .config import project_root
    from .loggers import ResumableCSVLogger, truncate_metrics
    from .models import model_summary
    from .module import DivergedError
    from .utils import device_description, git_commit, package_versions, process_start_time

    global _TRAINED_IN_PROCESS
    t_start = time.time()
    first_in_process = _TRAINED_IN_PROCESS == 0
    _TRAINED_IN_PROCESS += 1
    _quiet_libraries()
    config = OmegaConf.to_container(cfg, resolve=True)
    rundir.start(run_dir, config)
    threads = cfg.get("threads")
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads={threads!r} is not valid: use a whole number >= 1, or "
                             "null for PyTorch's default (one per core)")
        torch.set_num_threads(threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, module = build(cfg)

    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    precision, msg = resolve_precision(trainer_kwargs.pop("precision"),
                                       str(trainer_kwargs.get("accelerator", "auto")))
    if msg:
        log.warning(msg)
    has_val = (dm.val_size or 0) > 0
    # Command to first step is the launch overhead of the first run a process trains only
    # (later runs of a multirun share the process and its start-up).
    clock = FirstStepClock(t_start, process_start_time() if first_in_process else None)
    callbacks = [clock]
    best_cb = None
    if has_val:
        best_cb = ModelCheckpoint(dirpath=run_dir, filename=Path(rundir.BEST_CKPT).stem, monitor="val/acc", mode="max",
                                  save_top_k=1, auto_insert_metric_name=False,
                                  enable_version_counter=False)
        callbacks.append(best_cb)
    # last.ckpt, the resume point, every epoch.
    # (save_top_k=1 without a monitor keeps the latest; save_last=True alone would write
    # last.ckpt only when another checkpoint is saved, i.e. not every epoch.)
    callbacks.append(ModelCheckpoint(dirpath=run_dir, filename=Path(rundir.LAST_CKPT).stem,
                                     monitor=None,
                                     save_top_k=1,
                                     every_n_epochs=cfg.callbacks.checkpoint_every_n_epochs,
                                     enable_version_counter=False))
    progress = cfg.callbacks.progress
    use_rich = progress == "rich" or (progress == "auto" and sys.stdout.isatty())
    if use_rich:
        callbacks.append(RichProgressBar())
    else:
        callbacks.append(PlainProgress(cfg.callbacks.progress_every_n_steps))
    ckpt_path, done = rundir.resume_point(run_dir)
    if ckpt_path:
        truncate_metrics(run_dir / rundir.METRICS, done - 1)
        log.info("resuming from %s after %d completed epoch(s)", ckpt_path, done)
    loggers = [ResumableCSVLogger(run_dir)]
    if cfg.logger.wandb.enabled:
        loggers.append(_wandb_logger(cfg, run_dir))
        loggers[-1].log_hyperparams(config)
    plugins = [SLURMEnvironment(auto_requeue=False)] if "SLURM_JOB_ID" in os.environ else None

    trainer = L.Trainer(
        **trainer_kwargs, precision=precision, callbacks=callbacks, logger=loggers,
        default_root_dir=str(run_dir), enable_progress_bar=use_rich, plugins=plugins,
    )
    status, error = rundir.DONE, None
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    except DivergedError as e:
        status, error = rundir.DIVERGED, str(e)
        log.error("run diverged: %s", e)
    if status == rundir.DONE and trainer.interrupted:
        raise KeyboardInterrupt("training interrupted; re-run the same command to resume")

    test = {"final": None, "best_val": None}
    predictions = {}
    best_val_acc = best_val_epoch = None
    if status == rundir.DONE:
        trainer.test(module, datamodule=dm, verbose=False)
        test["final"] = module.test_result
        predictions["final"] = torch.cat(module.test_predictions).numpy()
        if best_cb is not None and best_cb.best_model_path:
            best_val_acc = float(best_cb.best_model_score)
            best_val_epoch = int(torch.load(best_cb.best_model_path, map_location="cpu",
                                            weights_only=False)["epoch"])
            trainer.test(module, datamodule=dm, ckpt_path=best_cb.best_model_path,
                         verbose=False)
            test["best_val"] = module.test_result
            predictions["best_val"] = torch.cat(module.test_predictions).numpy()
        predictions["labels"] = dm.test_labels.numpy()
        np.savez_compressed(run_dir / rundir.PREDICTIONS, **predictions)

    epochs = _epoch_metrics(run_dir)
    epoch_times = list(epochs["time/epoch_s"].dropna()) if epochs is not None and \
        "time/epoch_s" in epochs else module.epoch_times
    mean_epoch = float(np.mean(epoch_times)) if len(epoch_times) else None
    train_images = len(dm.train_labels)
    summary = model_summary(module.model)
    results = rundir.results_record(
        config, run_dir, status, error, test=test, best_val_acc=best_val_acc,
        best_val_epoch=best_val_epoch, epochs_run=int(trainer.current_epoch),
        wall_time_s=time.time() - t_start, **clock.timing(), mean_epoch_time_s=mean_epoch,
        throughput_img_s=(train_images / mean_epoch) if (train_images and mean_epoch) else None,
        params=summary, precision=precision, threads=torch.get_num_threads(),
        device=device_description(), git_commit=git_commit(project_root()),
        versions=package_versions(), wandb_id=(run_dir / rundir.WANDB_ID).read_text().strip()
        if (run_dir / rundir.WANDB_ID).exists() else None)
    rundir.write_results(run_dir, results)
    for lg in loggers[1:]:
        lg.experiment.summary.update({k: v for k, v in results.items()
                                      if isinstance(v, (int, float, str)) and v is not None})
    def top1(v):
        return "n/a" if v is None else f"{v:.4f}"

    print(f"[poolbench] {status}: {run_dir} (test top-1: final {top1(results['test_top1_final'])}"
          f", best-val checkpoint {top1(results['test_top1_best_val'])})", flush=True)
    return results


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
        _finish_wandb()


def _finish_wandb() -> None:
    """Always close the W&B run, so the next run of a multirun starts a fresh one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=0 if sys.exc_info()[0] is None else 1)


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
        if multirun:
            # One failed run must not abort the rest of a sweep: record it and go on.
            log.exception("run failed: %s", cfg.run_dir)
            rundir.record_failure(Path(cfg.run_dir), cfg, traceback.format_exc(limit=20))
            return
        rundir.record_failure(Path(cfg.run_dir), cfg, traceback.format_exc(limit=20))
        raise


def _sweep_position(num: int) -> str:
    """``i/N`` for job ``num`` (0-based) of a sweep; N from ``$POOLBENCH_SWEEP_SIZE`` (which
    reproduce_results.sh sets from ``poolbench-grid --count``), else just ``i``."""
    total = os.environ.get("POOLBENCH_SWEEP_SIZE", "").strip()
    return f"{num + 1}/{total}" if total.isdigit() else str(num + 1)


if __name__ == "__main__":
    main()
