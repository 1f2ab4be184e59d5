"""The callbacks of a run, built from ``conf/callbacks/`` (:func:`build_callbacks`): the
checkpoint policy, progress output (rich bars on a terminal, plain lines in SLURM logs) and
the first training step's clock.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from . import rundir

log = logging.getLogger("poolbench.train")

PROGRESS = ("auto", "rich", "plain")


def rich_progress(progress: str) -> bool:
    """Whether ``callbacks.progress`` asks for rich bars: ``rich``, or ``auto`` on a terminal
    (``plain``: :class:`PlainProgress` lines, for logs that are files)."""
    if progress not in PROGRESS:
        raise ValueError(f"callbacks.progress={progress!r} is not valid; choose one of "
                         f"{list(PROGRESS)}")
    return progress == "rich" or (progress == "auto" and sys.stdout.isatty())


def checkpoints(run_dir: Path, has_val: bool, every_n_epochs: int):
    """(checkpoint callbacks, the best-validation one or None): ``best.ckpt`` keeps the best
    ``val/acc`` (only with a validation split: nothing selects on test), ``last.ckpt``, the
    resume point, is rewritten every ``every_n_epochs`` epochs."""
    best = None
    if has_val:
        best = ModelCheckpoint(dirpath=run_dir, filename=Path(rundir.BEST_CKPT).stem,
                               monitor="val/acc", mode="max", save_top_k=1,
                               auto_insert_metric_name=False, enable_version_counter=False)
    # save_top_k=1 without a monitor keeps the latest; save_last=True alone would write
    # last.ckpt only when another checkpoint is saved, i.e. not every epoch.
    last = ModelCheckpoint(dirpath=run_dir, filename=Path(rundir.LAST_CKPT).stem, monitor=None,
                           save_top_k=1, every_n_epochs=every_n_epochs,
                           enable_version_counter=False)
    return [c for c in (best, last) if c is not None], best


def build_callbacks(cfg, run_dir: Path, has_val: bool, clock: "FirstStepClock"):
    """(callbacks, best-validation checkpoint or None) of a run from its ``callbacks``
    config: ``clock``, the :func:`checkpoints` and the progress output."""
    ckpts, best = checkpoints(run_dir, has_val, cfg.checkpoint_every_n_epochs)
    progress = RichProgressBar() if rich_progress(cfg.progress) \
        else PlainProgress(cfg.progress_every_n_steps)
    return [clock, *ckpts, progress], best


def _fmt(metrics: dict, keys) -> str:
    parts = []
    for k in keys:
        v = metrics.get(k)
        if v is not None:
            parts.append(f"{k}={float(v):.4f}")
    return " ".join(parts)


class PlainProgress(L.Callback):
    """Prints a line every ``every_n_steps`` training steps and one per epoch, flushing each.

    Meant for logs that are files (SLURM, nohup): no carriage returns, no bars.
    """

    def __init__(self, every_n_steps: int = 50, stream=None):
        self.every = max(1, int(every_n_steps))
        self.stream = stream or sys.stdout
        self._t0 = None

    def _print(self, msg: str) -> None:
        print(msg, file=self.stream, flush=True)

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n = trainer.num_training_batches
        if (batch_idx + 1) % self.every == 0 or batch_idx + 1 == n:
            rate = (batch_idx + 1) / max(1e-9, time.perf_counter() - self._t0)
            self._print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
                        f"step {batch_idx + 1}/{n} ({rate:.2f} it/s)")

    def on_train_epoch_end(self, trainer, pl_module):
        # In Lightning 2.x the epoch's validation has already run when this is called.
        m = trainer.callback_metrics
        self._print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done: "
                    + _fmt(m, ("train/loss", "val/loss", "val/acc", "val/acc5")))

    def on_test_end(self, trainer, pl_module):
        result = getattr(pl_module, "test_result", None) or {}
        which = "best-val checkpoint" if trainer.ckpt_path else "final weights"
        self._print(f"test ({which}): " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))


class FirstStepClock(L.Callback):
    """Records and logs when the run's first training step starts (Unix time), once.

    ``first_step_at`` stays None when no step ran (e.g. resuming a run whose epochs are all
    done). With ``process_started`` (the first run of a process) the log line gives the launch
    overhead, command to first step; without, the time since ``run_started``.
    """

    def __init__(self, run_started: float, process_started: float | None = None):
        self.run_started = run_started
        self.process_started = process_started
        self.first_step_at: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step_at is not None:
            return
        self.first_step_at = time.time()
        if self.process_started is not None:
            log.info("first training step %.1f s after the process started",
                     self.first_step_at - self.process_started)
        else:
            log.info("first training step %.1f s after this run started",
                     self.first_step_at - self.run_started)

    def timing(self) -> dict:
        """``first_step_at``; ``startup_s`` since the run started; ``launch_s`` since the
        process started (first run of a process only), None where unknown."""
        t = self.first_step_at
        return {
            "first_step_at": t,
            "startup_s": None if t is None else t - self.run_started,
            "launch_s": None if t is None or self.process_started is None
            else t - self.process_started,
        }
