"""The callbacks of a run, built from ``conf/callbacks/`` (:func:`build_callbacks`): the
checkpoint policy (and :class:`AtomicCheckpointIO`, how checkpoints are written), progress
output (rich bars on a terminal, plain lines in SLURM logs) and the first training step's
clock.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, RichProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from . import rundir
from .utils import atomic_file, fsync_dir

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
    resume point, is rewritten every ``every_n_epochs`` epochs (:class:`LastCheckpoint`;
    after ``best``, so it holds ``best``'s state of the same epoch)."""
    best = None
    if has_val:
        best = ModelCheckpoint(dirpath=run_dir, filename=Path(rundir.BEST_CKPT).stem,
                               monitor="val/acc", mode="max", save_top_k=1,
                               auto_insert_metric_name=False, enable_version_counter=False)
    last = LastCheckpoint(run_dir, every_n_epochs)
    return [c for c in (best, last) if c is not None], best


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, fsyncs it and renames it into
    place (:func:`poolbench.utils.atomic_file`): a kill during a write leaves the previous
    file whole. (Lightning's own writer stages the file in the system's temporary directory
    and moves it over, which across file systems, a node's /tmp to shared outputs, is a
    copy into the final name, and it does not fsync.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        import torch

        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_file(path) as f:
            torch.save(checkpoint, f)


class LastCheckpoint(Checkpoint):
    """``last.ckpt``, the resume point: the state at the end of every ``every_n_epochs``-th
    epoch, made ``last.ckpt`` only once that epoch's metrics are in metrics.csv.

    Lightning logs an epoch's training metrics (train/loss, lr, epoch time, learned pooling
    parameters) after the checkpoint callbacks' ``on_train_epoch_end``. A checkpoint that
    became last.ckpt there would, after a kill in between, resume past an epoch whose
    training row never reaches metrics.csv. So the state is saved then (the loop state
    Lightning resumes from) to ``.last.ckpt.pending``, and renamed onto last.ckpt at the
    next hook, when the row is written: the next epoch's start, or the end of training.
    """

    def __init__(self, run_dir: Path, every_n_epochs: int = 1):
        self.path = Path(run_dir) / rundir.LAST_CKPT
        self.pending = Path(run_dir) / rundir.LAST_CKPT_PENDING
        self.every = max(1, int(every_n_epochs))
        self._saved = False

    def on_train_epoch_end(self, trainer, pl_module):
        if (trainer.current_epoch + 1) % self.every == 0:
            trainer.save_checkpoint(self.pending, weights_only=False)  # all call; rank 0 writes
            self._saved = True

    def _publish(self, trainer) -> None:
        if self._saved and trainer.is_global_zero:
            os.replace(self.pending, self.path)
            fsync_dir(self.path.parent)
        self._saved = False

    def on_train_epoch_start(self, trainer, pl_module):
        self._publish(trainer)

    def on_train_end(self, trainer, pl_module):
        self._publish(trainer)


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

    def _print(self, trainer, msg: str) -> None:
        if trainer.is_global_zero:  # one process speaks for a DDP run
            print(msg, file=self.stream, flush=True)

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n = trainer.num_training_batches
        if (batch_idx + 1) % self.every == 0 or batch_idx + 1 == n:
            rate = (batch_idx + 1) / max(1e-9, time.perf_counter() - self._t0)
            self._print(trainer, f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
                                 f"step {batch_idx + 1}/{n} ({rate:.2f} it/s)")

    def on_train_epoch_end(self, trainer, pl_module):
        # In Lightning 2.x the epoch's validation has already run when this is called.
        m = trainer.callback_metrics
        self._print(trainer, f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done: "
                    + _fmt(m, ("train/loss", "val/loss", "val/acc", "val/acc5")))

    def on_test_end(self, trainer, pl_module):
        result = getattr(pl_module, "test_result", None) or {}
        which = "best-val checkpoint" if trainer.ckpt_path else "final weights"
        self._print(trainer, f"test ({which}): "
                    + " ".join(f"{k}={v:.4f}" for k, v in result.items()))


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
