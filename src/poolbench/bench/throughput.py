"""Training throughput of whole epochs as ``poolbench-train`` runs them, for
``poolbench-bench gpu-check``: Lightning, :class:`~poolbench.module.ClassifierModule`, the
run's precision (16-mixed on CUDA) and channels_last, eager or compiled in place
(:func:`poolbench.speed.compile_model`), cuDNN autotuning as a run sets it.

Data: synthetic, the size of the real sets (CIFAR-100: 50,000 images at 32x32, 100
classes; Tiny ImageNet: 100,000 at 64x64, 200 classes) and already on the device, as
poolbench's fast loader holds a dataset; one random batch is reused every step, so what
is timed is the training step and the framework around it, not the data pipeline
(``poolbench-bench data`` measures that).

Timing of one case: the first step on its own (synchronised: it compiles a compiled model
and autotunes cuDNN), then the rest of the case's steps (synchronised at the end): step
time = their mean; a *full* case runs a whole epoch, a *sampled* one ``steps`` steps, and
its epoch time is extrapolated (steps per epoch x step time). A compiled case's compile
time is its first step minus one steady step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

#: The fixture sizes of the check: name -> (train images, image size, classes).
DATASETS = {"cifar100": (50_000, 32, 100), "tinyimagenet": (100_000, 64, 200)}


@dataclass(frozen=True)
class Case:
    """One timed epoch (or sample of one)."""

    data: str
    model: str
    method: str
    compiled: bool
    full: bool  # a whole epoch (else ``steps`` steps, the epoch extrapolated)

    def label(self) -> str:
        return (f"{self.data}/{self.model}/{self.method}/"
                f"{'compiled' if self.compiled else 'eager'}")


@dataclass
class Setting:
    """What every case shares."""

    device: torch.device
    batch: int = 128
    width: int | None = None  # None: the models' real width (64)
    steps: int = 60  # steps of a sampled case
    images: dict | None = None  # data -> training images (None: DATASETS' sizes)
    compile_options: dict | None = None  # torch.compile options of compiled cases
    precision: str = "16-mixed"

    def train_images(self, data: str) -> int:
        return (self.images or {}).get(data, DATASETS[data][0])


class _Clock:
    """Lightning callback: the first step synchronised, then the rest."""

    def __new__(cls, device):
        import lightning as L

        class Clock(L.Callback):
            def __init__(self):
                self.device, self.t0, self.first_s, self.rest_s = device, 0.0, 0.0, 0.0

            def _sync(self):
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                return time.perf_counter()

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == 0:
                    self.t0 = self._sync()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if batch_idx == 0:
                    self.first_s = self._sync() - self.t0
                    self.t0 = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                self.rest_s = self._sync() - self.t0

        return Clock()


class Batches:
    """An iterable of batches with a length: what Lightning takes as one training loader
    (a plain list would be taken as a list of loaders)."""

    def __init__(self, items):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


def _batch(setting: Setting, size: int, classes: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(setting.batch, 3, size, size, generator=gen)
    y = torch.randint(0, classes, (setting.batch,), generator=gen)
    return (x.to(setting.device).contiguous(memory_format=torch.channels_last),
            y.to(setting.device))


def run_case(case: Case, setting: Setting) -> dict:
    """Train one case; its row: steps, step time, images/s, first step, compile, epoch."""
    import lightning as L

    from ..models import build_model
    from ..module import ClassifierModule
    from ..speed import compile_model, cudnn_benchmark

    images, size, classes = (setting.train_images(case.data), *DATASETS[case.data][1:])
    per_epoch = max(1, images // setting.batch)
    steps = per_epoch if case.full else max(2, min(setting.steps, per_epoch))
    torch.manual_seed(0)
    kwargs = {} if setting.width is None else {"width": setting.width}
    model = build_model(case.model, classes, pool=case.method, input_size=size, **kwargs)
    module = ClassifierModule(model, classes, seed=0, channels_last=True)
    if case.compiled:
        compile_model(module.model, setting.compile_options)
    cuda = setting.device.type == "cuda"
    benchmark = cudnn_benchmark(None, False, cuda)
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    clock = _Clock(setting.device)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=steps, accelerator="gpu" if cuda else "cpu",
        devices=1, precision=setting.precision if cuda else "32-true", logger=False,
        callbacks=[clock], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    batch = _batch(setting, size, classes)
    trainer.fit(module, train_dataloaders=Batches([batch] * steps))
    step_s = clock.rest_s / max(1, steps - 1)
    return dict(
        data=case.data, model=case.model, method=case.method,
        compile="compiled" if case.compiled else "eager", full_epoch=case.full,
        batch=setting.batch, image_size=size, width=setting.width or 64,
        precision=setting.precision if cuda else "32", device=setting.device.type,
        steps=steps, steps_per_epoch=per_epoch, step_ms=1e3 * step_s,
        img_per_s=setting.batch / step_s if step_s > 0 else float("nan"),
        first_step_s=clock.first_s,
        compile_s=max(0.0, clock.first_s - step_s) if case.compiled else float("nan"),
        epoch_s=(clock.first_s + clock.rest_s) if case.full else per_epoch * step_s)


def plan_cases(methods, models=("vgg16", "resnet18"), datasets=tuple(DATASETS)) -> list[Case]:
    """Every case in priority order, for a time budget to cut from the end. Eager first
    (cheap): max pooling's full epochs, then sampled epochs of the other methods; then
    compiled (each case compiles), dataset by dataset: max pooling's full epoch, then the
    other methods sampled."""
    others = [m for m in methods if m != "max"]
    cases = [Case(d, m, "max", False, True) for d in datasets for m in models]
    cases += [Case(d, m, p, False, False) for d in datasets for m in models for p in others]
    for d in datasets:
        cases += [Case(d, m, "max", True, True) for m in models]
        cases += [Case(d, m, p, True, False) for m in models for p in others]
    return cases


def run_cases(cases, setting: Setting, budget_s: float, log) -> tuple[list[dict], list[str]]:
    """Run ``cases`` in order while the budget lasts: (rows, labels of cases not run or
    failed with why). A case is started only if the time left exceeds the longest case
    of its kind so far (full or sampled, eager or compiled)."""
    rows, skipped, longest = [], [], {}
    start = time.perf_counter()
    for case in cases:
        left = budget_s - (time.perf_counter() - start)
        need = longest.get((case.full, case.compiled), 0.0)
        if left <= need:
            skipped.append(f"{case.label()}: skipped (budget: {left:.0f} s left, "
                           f"a case like it took {need:.0f} s)")
            continue
        t0 = time.perf_counter()
        try:
            row = run_case(case, setting)
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            skipped.append(f"{case.label()}: failed: {type(exc).__name__}: {exc}")
            log(f"  {case.label()}: failed ({type(exc).__name__}: {exc})")
            continue
        took = time.perf_counter() - t0
        longest[(case.full, case.compiled)] = max(took, need)
        rows.append(row)
        log(f"  {case.label()}: {row['step_ms']:.2f} ms/step, {row['img_per_s']:,.0f} img/s, "
            f"first step {row['first_step_s']:.1f} s ({took:.0f} s)")
    return rows, skipped


def step_times_csv(rows, path) -> None:
    """The eager rows as an ``overhead.csv`` that ``gpu-hours --step-times`` reads."""
    import csv

    cols = ("device", "model", "method", "batch", "image_size", "width", "precision",
            "step_ms", "error")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            if r["compile"] == "eager":
                w.writerow({**r, "error": ""})
