"""The loggers of a run, built from ``conf/logger/`` (:func:`build_loggers`): metrics.csv
always (a CSV logger that survives resumption: Lightning's deletes metrics.csv when it
starts), W&B when enabled, whose run is always finished (:func:`finish_wandb`).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from . import rundir


def build_loggers(cfg, run_dir: Path, config: dict) -> list:
    """[metrics.csv logger, W&B logger (with ``config``, the resolved run config, as its
    hyperparameters) if ``logger.wandb.enabled``]."""
    loggers = [ResumableCSVLogger(run_dir)]
    if cfg.logger.wandb.enabled:
        loggers.append(wandb_logger(cfg, run_dir))
        loggers[-1].log_hyperparams(config)
    return loggers


def wandb_run_id(run_dir: Path) -> str | None:
    """The W&B run id a run in ``run_dir`` logs to, or None before its first W&B start."""
    id_file = Path(run_dir) / rundir.WANDB_ID
    return id_file.read_text().strip() if id_file.exists() else None


def wandb_logger(cfg, run_dir: Path) -> WandbLogger:
    """W&B logger of a run: group ``<data>-<model>-<pool>``, named with its seed, tagged with
    its identity and ``tags``; its id kept in the run directory, so a resumed run continues
    the same W&B run."""
    import secrets

    w = cfg.logger.wandb
    run_id = wandb_run_id(run_dir) or secrets.token_hex(6)
    (Path(run_dir) / rundir.WANDB_ID).write_text(run_id + "\n")
    tags = [str(t) for t in (cfg.experiment_name, cfg.data.name, cfg.model.name, cfg.pool.name,
                             *cfg.tags)]
    return WandbLogger(
        project=w.project, entity=w.entity, mode=w.mode, save_dir=str(run_dir), id=run_id,
        resume="allow", group=f"{cfg.data.name}-{cfg.model.name}-{cfg.pool.name}",
        name=f"{cfg.pool.name}-{cfg.model.name}-{cfg.data.name}-seed{cfg.seed}",
        tags=tags, job_type=w.job_type, log_model=w.log_model,
    )


def update_summary(loggers, results: dict) -> None:
    """Put results.json's scalars into the W&B run's summary (where W&B has them)."""
    scalars = {k: v for k, v in results.items()
               if isinstance(v, (int, float, str)) and v is not None}
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(scalars)


def finish_wandb() -> None:
    """Close the W&B run (exit code 1 while an exception is being handled), so the next run
    of a multirun starts a fresh one; a no-op when W&B was never started."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=0 if sys.exc_info()[0] is None else 1)


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep the rows of the epochs before the resume point; continue the same header.
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/metrics.csv`` that appends on resume.

    Call :func:`truncate_metrics` first with the epoch the run resumes after, so rows of a
    partly-run epoch (logged before a kill, after the last checkpoint) are not duplicated.
    """

    def __init__(self, save_dir: str | Path):
        super().__init__(save_dir=str(save_dir), name="", version="")

    @property
    def experiment(self):
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def truncate_metrics(path: str | Path, last_complete_epoch: int) -> None:
    """Drop rows of ``metrics.csv`` whose epoch is after ``last_complete_epoch``."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = [r for r in reader if r.get("epoch") in (None, "")
                or int(float(r["epoch"])) <= last_complete_epoch]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
