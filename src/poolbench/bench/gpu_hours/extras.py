"""What a run costs besides its training and evaluation steps (step 3 adds it to each run):

* **framework** per training step: Lightning's loop and hooks and poolbench's module (per-step
  seeding, loss logging, the non-finite counter), the part of ``poolbench-train``'s step that
  a plain PyTorch loop does not have: 0.6 ms, the plain-loop-vs-``poolbench-train``
  measurement on CPU reported in issue 12. :func:`measure_framework_ms` re-measures it (the
  same tiny model and batches through a plain loop and through Lightning with
  :class:`~poolbench.module.ClassifierModule`, process CPU time, one thread); on the shared
  2-core machine of this change (load ~20) the difference was lost in the noise (-3.5 ms of
  an 89 ms step), so the default is the issue's figure: *measured elsewhere, not
  reproduced here*. It is host work: a GPU's host runs ahead of the GPU and hides it where
  the step is GPU-bound, so adding it is an upper bound.
* **checkpoints** per epoch: ``last.ckpt`` every epoch and ``best.ckpt`` whenever validation
  improves (counted every epoch: an upper bound), each the weights and SGD's momentum in
  fp32: 8 bytes per parameter; the write rate is *measured* (:func:`measure_checkpoint_mb_s`:
  ``torch.save`` of VGG16's weights and momentum, 118 MB, fsync'd) on this change's machine:
  42 MB/s (a busy, shared disk; a cluster's file system may be faster or slower).
* **start-up** per run: *assumed*. ``poolbench-bench launch`` measures command to first step
  on CPU with fixture data at about 6.5 s (docs/bench_launch.md); a GPU job adds CUDA
  context creation, cuDNN's first autotuning and reading the real dataset: 20 s assumed.
  A compiled run (``compile=true``) also compiles: 60 s assumed per run (training and
  evaluation graphs; ``poolbench-bench gpu-check`` measures it on a GPU).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# `python -m poolbench.bench.gpu_hours.extras` measures both (docs/gpu.md has its output).
DEFAULT_FRAMEWORK_MS = 0.6  # issue 12's CPU measurement (not reproduced on a loaded machine)
DEFAULT_CHECKPOINT_MB_S = 40.0  # measured here: 42 MB/s
# Assumed (see the module docstring).
DEFAULT_STARTUP_S = 20.0
DEFAULT_COMPILE_S = 60.0
CHECKPOINTS_PER_EPOCH = 2  # last.ckpt, and best.ckpt at most once an epoch
CHECKPOINT_BYTES_PER_PARAM = 8  # fp32 weight + fp32 momentum buffer


@dataclass(frozen=True)
class RunExtras:
    """The per-run terms' settings and whether each is measured or assumed."""

    framework_ms: float = DEFAULT_FRAMEWORK_MS
    checkpoint_mb_s: float = DEFAULT_CHECKPOINT_MB_S
    startup_s: float = DEFAULT_STARTUP_S
    compile_s: float = DEFAULT_COMPILE_S

    def check(self) -> None:
        for name in ("framework_ms", "startup_s", "compile_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if not self.checkpoint_mb_s > 0:
            raise ValueError(f"--checkpoint-mb-s must be > 0, got {self.checkpoint_mb_s}")

    def describe(self) -> str:
        return (f"framework {self.framework_ms:g} ms per training step (measured on CPU as "
                "a plain loop vs poolbench-train, issue 12; `--framework-ms`); checkpoints "
                f"{CHECKPOINTS_PER_EPOCH} per epoch x "
                f"{CHECKPOINT_BYTES_PER_PARAM} bytes per parameter at "
                f"{self.checkpoint_mb_s:g} MB/s (write rate measured on a shared local disk, "
                f"`--checkpoint-mb-s`); start-up {self.startup_s:g} s per run (assumed, "
                f"`--startup-s`); compilation {self.compile_s:g} s per compiled run "
                "(assumed, `--compile-s`)")


def extra_seconds(train_steps: int, epochs: int, params: int, compiled: bool,
                  extras: RunExtras) -> dict:
    """Seconds of one run's framework, checkpoint and start-up (+ compile) terms."""
    ckpt_mb = params * CHECKPOINT_BYTES_PER_PARAM / 1e6
    return dict(framework_s=train_steps * extras.framework_ms / 1e3,
                checkpoint_s=epochs * CHECKPOINTS_PER_EPOCH * ckpt_mb / extras.checkpoint_mb_s,
                startup_s=extras.startup_s + (extras.compile_s if compiled else 0.0))


# ------------------------------------------------------------------------------ measuring

def _batches(n_batches: int, batch: int, size: int = 32, classes: int = 10):
    import torch

    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, size, size, generator=gen),
             torch.randint(0, classes, (batch,), generator=gen)) for _ in range(n_batches)]


def _plain_epoch_s(model, batches) -> float:
    import torch
    from torch.nn import functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    c0 = time.process_time()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.process_time() - c0


def _lightning_epoch_s(model, batches, epochs: int, root: str) -> list[float]:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from ...module import ClassifierModule
    from ..throughput import Batches

    class Clock(L.Callback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = time.process_time()

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(time.process_time() - self.t0)

    clock = Clock()
    module = ClassifierModule(model, 10, lr=0.01, channels_last=False)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(root),
                        callbacks=[clock], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=50)
    trainer.fit(module, train_dataloaders=Batches(batches))
    return clock.times


def measure_framework_ms(steps: int = 40, epochs: int = 4, batch: int = 32,
                         width: int = 8) -> dict:
    """Per-step CPU time of poolbench-train's step (Lightning + ClassifierModule) minus a
    plain loop's, same model (VGG16, max pooling, ``width``) and batches, one thread;
    medians over ``epochs`` (the first of each left out)."""
    import torch

    from ...models import build_model

    torch.set_num_threads(1)
    batches = _batches(steps, batch)
    torch.manual_seed(0)
    plain = [_plain_epoch_s(build_model("vgg16", 10, width=width), batches)
             for _ in range(epochs)][1:]
    with tempfile.TemporaryDirectory() as root:
        torch.manual_seed(0)
        lit = _lightning_epoch_s(build_model("vgg16", 10, width=width), batches, epochs,
                                 root)[1:]
    plain_ms = 1e3 * statistics.median(plain) / steps
    lit_ms = 1e3 * statistics.median(lit) / steps
    return dict(plain_ms=plain_ms, poolbench_ms=lit_ms, framework_ms=lit_ms - plain_ms,
                steps=steps, epochs=epochs, batch=batch, width=width)


def measure_checkpoint_mb_s(model: str = "vgg16", repeats: int = 3,
                            directory: str | None = None) -> dict:
    """MB/s of ``torch.save`` of a full-width model's weights and momentum (as a Lightning
    checkpoint holds them) to ``directory`` (default: the temp directory), fsync'd."""
    import os

    import torch

    from ...models import build_model

    net = build_model(model, 100)
    state = {"state_dict": net.state_dict(),
             "momentum": [torch.zeros_like(p) for p in net.parameters()]}
    times, size = [], 0
    with tempfile.TemporaryDirectory(dir=directory) as d:
        path = Path(d) / "ckpt.pt"
        for _ in range(repeats):
            t0 = time.perf_counter()
            with open(path, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            times.append(time.perf_counter() - t0)
            size = path.stat().st_size
    return dict(model=model, mb=size / 1e6, seconds=statistics.median(times),
                mb_s=size / 1e6 / statistics.median(times))


if __name__ == "__main__":
    print("framework:", measure_framework_ms())
    print("checkpoint:", measure_checkpoint_mb_s())
