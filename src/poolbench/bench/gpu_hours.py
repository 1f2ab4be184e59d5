"""GPU-hours of an experiment grid: ``poolbench-bench gpu-hours EXPERIMENT [OVERRIDES ...]``.

What a user planning a sweep needs before launching it: how many GPU-hours the runs of
``poolbench-train -m experiment=<EXPERIMENT> [OVERRIDES]`` take on one GPU (an H100 by
default), one run after another.

How it is computed:

1. **Runs.** :func:`poolbench.grid.grid_runs` enumerates the runs exactly as Hydra's basic
   sweeper does, and every run's config is composed with Hydra as
   :func:`poolbench.grid.resolve_run_dirs` does. From it: the model and its options
   (``width`` ...), the pooling method and its hyperparameters (as ``poolbench.train``
   passes them to :func:`~poolbench.models.build_model`), the dataset (image size, classes
   and the official train/test sizes from :data:`poolbench.data.DATASETS`), ``data.val_size``,
   ``data.batch_size``, ``data.eval_batch_size`` and the trainer's ``max_epochs``,
   ``max_steps``, ``limit_{train,val,test}_batches`` and ``check_val_every_n_epoch``.
   Training batches per epoch are ``floor((train_size - val_size) / batch_size)`` (the
   training loader drops the last partial batch), then limited as Lightning limits them.
   Validation runs on the held-out split every ``check_val_every_n_epoch`` epochs, the test
   set is evaluated twice at the end (final weights and the best-validation checkpoint;
   once without a validation split).
2. **FLOPs.** For every distinct (model, model options, method, method hyperparameters,
   image size, classes), :class:`torch.utils.flop_counter.FlopCounterMode` counts on CPU one
   training step of a batch of :data:`FLOP_BATCH` random images (the model in training mode,
   forward + cross-entropy + backward) and one evaluation forward pass (eval mode), each
   divided by the batch. FlopCounterMode counts convolutions and matrix multiplications
   only (a multiply-add is 2 FLOPs); elementwise work (the pooling layers' own arithmetic,
   batch norm, activations, the optimizer step) is not counted.
3. **Time.** Either *measured*: ``--step-times`` names ``overhead.csv`` files written by
   ``poolbench-bench overhead`` on the GPU, and a run's training time is its training
   steps times the measured step time of its (model, method, image size, width, batch);
   evaluation time is that step time per image scaled by eval FLOPs / training FLOPs. Or
   an *estimate*: FLOPs / (peak FLOP/s x MFU), peak 989 TFLOPS (H100 SXM, dense
   FP16/BF16 tensor cores: the recipe trains in 16-mixed) and MFU (model FLOPs
   utilisation) 0.25 by default, with the range over MFU 0.10-0.40 alongside.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from ..config import CONF_DIR
from ..data import dataset_spec
from ..grid import experiments, grid_runs
from ..models import build_model, model_options
from ..pooling import pool_hparams as default_pool_hparams
from .report import environment, md_table, text_table, write_csv_and_markdown

DEFAULT_PEAK_TFLOPS = 989.0  # H100 SXM: dense FP16/BF16 tensor-core peak (1979 is with sparsity)
DEFAULT_MFU = 0.25
MFU_RANGE = (0.10, 0.40)  # the sensitivity the report always shows
DEFAULT_GPU = "one H100 SXM"
FLOP_BATCH = 2  # images per FLOP-counting pass (FLOPs are exactly linear in the batch)
NOTICEABLE = 0.01  # per-method lines for methods whose hours per run differ by >= 1%
DEFAULT_OUT = Path("outputs/bench/gpu_hours")
ESTIMATE = "ESTIMATE (no GPU measurement)"


# ----------------------------------------------------------------------------- runs

def _freeze(value):
    """A hashable version of a config value (lists -> tuples, dicts -> sorted item tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelKey:
    """Everything that decides a run's FLOPs per image."""

    model: str
    model_options: tuple  # frozen items of the model's own kwargs (width, stem, ...)
    pool: str
    pool_hparams: tuple  # frozen items
    image_size: int
    num_classes: int

    @property
    def width(self):
        return dict(self.model_options).get("width")

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.model_options)
        hp = ", ".join(f"{k}={v}" for k, v in self.pool_hparams)
        return (f"{self.model} ({opts}), pool={self.pool}" + (f" ({hp})" if hp else "")
                + f", {self.image_size}x{self.image_size}, {self.num_classes} classes")


@dataclass
class RunPlan:
    """One run of the grid and the work it does."""

    index: int
    overrides: list[str]
    data: str
    model: str
    pool: str
    seed: int
    key: ModelKey
    batch_size: int
    eval_batch_size: int
    train_images: int  # training split (official train set minus val_size)
    val_images: int  # validation images per validation pass (after limit_val_batches)
    test_images: int  # test images per test pass (after limit_test_batches)
    epochs: int  # epochs the run trains (max_epochs, or fewer with max_steps)
    steps_per_epoch: int
    train_steps: int
    val_passes: int
    test_passes: int

    @property
    def image_size(self) -> int:
        return self.key.image_size

    @property
    def width(self):
        return self.key.width

    @property
    def eval_images(self) -> int:
        """Images the run evaluates in total (every validation pass and every test pass)."""
        return self.val_passes * self.val_images + self.test_passes * self.test_images


def lightning_num_batches(length: int, limit, name: str) -> int:
    """Batches Lightning runs of a loader with ``length`` batches under ``limit_*_batches``.

    As ``lightning.pytorch``: None means 1.0; an int is a number of batches (at most
    ``length``); a float is a fraction, ``int(length * limit)``, and a positive fraction
    that rounds to 0 batches is an error.
    """
    if limit is None:
        limit = 1.0
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise ValueError(f"trainer.{name} must be None, an int or a float, got {limit!r}")
    if isinstance(limit, int):
        if limit < 0:
            raise ValueError(f"trainer.{name} must be >= 0, got {limit}")
        return min(length, limit)
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"trainer.{name} as a fraction must be in [0, 1], got {limit}")
    if length == 0:
        return 0
    n = int(length * limit)
    if n == 0 and limit > 0.0:
        raise ValueError(f"trainer.{name}={limit} of {length} batches is 0 batches; Lightning "
                         f"rejects it (use at least {1.0 / length})")
    return n


def _limited_images(n_images: int, batch: int, limit, name: str) -> int:
    """Images an evaluation loader (no drop_last) yields under ``limit``."""
    batches = lightning_num_batches(math.ceil(n_images / batch), limit, name)
    return min(n_images, batches * batch)


def plan_run(index: int, overrides: list[str], cfg) -> RunPlan:
    """The :class:`RunPlan` of one composed run config ``cfg``."""
    from omegaconf import OmegaConf

    spec = dataset_spec(cfg.data.name)
    # as poolbench.train.build() passes them to build_model
    pool_hparams = {k: v for k, v in OmegaConf.to_container(cfg.pool, resolve=True).items()
                    if k != "name"}
    model_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
                    if k != "name"}
    options = {**model_options(cfg.model.name), **model_kwargs}  # defaults filled in
    key = ModelKey(cfg.model.name, _freeze(options), cfg.pool.name, _freeze(pool_hparams),
                   spec.image_size, spec.num_classes)

    d, t = cfg.data, cfg.trainer
    val_size = spec.val_size if d.get("val_size") is None else int(d.val_size)
    batch = int(d.batch_size)
    eval_batch = int(d.get("eval_batch_size") or batch)
    train_n = spec.train_size - val_size
    if train_n <= 0:
        raise ValueError(f"data.val_size={val_size} leaves no training images of the "
                         f"{spec.train_size:,} in {spec.title}")
    # the training loader drops the last partial batch (PoolbenchDataModule drop_last=True)
    steps = lightning_num_batches(train_n // batch, t.get("limit_train_batches"),
                                  "limit_train_batches")
    max_epochs, max_steps = t.get("max_epochs"), t.get("max_steps", -1)
    max_steps = -1 if max_steps is None else int(max_steps)
    if max_epochs is None:  # Lightning: 1000 epochs unless max_steps bounds the run
        max_epochs = -1 if max_steps != -1 else 1000
    max_epochs = int(max_epochs)
    if max_epochs < 0 and max_steps < 0:
        raise ValueError("trainer.max_epochs=-1 without trainer.max_steps: the run is unbounded")
    epochs = max_epochs if max_epochs >= 0 else math.ceil(max_steps / steps) if steps else 0
    train_steps = epochs * steps
    if max_steps >= 0 and max_steps < train_steps:
        train_steps = max_steps
        epochs = math.ceil(max_steps / steps) if steps else 0
    every = int(t.get("check_val_every_n_epoch") or 1)
    val_images = (_limited_images(val_size, eval_batch, t.get("limit_val_batches"),
                                  "limit_val_batches") if val_size > 0 else 0)
    val_passes = epochs // every if val_images > 0 else 0
    test_images = _limited_images(spec.test_size, eval_batch, t.get("limit_test_batches"),
                                  "limit_test_batches")
    # poolbench.train: test on the final weights, then on best.ckpt if validation ran
    test_passes = 2 if val_passes > 0 else 1
    return RunPlan(
        index=index, overrides=list(overrides), data=cfg.data.name, model=cfg.model.name,
        pool=cfg.pool.name, seed=int(cfg.seed), key=key, batch_size=batch,
        eval_batch_size=eval_batch, train_images=train_n, val_images=val_images,
        test_images=test_images, epochs=epochs, steps_per_epoch=steps,
        train_steps=train_steps, val_passes=val_passes, test_passes=test_passes)


def plan_runs(experiment: str, overrides: Sequence[str] | None = None) -> list[RunPlan]:
    """The runs of ``poolbench-train -m experiment=<experiment> <overrides>``, planned.

    Unknown experiments raise ``ValueError`` (from :func:`poolbench.grid.grid_runs`).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    runs = grid_runs(experiment, list(overrides or []))
    plans = []
    # one Hydra context for all runs, as grid.resolve_run_dirs
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        for run in runs:
            cfg = compose("train", overrides=run.overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            plans.append(plan_run(run.index, run.overrides, cfg))
    return plans


# ----------------------------------------------------------------------------- FLOPs

@dataclass(frozen=True)
class Flops:
    train: float  # FLOPs per image of one training step (forward + loss + backward)
    eval: float  # FLOPs per image of an evaluation forward pass


def count_flops(key: ModelKey, batch: int = FLOP_BATCH) -> Flops:
    """FLOPs per image of ``key``'s model, counted with ``FlopCounterMode`` on CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(0)
        model = build_model(key.model, key.num_classes, pool=key.pool,
                            pool_hparams=dict(key.pool_hparams), **dict(key.model_options))
        x = torch.randn(batch, 3, key.image_size, key.image_size)
        y = torch.randint(0, key.num_classes, (batch,))
        model.train()
        with FlopCounterMode(display=False) as fc:
            F.cross_entropy(model(x), y).backward()
        train = fc.get_total_flops()
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
        evaluation = fc.get_total_flops()
    return Flops(train / batch, evaluation / batch)


def count_all(plans: Sequence[RunPlan], cache: dict | None = None,
              log: Callable[[str], None] | None = None) -> dict[ModelKey, Flops]:
    """FLOPs of every distinct model of ``plans`` (counted once each; ``cache`` is reused)."""
    cache = {} if cache is None else cache
    keys = list(dict.fromkeys(p.key for p in plans))
    todo = [k for k in keys if k not in cache]
    for i, key in enumerate(todo, 1):
        t0 = time.perf_counter()
        cache[key] = count_flops(key)
        if log:
            log(f"FLOPs {i}/{len(todo)}: {key.describe()}: {cache[key].train / 1e9:.3f} "
                f"GFLOP/img training, {cache[key].eval / 1e9:.3f} eval "
                f"({time.perf_counter() - t0:.1f} s)")
    return {k: cache[k] for k in keys}


# ----------------------------------------------------------------------------- step times

def _row_key(model, method, image_size, width, batch) -> tuple:
    return (str(model), str(method), int(image_size), int(width), int(batch))


def _step_key(p: RunPlan) -> tuple:
    return _row_key(p.model, p.pool, p.image_size, p.width, p.batch_size)


def load_step_times(paths: Sequence[Path]) -> dict[tuple, list[dict]]:
    """Rows of ``overhead.csv`` files with a step time, by (model, method, size, width, batch)."""
    out: dict[tuple, list[dict]] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--step-times {path}: no such file (write it with "
                             "`poolbench-bench overhead --device cuda`)")
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"device", "model", "method", "batch", "image_size", "width", "precision",
                    "step_ms"}
            missing = sorted(need - set(reader.fieldnames or ()))
            if missing:
                raise ValueError(f"--step-times {path} is not an overhead.csv of "
                                 f"`poolbench-bench overhead`: no column(s) {missing}")
            for r in reader:
                try:
                    ms = float(r["step_ms"])
                except ValueError:
                    continue  # a failed method: no step time
                if not math.isfinite(ms) or ms <= 0 or r.get("error"):
                    continue
                row = {**r, "step_ms": ms, "source": str(path)}
                key = _row_key(r["model"], r["method"], r["image_size"], r["width"], r["batch"])
                out.setdefault(key, []).append(row)
    return out


def _overhead_out(batch: int, size: int, width: int) -> str:
    """Where the suggested ``poolbench-bench overhead`` commands write (one per setting)."""
    return f"outputs/bench/overhead_b{batch}_s{size}" + (f"_w{width}" if width != 64 else "")


def _overhead_command(batch: int, size: int, width: int, models=(), methods=()) -> str:
    return (f"poolbench-bench overhead --device cuda --batch {batch} --image-size {size}"
            + (f" --width {width}" if width != 64 else "")
            + (f" --models {' '.join(models)}" if models else "")
            + (f" --methods {' '.join(methods)}" if methods else "")
            + f" --out {_overhead_out(batch, size, width)}")


def _measure_command(model_methods: dict, batch: int, size: int, width: int) -> str:
    return _overhead_command(batch, size, width, sorted({m for m, _ in model_methods}),
                             sorted({meth for _, meth in model_methods}))


def match_step_times(plans: Sequence[RunPlan], table: dict[tuple, list[dict]]
                     ) -> dict[tuple, dict]:
    """The one measured row of every run's (model, method, image size, width, batch).

    Missing or ambiguous rows raise ``ValueError`` naming them and, for missing ones, the
    ``poolbench-bench overhead`` commands that would measure them.
    """
    for p in plans:  # poolbench-bench overhead measures the models' default options only
        defaults = model_options(p.model)
        other = {k: v for k, v in p.key.model_options
                 if k != "width" and _freeze(defaults.get(k)) != v}
        if other:
            raise ValueError(
                f"run {p.index} uses {p.model} with {other}, but `poolbench-bench overhead` "
                f"measures {p.model} with its default options "
                f"({', '.join(f'{k}={v}' for k, v in defaults.items() if k != 'width')}); "
                "no measured step time applies. Leave out --step-times for an estimate")
    out, missing, ambiguous = {}, {}, []
    for p in plans:
        k = _step_key(p)
        rows = table.get(k, [])
        if not rows:
            missing.setdefault((p.batch_size, p.image_size, p.width), {})[(p.model, p.pool)] = 1
            continue
        if len(rows) > 1:
            ambiguous.append((k, rows))
            continue
        out[k] = rows[0]
    if missing:
        lines = []
        for (batch, size, width), mm in sorted(missing.items()):
            lines.append(f"  batch {batch}, {size}x{size}, width {width}: "
                         + ", ".join(f"{m}/{meth}" for m, meth in mm))
            lines.append(f"    measure with: {_measure_command(mm, batch, size, width)}")
        raise ValueError("no step time in --step-times for (model/method at batch, image size, "
                         "width):\n" + "\n".join(lines))
    if ambiguous:
        lines = [f"  {k}: " + "; ".join(f"{r['device']} {r['precision']} in {r['source']}"
                                        for r in rows) for k, rows in ambiguous]
        raise ValueError("more than one step time for (model, method, image size, width, "
                         "batch) in --step-times; give only one measurement of each:\n"
                         + "\n".join(lines))
    return out


def _measured_on(csv_path: Path) -> str | None:
    """The ``Device:`` line of the ``overhead.md`` next to ``csv_path`` (it names the GPU)."""
    md = Path(csv_path).with_suffix(".md")
    if not md.is_file():
        return None
    for line in md.read_text().splitlines():
        if line.startswith("Device:"):
            return line.removeprefix("Device:").strip().rstrip()
    return None


# ----------------------------------------------------------------------------- hours

@dataclass
class GpuHours:
    """The result: one row (dict) per run, and how they were derived."""

    experiment: str
    overrides: list[str]
    mode: str  # "estimate" or "measured"
    rows: list[dict]
    peak_tflops: float = DEFAULT_PEAK_TFLOPS
    mfu: float = DEFAULT_MFU
    step_sources: list[str] = field(default_factory=list)
    measured_on: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_h(self) -> float:
        return sum(r["total_h"] for r in self.rows)

    def total_at(self, mfu: float) -> float:
        """Estimate mode: the total at another MFU (hours scale as 1 / MFU)."""
        return self.total_h * self.mfu / mfu


def _base_row(p: RunPlan, fl: Flops) -> dict:
    return dict(
        index=p.index, data=p.data, model=p.model, pool=p.pool, seed=p.seed,
        overrides=" ".join(p.overrides[1:]),
        pool_hparams=" ".join(f"{k}={v}" for k, v in p.key.pool_hparams),
        model_options=" ".join(f"{k}={v}" for k, v in p.key.model_options),
        width=p.width, image_size=p.image_size, num_classes=p.key.num_classes,
        batch_size=p.batch_size, eval_batch_size=p.eval_batch_size,
        train_images=p.train_images, epochs=p.epochs, steps_per_epoch=p.steps_per_epoch,
        train_steps=p.train_steps, val_images=p.val_images, val_passes=p.val_passes,
        test_images=p.test_images, test_passes=p.test_passes, eval_images=p.eval_images,
        train_gflop_per_img=fl.train / 1e9, eval_gflop_per_img=fl.eval / 1e9,
        train_pflop=p.train_steps * p.batch_size * fl.train / 1e15,
        eval_pflop=p.eval_images * fl.eval / 1e15,
    )


def estimate_hours(plans: Sequence[RunPlan], flops: Mapping[ModelKey, Flops],
                   peak_tflops: float = DEFAULT_PEAK_TFLOPS, mfu: float = DEFAULT_MFU
                   ) -> list[dict]:
    """Rows of estimate mode: time = counted FLOPs / (peak x MFU)."""
    _check_peak_mfu(peak_tflops, mfu)
    rate = peak_tflops * 1e12 * mfu  # FLOP/s
    rows = []
    for p in plans:
        fl = flops[p.key]
        r = _base_row(p, fl)
        train_s = p.train_steps * p.batch_size * fl.train / rate
        eval_s = p.eval_images * fl.eval / rate
        r.update(source="estimate", peak_tflops=peak_tflops, mfu=mfu,
                 step_ms=1e3 * p.batch_size * fl.train / rate,
                 train_h=train_s / 3600, eval_h=eval_s / 3600,
                 total_h=(train_s + eval_s) / 3600)
        for m in MFU_RANGE:
            r[f"total_h_mfu_{m:.2f}"] = r["total_h"] * mfu / m
        rows.append(r)
    return rows


def measured_hours(plans: Sequence[RunPlan], flops: Mapping[ModelKey, Flops],
                   step_rows: Mapping[tuple, dict]) -> list[dict]:
    """Rows of measured mode: training steps x measured step time; evaluation scaled by FLOPs."""
    rows = []
    for p in plans:
        fl, m = flops[p.key], step_rows[_step_key(p)]
        step_s = m["step_ms"] / 1e3
        r = _base_row(p, fl)
        train_s = p.train_steps * step_s
        eval_s = p.eval_images * (step_s / p.batch_size) * (fl.eval / fl.train)
        r.update(source=f"measured ({m['device']}, {m['precision']})", step_ms=m["step_ms"],
                 train_h=train_s / 3600, eval_h=eval_s / 3600,
                 total_h=(train_s + eval_s) / 3600)
        rows.append(r)
    return rows


def _check_peak_mfu(peak_tflops: float, mfu: float) -> None:
    if not (isinstance(mfu, (int, float)) and 0.0 < mfu <= 1.0):
        raise ValueError(f"--mfu must be in (0, 1] (a fraction of the peak), got {mfu}")
    if not (isinstance(peak_tflops, (int, float)) and peak_tflops > 0 and
            math.isfinite(peak_tflops)):
        raise ValueError(f"--peak-tflops must be > 0, got {peak_tflops}")


def gpu_hours(experiment: str, overrides: Sequence[str] | None = None,
              step_times: Sequence[Path] | None = None,
              peak_tflops: float = DEFAULT_PEAK_TFLOPS, mfu: float = DEFAULT_MFU,
              cache: dict | None = None, log: Callable[[str], None] | None = None) -> GpuHours:
    """GPU-hours of every run of ``experiment`` with ``overrides``.

    ``step_times``: ``overhead.csv`` files (measured mode); None: estimate from FLOPs at
    ``peak_tflops`` x ``mfu``. ``cache`` (a dict) keeps FLOP counts between calls.
    """
    _check_peak_mfu(peak_tflops, mfu)
    overrides = list(overrides or [])
    table = load_step_times(step_times) if step_times else None
    plans = plan_runs(experiment, overrides)
    if not plans:
        raise ValueError(f"{experiment} with {overrides} has no runs")
    step_rows = match_step_times(plans, table) if table is not None else None
    if log:
        log(f"{experiment}: {len(plans)} runs, {len(set(p.key for p in plans))} distinct "
            "models to count FLOPs of (FlopCounterMode, CPU)")
    flops = count_all(plans, cache, log)
    notes = ["Dataset sizes are the official ones (poolbench.data.DATASETS: train_size "
             "minus data.val_size, and test_size), not read from the files under data.root."]
    if step_rows is None:
        rows = estimate_hours(plans, flops, peak_tflops, mfu)
        return GpuHours(experiment, overrides, "estimate", rows, peak_tflops, mfu, notes=notes)
    rows = measured_hours(plans, flops, step_rows)
    sources = list(dict.fromkeys(str(p) for p in step_times))
    devices = sorted({r["device"] for r in step_rows.values()})
    if "cpu" in devices:
        notes.append("Some step times were measured on the CPU, not a GPU: those hours are "
                     "CPU hours.")
    differ = [p for p in plans if any(
        _freeze(default_pool_hparams(p.pool).get(k)) != v for k, v in p.key.pool_hparams)]
    if differ:
        notes.append(f"{len(differ)} run(s) set pooling hyperparameters other than the "
                     "defaults `poolbench-bench overhead` measures with; they use the step "
                     "time measured with the defaults.")
    if any(p.key.num_classes != 100 for p in plans):
        notes.append("`poolbench-bench overhead` measures with 100 classes; runs with another "
                     "number of classes (Tiny ImageNet: 200) use that step time (the "
                     "classifier is a negligible part of the step).")
    measured_on = [f"{s}: {d}" for s in sources if (d := _measured_on(Path(s)))]
    return GpuHours(experiment, overrides, "measured", rows, step_sources=sources,
                    measured_on=measured_on, notes=notes)


# ----------------------------------------------------------------------------- reporting

CSV_COLUMNS = (
    "index", "data", "model", "pool", "seed", "overrides", "pool_hparams", "model_options",
    "width", "image_size", "num_classes", "batch_size", "eval_batch_size", "train_images",
    "epochs", "steps_per_epoch", "train_steps", "val_images", "val_passes", "test_images",
    "test_passes", "eval_images", "train_gflop_per_img", "eval_gflop_per_img", "train_pflop",
    "eval_pflop", "source", "peak_tflops", "mfu", "step_ms", "train_h", "eval_h", "total_h",
    *(f"total_h_mfu_{m:.2f}" for m in MFU_RANGE),
)


def _span(values, fmt: Callable[[float], str]) -> str:
    values = list(values)
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _hours(h: float) -> str:
    return (f"{h:,.0f}" if h >= 100 else f"{h:.1f}" if h >= 10 else f"{h:.2f}" if h >= 1
            else f"{h:.3f}")


def _gflop(v: float) -> str:
    return f"{v:.3f}"


def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _int(v) -> str:
    return f"{int(v):,}"


def _groups(rows, keys=("data", "model")) -> list[tuple[tuple, list[dict]]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return list(out.items())


def _mfu_lo_hi() -> tuple[float, float]:
    return max(MFU_RANGE), min(MFU_RANGE)  # fewest hours first


def group_table(result: GpuHours) -> tuple[list[str], list[list[str]]]:
    """Per (data, model): runs, epochs, steps per run, GFLOP per image, hours."""
    est = result.mode == "estimate"
    hi_mfu, lo_mfu = _mfu_lo_hi()
    head = ["data", "model", "runs", "epochs", "steps/run", "train GFLOP/img",
            "eval GFLOP/img", "step ms" + (" (implied)" if est else ""), "h/run", "total h"]
    if est:
        head.append(f"total h (MFU {hi_mfu:.2f}-{lo_mfu:.2f})")
    cells = []
    for (data, model), grp in _groups(result.rows):
        total = sum(r["total_h"] for r in grp)
        c = [data, model, str(len(grp)), _span((r["epochs"] for r in grp), _int),
             _span((r["train_steps"] for r in grp), _int),
             _span((r["train_gflop_per_img"] for r in grp), _gflop),
             _span((r["eval_gflop_per_img"] for r in grp), _gflop),
             _span((r["step_ms"] for r in grp), _ms),
             _span((r["total_h"] for r in grp), _hours), _hours(total)]
        if est:
            c.append(f"{_hours(total * result.mfu / hi_mfu)}-{_hours(total * result.mfu / lo_mfu)}")
        cells.append(c)
    total = result.total_h
    c = ["total", "", str(len(result.rows)), "", "", "", "", "", "", _hours(total)]
    if est:
        c.append(f"{_hours(result.total_at(hi_mfu))}-{_hours(result.total_at(lo_mfu))}")
    cells.append(c)
    return head, cells


def method_differences(result: GpuHours) -> list[dict]:
    """Methods whose mean hours per run differ from the reference method's by >= NOTICEABLE.

    The reference of a (data, model) group is max pooling if the group has it, else the
    method with the fewest hours per run.
    """
    out = []
    for (data, model), grp in _groups(result.rows):
        per = {}
        for (pool,), g in _groups(grp, ("pool",)):
            per[pool] = dict(runs=len(g), h=sum(r["total_h"] for r in g) / len(g),
                             gflop=sum(r["train_gflop_per_img"] for r in g) / len(g))
        if len(per) < 2:
            continue
        ref = "max" if "max" in per else min(per, key=lambda m: per[m]["h"])
        for pool, v in per.items():
            rel = v["h"] / per[ref]["h"] - 1
            if pool != ref and abs(rel) >= NOTICEABLE:
                out.append(dict(data=data, model=model, method=pool, ref=ref, runs=v["runs"],
                                gflop=v["gflop"], h=v["h"], rel=rel))
    return out


def _method_cells(diffs) -> tuple[list[str], list[list[str]]]:
    head = ["data", "model", "method", "runs", "train GFLOP/img", "h/run", "vs"]
    cells = [[d["data"], d["model"], d["method"], str(d["runs"]), _gflop(d["gflop"]),
              _hours(d["h"]), f"{100 * d['rel']:+.1f}% vs {d['ref']}"] for d in diffs]
    return head, cells


def gpu_name(peak_tflops: float) -> str:
    """The GPU the estimate is for: an H100 SXM at the default peak, else the peak itself."""
    if peak_tflops == DEFAULT_PEAK_TFLOPS:
        return DEFAULT_GPU
    return f"one GPU of {peak_tflops:g} TFLOPS peak"


def headline(result: GpuHours) -> str:
    """The report's first line."""
    n, total = len(result.rows), result.total_h
    what = f"{result.experiment}" + (f" {' '.join(result.overrides)}" if result.overrides else "")
    if result.mode == "estimate":
        hi_mfu, lo_mfu = _mfu_lo_hi()
        lo_h, hi_h = _hours(result.total_at(hi_mfu)), _hours(result.total_at(lo_mfu))
        return (f"{ESTIMATE}: {what}: {n} runs, {_hours(total)} GPU-hours on "
                f"{gpu_name(result.peak_tflops)} at MFU {result.mfu:.2f} ({lo_h}-{hi_h} h "
                f"for MFU {hi_mfu:.2f}-{lo_mfu:.2f}), "
                f"peak {result.peak_tflops:g} TFLOPS")
    return (f"MEASURED step times: {what}: {n} runs, {_hours(total)} GPU-hours on the device "
            f"the step times were measured on")


def derivation(result: GpuHours) -> list[str]:
    """How the numbers were derived, one paragraph per item."""
    runs = ("Runs: the sweep `poolbench-train -m experiment=" + result.experiment
            + (" " + " ".join(result.overrides) if result.overrides else "")
            + "` launches, each config composed with Hydra. A run trains epochs x "
            "floor(train images / batch) steps (the training loader drops the last partial "
            "batch; trainer.limit_train_batches and max_steps applied as Lightning does), "
            "evaluates the validation split every check_val_every_n_epoch epochs and the test "
            "set twice at the end (final weights and best-validation checkpoint).")
    flops = ("FLOPs: counted with `torch.utils.flop_counter.FlopCounterMode` on CPU, once per "
             "distinct model: the run's model built with `poolbench.models.build_model` from its "
             f"config, training mode, forward + cross-entropy + backward on a batch of "
             f"{FLOP_BATCH} random images, divided by {FLOP_BATCH} (training FLOPs per image); "
             "eval mode, forward only (evaluation FLOPs per image). FlopCounterMode counts "
             "convolutions and matrix multiplications only (2 FLOPs per multiply-add): "
             "elementwise work such as the pooling layers' own arithmetic, batch norm, "
             "activations and the optimizer step is not counted. (It counts the weight "
             "gradient of a grouped convolution as if it were dense: an overcount confined to "
             "the small depthwise layers, e.g. gated with pool.gate=depthwise.)")
    if result.mode == "estimate":
        hi_mfu, lo_mfu = _mfu_lo_hi()
        peak_note = ("the H100 SXM's dense FP16/BF16 tensor-core peak; the recipe trains in "
                     "16-mixed" if result.peak_tflops == DEFAULT_PEAK_TFLOPS else
                     f"--peak-tflops; the default {DEFAULT_PEAK_TFLOPS:g} is the H100 SXM's "
                     "dense FP16/BF16 tensor-core peak")
        return [
            f"**{ESTIMATE}.** No GPU was measured: hours = FLOPs / (peak x MFU). FLOPs: per "
            "image counted by `torch.utils.flop_counter.FlopCounterMode` on CPU (convolutions "
            "and matrix multiplications only; elementwise work such as the pooling layers' own "
            "arithmetic, batch norm, activations and the optimizer step is not counted), times "
            "the images each run trains and evaluates. Peak = "
            f"{result.peak_tflops:g} TFLOPS ({peak_note}) and MFU (model FLOPs "
            f"utilisation: counted FLOPs / (time x peak)) = {result.mfu:.2f}; the range shown "
            f"is MFU {hi_mfu:.2f} to {lo_mfu:.2f}. Small CNNs at batch 128 on 32x32 and 64x64 "
            "images are often kernel-launch or memory-bandwidth bound on an H100, and the "
            "uncounted elementwise work (pooling, batch norm, activations, optimizer) takes "
            "real time: the MFU assumption absorbs all of that, which is why the range is wide. "
            "Differences between pooling methods here come from counted FLOPs only (the "
            "convolutions of gated, attention, strided_conv, blurpool); their elementwise "
            "overhead is what `poolbench-bench overhead` measures.",
            f"Sanity check: the implied step time (`step ms` = batch x training FLOPs per image "
            f"/ (peak x MFU)) is {_span((r['step_ms'] for r in result.rows), _ms)} ms here. "
            "An eager-mode PyTorch training step dispatches hundreds of operators (forward, "
            "backward, optimizer, on-device augmentation, Lightning's per-step work), each "
            "costing microseconds of host time, so a step of about a millisecond is unlikely "
            "without CUDA graphs or `torch.compile`: where the implied step is that short, "
            "the real MFU is probably below the range shown and the hours are higher. "
            "Measured step times settle it (how: below).",
            runs, flops,
            measure_hint(result),
        ]
    src = ", ".join(f"`{s}`" for s in result.step_sources)
    on = ("; measured on " + "; ".join(result.measured_on)) if result.measured_on else ""
    return [
        f"**MEASURED step times** from {src}{on}: hours = training steps x the measured step "
        "time (forward, backward and optimizer step at the run's batch size, "
        "`poolbench-bench overhead`) of the run's model, method, image size and width; "
        "evaluation time = evaluated images x (step time / batch) x (evaluation FLOPs / "
        "training FLOPs per image), i.e. the measured step time scaled by the counted FLOPs.",
        runs, flops,
    ]


def measure_hint(result: GpuHours) -> str:
    """How to replace the estimate with measured step times: the overhead commands it needs."""
    settings = sorted({(int(r["batch_size"]), int(r["image_size"]), int(r["width"]))
                       for r in result.rows})
    cmds = [f"`{_overhead_command(*s)}`" for s in settings]
    csvs = [f"{_overhead_out(*s)}/overhead.csv" for s in settings]
    again = " ".join(["poolbench-bench gpu-hours", result.experiment, *result.overrides,
                      "--step-times", *csvs])
    return ("To replace the estimate with measured step times, run on the GPU "
            + " and ".join(cmds) + f", then `{again}`.")


def to_markdown(result: GpuHours, command: str | None = None, env: dict | None = None) -> str:
    env = env or environment()
    title = (f"# GPU-hours of {result.experiment} on {gpu_name(result.peak_tflops)}: "
             f"{ESTIMATE}"
             if result.mode == "estimate"
             else f"# GPU-hours of {result.experiment} from measured step times")
    parts = [title, ""]
    if command:
        parts.append(f"Command: `{command}`  ")
    parts.append(f"Date: {env['date']}  ")
    parts.append(f"FLOPs counted on: cpu ({env['cpu']}, {env['threads']} threads), torch "
                 f"{env['torch']}, python {env['python']}")
    parts += ["", headline(result) + ".", ""]
    for para in derivation(result):
        parts += [para, ""]
    for note in result.notes:
        parts += [f"Note: {note}", ""]
    parts += ["## Per dataset and model", "", md_table(*group_table(result)), ""]
    diffs = method_differences(result)
    if diffs:
        parts += [f"## Methods whose hours per run differ by {100 * NOTICEABLE:.0f}% or more", "",
                  md_table(*_method_cells(diffs)), ""]
    elif any(len({r["pool"] for r in grp}) > 1 for _, grp in _groups(result.rows)):
        parts += [f"No method's hours per run differ from max pooling's (or the fastest "
                  f"method's) by {100 * NOTICEABLE:.0f}% or more.", ""]
    parts.append(f"Per run: `gpu_hours.csv` ({len(result.rows)} rows).")
    return "\n".join(parts)


def print_report(result: GpuHours, file=None) -> None:
    file = file or sys.stdout
    print(headline(result), file=file)
    if result.mode == "estimate":
        print("Derived, not measured: FLOPs counted by FlopCounterMode (convolutions and "
              "matmuls only; the pooling layers' elementwise arithmetic, BN and activations "
              "are not counted), divided by peak x MFU; small CNNs at batch 128 are often "
              "launch/bandwidth bound, which the MFU assumption absorbs. Implied step times "
              f"of {_span((r['step_ms'] for r in result.rows), _ms)} ms: an eager PyTorch "
              "step much under a few ms is unlikely (host-bound), so where they are that "
              "short the real MFU is probably lower and the hours higher.", file=file)
    else:
        print("From step times in " + ", ".join(result.step_sources)
              + ("; measured on " + "; ".join(result.measured_on) if result.measured_on
                 else ""), file=file)
    print("", file=file)
    print(text_table(*group_table(result)), file=file)
    diffs = method_differences(result)
    if diffs:
        print(f"\nmethods whose hours per run differ by >= {100 * NOTICEABLE:.0f}%:", file=file)
        for d in diffs:
            print(f"  {d['data']} {d['model']} {d['method']}: {_hours(d['h'])} h/run "
                  f"({100 * d['rel']:+.1f}% vs {d['ref']}), {d['gflop']:.3f} GFLOP/img",
                  file=file)
    for note in result.notes:
        print(f"note: {note}", file=file)


def write_outputs(result: GpuHours, out_dir: Path, command: str | None = None
                  ) -> tuple[Path, Path]:
    return write_csv_and_markdown(result.rows, CSV_COLUMNS, to_markdown(result, command),
                                  out_dir, "gpu_hours")


# ----------------------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``poolbench-bench gpu-hours``."""
    p.add_argument("experiment", help="a config in conf/experiment/ (one of "
                                      f"{', '.join(experiments())})")
    p.add_argument("overrides", nargs="*",
                   help="Hydra overrides, as for poolbench-train (e.g. seed=0 "
                        "trainer.max_epochs=20 pool=max,softpool)")
    p.add_argument("--step-times", nargs="+", type=Path, default=None, metavar="CSV",
                   help="overhead.csv file(s) of `poolbench-bench overhead --device cuda`: use "
                        "their measured step times (default: estimate from FLOPs)")
    p.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS,
                   help=f"estimate mode: the GPU's peak TFLOPS (default {DEFAULT_PEAK_TFLOPS:g}, "
                        "H100 SXM dense FP16/BF16 tensor cores)")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                   help=f"estimate mode: model FLOPs utilisation in (0, 1] (default "
                        f"{DEFAULT_MFU}; the report also shows {MFU_RANGE[0]}-{MFU_RANGE[1]})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"directory for gpu_hours.csv and gpu_hours.md (default: {DEFAULT_OUT})")
    p.set_defaults(gpu_hours_parser=p)  # run() reports errors through it, as argparse does


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``poolbench-bench gpu-hours`` with parsed ``args`` (``argv`` is recorded)."""
    from hydra.errors import HydraException

    parser = getattr(args, "gpu_hours_parser", None)

    def error(msg: str):
        if parser is not None:
            parser.error(msg)  # exits with status 2 and the usage line
        raise SystemExit(msg)

    try:
        _check_peak_mfu(args.peak_tflops, args.mfu)
    except ValueError as exc:
        error(str(exc))
    try:
        result = gpu_hours(args.experiment, args.overrides, args.step_times,
                           peak_tflops=args.peak_tflops, mfu=args.mfu,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (ValueError, HydraException) as exc:
        error(str(exc))
    print_report(result)
    command = "poolbench-bench " + " ".join(shlex.quote(a) for a in argv)
    csv_path, md_path = write_outputs(result, args.out, command)
    print(f"\nwrote {csv_path} and {md_path}")
    return 0
