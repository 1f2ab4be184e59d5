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
   once without a validation split). A run whose model refuses its image size
   (``fractional_max`` on 2x2/2 pools of even sizes) would fail at once in
   ``poolbench-train``: the command stops with that reason instead of estimating it.
2. **FLOPs and operators.** For every distinct (model, model options, method, method
   hyperparameters, image size, classes, precision, memory format, optimizer options), one
   training step of a batch of :data:`FLOP_BATCH` random images is run on CPU the way
   training runs it on a GPU (training mode, ``channels_last``, autocast in the run's mixed
   precision (``precision: auto`` is ``16-mixed`` on CUDA), forward + cross-entropy, backward
   through a ``GradScaler``, ``SGD(momentum, weight_decay, foreach=True)`` as PyTorch picks
   on CUDA, in its steady state, i.e. its second step), then one evaluation forward pass
   (eval mode, ``no_grad``). In that one pass
   :class:`torch.utils.flop_counter.FlopCounterMode` counts the FLOPs (convolutions and
   matrix multiplications only; divided by the batch) and :class:`OpCounter`, a
   ``TorchDispatchMode``, counts every ATen operator call. Operators that launch no kernel
   (views and metadata, :func:`launches_kernel`) are counted apart. The pooling layers' CPU
   chunked path (``poolbench.pooling._fast``) is switched off while counting, so the counts
   are those of the path a GPU runs, independent of the batch and the image size.
3. **Time.** Either *measured*: ``--step-times`` names ``overhead.csv`` files written by
   ``poolbench-bench overhead`` on the GPU, and a run's training time is its training
   steps times the measured step time of its (model, method, image size, width, batch);
   evaluation time is that step time per image scaled by eval FLOPs / training FLOPs
   (operator counts are then informational only). Or an *estimate*: eager PyTorch enqueues
   kernels asynchronously, so a step takes max(GPU time, host time): GPU time = FLOPs /
   (peak FLOP/s x MFU), peak 989 TFLOPS (H100 SXM, dense FP16/BF16 tensor cores) and MFU
   (model FLOPs utilisation) 0.25 by default; host time = kernel-launching operators x
   ``--op-us`` microseconds of host time per operator (Python, dispatcher, autograd and
   the CUDA launch), 8 by default. Training steps use the training counts at
   ``data.batch_size``; evaluation steps (ceil(images / ``data.eval_batch_size``) per pass)
   the evaluation counts at that batch. The range shown alongside combines the extremes:
   MFU 0.40 with 4 us per operator, and MFU 0.10 with 16 us.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
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
from torch.utils._python_dispatch import TorchDispatchMode

from ..config import model_arguments
from ..data import dataset_spec
from ..grid import composed_configs, experiments, grid_runs
from ..models import build_model, model_options
from ..pooling import pool_hparams as default_pool_hparams
from .report import environment, md_table, text_table, write_csv_and_markdown

DEFAULT_PEAK_TFLOPS = 989.0  # H100 SXM: dense FP16/BF16 tensor-core peak (1979 is with sparsity)
DEFAULT_MFU = 0.25
MFU_RANGE = (0.10, 0.40)  # the sensitivity the report always shows
# Host time per kernel-launching ATen operator of an eager PyTorch step on the GPU (Python,
# dispatcher, autograd bookkeeping, caching allocator and cudaLaunchKernel). An assumption,
# not a measurement: a few to ~25 us per op is the usual order for eager PyTorch on a fast
# host; the range is shown as MFU's is.
DEFAULT_OP_US = 8.0
OP_US_RANGE = (4.0, 16.0)
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


# the optimizer options that change which operators an SGD step dispatches (lr does not)
RECIPE_OPTIM = (("momentum", 0.9), ("nesterov", False), ("weight_decay", 5e-4))


@dataclass(frozen=True)
class ModelKey:
    """Everything that decides a run's FLOPs per image and operators per step."""

    model: str
    model_options: tuple  # frozen items of the model's own kwargs (width, stem, ...)
    pool: str
    pool_hparams: tuple  # frozen items
    image_size: int
    num_classes: int
    precision: str = "16-mixed"  # as training resolves it on CUDA (auto: 16-mixed)
    channels_last: bool = True
    optim: tuple = RECIPE_OPTIM  # sorted (name, value) items of momentum, nesterov, weight_decay

    @property
    def width(self):
        return dict(self.model_options).get("width")

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.model_options)
        hp = ", ".join(f"{k}={v}" for k, v in self.pool_hparams)
        extra = [self.precision] + ([] if self.channels_last else ["contiguous"])
        if self.optim != RECIPE_OPTIM:
            extra.append("SGD " + ", ".join(f"{k}={v}" for k, v in self.optim))
        return (f"{self.model} ({opts}), pool={self.pool}" + (f" ({hp})" if hp else "")
                + f", {self.image_size}x{self.image_size}, {self.num_classes} classes, "
                + ", ".join(extra))


# Lightning's precision names (and poolbench's "auto") -> the precision a CUDA run trains in
_PRECISIONS = {"auto": "16-mixed", "16": "16-mixed", "16-mixed": "16-mixed",
               "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "32": "32-true",
               "32-true": "32-true", "64": "64-true", "64-true": "64-true",
               "16-true": "16-true", "bf16-true": "bf16-true"}


def cuda_precision(requested) -> str:
    """The precision a run with ``trainer.precision=requested`` trains in on CUDA
    (``poolbench.train.resolve_precision``: auto is 16-mixed there)."""
    name = str(requested)
    if name not in _PRECISIONS:
        raise ValueError(f"trainer.precision={requested!r} is not one of "
                         f"{sorted(_PRECISIONS)}")
    return _PRECISIONS[name]


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
    compiled: bool = False  # the run's model is torch.compile'd (config key compile)

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
    spec = dataset_spec(cfg.data.name)
    pool_hparams, model_kwargs = model_arguments(cfg)  # as poolbench.train.build() has them
    options = {**model_options(cfg.model.name), **model_kwargs}  # defaults filled in
    o = cfg.optim
    optim = (("momentum", float(o.momentum)), ("nesterov", bool(o.nesterov)),
             ("weight_decay", float(o.weight_decay)))
    key = ModelKey(cfg.model.name, _freeze(options), cfg.pool.name, _freeze(pool_hparams),
                   spec.image_size, spec.num_classes,
                   precision=cuda_precision(cfg.trainer.get("precision", "auto")),
                   channels_last=bool(cfg.get("channels_last", True)), optim=optim)

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
        train_steps=train_steps, val_passes=val_passes, test_passes=test_passes,
        compiled=bool(cfg.get("compile", False)))


def plan_runs(experiment: str, overrides: Sequence[str] | None = None) -> list[RunPlan]:
    """The runs of ``poolbench-train -m experiment=<experiment> <overrides>``, planned.

    Unknown experiments raise ``ValueError`` (from :func:`poolbench.grid.grid_runs`).
    """
    runs = grid_runs(experiment, list(overrides or []))
    return [plan_run(run.index, run.overrides, cfg) for run, cfg in composed_configs(runs)]


# ----------------------------------------------------------------------------- FLOPs, operators

# Operators that launch no kernel besides the views (:func:`launches_kernel` finds those by
# their schema): metadata queries, allocations without a fill, the profiler's markers
# (``record_function`` in the optimizer step), views whose schema does not say so, and the
# in-place views (they only restride their input).
NO_KERNEL_OPS = frozenset({
    "aten::_unsafe_view", "aten::_reshape_alias", "aten::lift_fresh",
    "aten::as_strided_", "aten::squeeze_", "aten::unsqueeze_", "aten::t_", "aten::transpose_",
    "aten::swapdims_", "aten::swapaxes_", "aten::detach_",
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
    "aten::new_empty_strided", "aten::resize_", "aten::set_",
    "aten::size", "aten::sym_size", "aten::stride", "aten::sym_stride", "aten::numel",
    "aten::sym_numel", "aten::dim", "aten::storage_offset", "aten::sym_storage_offset",
    "aten::is_contiguous", "aten::is_strides_like_format",
    "aten::is_non_overlapping_and_dense", "aten::is_same_size", "prim::layout",
    "prim::device", "profiler::_record_function_enter", "profiler::_record_function_enter_new",
    "profiler::_record_function_exit",
})


def launches_kernel(func) -> bool:
    """Whether an ATen operator launches a kernel on the GPU (counts towards host time).

    No for views, i.e. operators whose schema returns an alias of an input that they do not
    write (``view``, ``t``, ``expand``, ``detach``, ``alias``, ``as_strided``, ``permute``,
    ``transpose``, ``(un)squeeze``, ``slice``, ``select``, ``split``, ``unbind`` ...), and for
    :data:`NO_KERNEL_OPS` (e.g. ``empty``, ``as_strided_``, size queries). Yes for everything
    else, in-place and ``out=`` operators included.
    """
    schema = func._schema
    if schema.name in NO_KERNEL_OPS:
        return False
    return not any(r.alias_info is not None and not r.alias_info.is_write
                   for r in schema.returns)


class OpCounter(TorchDispatchMode):
    """Counts every ATen operator call dispatched while it is active, by overload.

    It sees what reaches the Python dispatch key: operators after autograd and autocast
    (so backward operators and autocast's casts are counted, composite operators such as
    ``conv2d`` appear as what they decompose into, e.g. ``convolution``), on the calling
    thread (the autograd engine runs a CPU backward there). Enter it after (inside) a
    ``FlopCounterMode`` so that it counts the operators as dispatched, before that mode
    decomposes any.
    """

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func] += 1
        return func(*args, **(kwargs or {}))

    @property
    def kernel_ops(self) -> int:
        """Operator calls that launch a kernel."""
        return sum(n for f, n in self.counts.items() if launches_kernel(f))

    @property
    def other_ops(self) -> int:
        """Operator calls that launch none (views, metadata, profiler markers)."""
        return sum(n for f, n in self.counts.items() if not launches_kernel(f))

    def take(self) -> tuple[int, int]:
        """(kernel ops, other ops) counted since the last ``take``, and start afresh."""
        out = (self.kernel_ops, self.other_ops)
        self.counts = collections.Counter()
        return out


@contextlib.contextmanager
def gpu_code_path(enabled: bool = True):
    """Run the pooling layers' tile kernels on their device-independent functional path.

    ``poolbench.pooling._fast`` splits the work into chunks of samples on CPU (many more,
    batch- and size-dependent operators, some on worker threads a dispatch mode does not
    see); a GPU runs the functional path. Counting on CPU inside this context counts what
    the GPU runs. ``enabled=False`` leaves the CPU path on (for tests).
    """
    from ..pooling import _fast

    if not enabled:
        yield
        return
    chunked = _fast._chunked
    _fast._chunked = lambda x: False
    try:
        yield
    finally:
        _fast._chunked = chunked


@dataclass(frozen=True)
class ModelCost:
    """What one distinct model costs: FLOPs per image and ATen operators per step."""

    train_flops: float  # FLOPs per image of one training step (forward + loss + backward)
    eval_flops: float  # FLOPs per image of an evaluation forward pass
    fwd_ops: int  # kernel-launching operators of the forward + loss (+ loss scaling)
    bwd_ops: int  # ... of the backward
    opt_ops: int  # ... of the optimizer step (+ GradScaler unscale, inf check, update)
    eval_ops: int  # ... of an evaluation forward pass
    train_other_ops: int = 0  # operators launching no kernel (views ...) of a training step
    eval_other_ops: int = 0  # ... of an evaluation forward pass

    @property
    def train_ops(self) -> int:
        """Kernel-launching operators of one training step."""
        return self.fwd_ops + self.bwd_ops + self.opt_ops


def _amp(precision: str) -> tuple[torch.dtype | None, bool, torch.dtype]:
    """(autocast dtype or None, GradScaler?, parameter dtype) of a CUDA precision."""
    return {"16-mixed": (torch.float16, True, torch.float32),
            "bf16-mixed": (torch.bfloat16, False, torch.float32),
            "16-true": (None, False, torch.float16),
            "bf16-true": (None, False, torch.bfloat16),
            "64-true": (None, False, torch.float64)}.get(precision, (None, False, torch.float32))


def count_model(key: ModelKey, batch: int = FLOP_BATCH, gpu_path: bool = True) -> ModelCost:
    """FLOPs per image and operators per step of ``key``'s model, counted on CPU in one pass.

    A training step as a CUDA run takes it: training mode, ``channels_last`` (unless the
    run turns it off), the forward and cross-entropy under autocast in the run's mixed
    precision (CPU autocast: it casts the convolutions' and linear layers' inputs and
    weights as CUDA autocast does), backward of the loss scaled by a ``GradScaler``
    (``16-mixed``), then ``scaler.step`` / ``update`` of ``SGD(..., foreach=True)``, the
    multi-tensor implementation PyTorch picks by default on CUDA, and
    ``zero_grad(set_to_none=True)``. The optimizer is counted in its steady state: its first
    step (which creates the momentum buffers one tensor at a time) runs uncounted first.
    Then an evaluation forward pass (eval mode, ``no_grad``, autocast). ``gpu_path``: the
    pooling layers' functional path, as on a GPU (:func:`gpu_code_path`).
    """
    from torch.utils.flop_counter import FlopCounterMode

    amp, scaled, param_dtype = _amp(key.precision)
    opts = dict(key.optim)
    mf = torch.channels_last if key.channels_last else torch.contiguous_format
    autocast = (lambda: torch.autocast("cpu", dtype=amp)) if amp else contextlib.nullcontext
    with torch.random.fork_rng(devices=[]), gpu_code_path(gpu_path):  # caller's RNG kept
        torch.manual_seed(0)
        model = build_model(key.model, key.num_classes, pool=key.pool,
                            pool_hparams=dict(key.pool_hparams), input_size=key.image_size,
                            **dict(key.model_options))
        model = model.to(dtype=param_dtype, memory_format=mf)
        x = torch.randn(batch, 3, key.image_size, key.image_size, dtype=param_dtype)
        x = x.contiguous(memory_format=mf)
        y = torch.randint(0, key.num_classes, (batch,))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=opts["momentum"],
                              weight_decay=opts["weight_decay"], nesterov=opts["nesterov"],
                              foreach=True)
        # init_scale 1: the scale's value changes no operator; 1 keeps fp16 gradients finite
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0) if scaled else None
        if scaler is not None:
            scaler.scale(torch.zeros(()))  # makes its scale and growth tensors, once per run
        model.train()
        with FlopCounterMode(display=False) as fc, OpCounter() as ops:
            with autocast():
                loss = F.cross_entropy(model(x), y)
            if scaler is not None:
                loss = scaler.scale(loss)
            fwd, fwd_other = ops.take()
            loss.backward()
            bwd, bwd_other = ops.take()
        train_flops = fc.get_total_flops()
        opt.step()  # the first step makes the momentum buffers: not the steady state
        with OpCounter() as ops:
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            step, step_other = ops.take()
        if scaler is not None and scaler.get_scale() != 1.0:
            raise RuntimeError(f"{key.describe()}: non-finite gradients while counting "
                               "operators: the GradScaler skipped the optimizer step")
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc, OpCounter() as ops:
            with autocast():
                model(x)
            ev, ev_other = ops.take()
        eval_flops = fc.get_total_flops()
    return ModelCost(train_flops / batch, eval_flops / batch, fwd, bwd, step, ev,
                     fwd_other + bwd_other + step_other, ev_other)


def count_all(plans: Sequence[RunPlan], cache: dict | None = None,
              log: Callable[[str], None] | None = None) -> dict[ModelKey, ModelCost]:
    """FLOPs and operators of every distinct model of ``plans`` (counted once each; ``cache``
    is reused)."""
    cache = {} if cache is None else cache
    keys = list(dict.fromkeys(p.key for p in plans))
    todo = [k for k in keys if k not in cache]
    for i, key in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            cache[key] = c = count_model(key)
        except ValueError as exc:  # e.g. fractional_max refusing the model at this size
            raise ValueError(f"{key.describe()}: its runs would fail at once: {exc}") from None
        if log:
            log(f"FLOPs {i}/{len(todo)}: {key.describe()}: {c.train_flops / 1e9:.3f} "
                f"GFLOP/img training, {c.eval_flops / 1e9:.3f} eval; {c.train_ops:,} kernel "
                f"ops per training step ({c.fwd_ops:,} fwd, {c.bwd_ops:,} bwd, {c.opt_ops:,} "
                f"opt), {c.eval_ops:,} per eval step ({time.perf_counter() - t0:.1f} s)")
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
    op_us: float = DEFAULT_OP_US
    step_sources: list[str] = field(default_factory=list)
    measured_on: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_h(self) -> float:
        return sum(r["total_h"] for r in self.rows)

    @property
    def total_range(self) -> tuple[float, float]:
        """Estimate mode: (optimistic, pessimistic) total, see :func:`range_settings`."""
        return (sum(r["total_h_lo"] for r in self.rows),
                sum(r["total_h_hi"] for r in self.rows))

    @property
    def total_gpu_only(self) -> float:
        """Estimate mode: the total without the host term (FLOPs / (peak x MFU) alone)."""
        return sum(r["total_h_gpu_only"] for r in self.rows)

    @property
    def host_bound_runs(self) -> int:
        return sum(r["bound"] == "host" for r in self.rows)


def range_settings() -> tuple[tuple[float, float], tuple[float, float]]:
    """((MFU, op us) of the optimistic end, (MFU, op us) of the pessimistic end)."""
    return (max(MFU_RANGE), min(OP_US_RANGE)), (min(MFU_RANGE), max(OP_US_RANGE))


def _base_row(p: RunPlan, c: ModelCost) -> dict:
    return dict(
        index=p.index, data=p.data, model=p.model, pool=p.pool, seed=p.seed,
        overrides=" ".join(p.overrides[1:]),
        pool_hparams=" ".join(f"{k}={v}" for k, v in p.key.pool_hparams),
        model_options=" ".join(f"{k}={v}" for k, v in p.key.model_options),
        width=p.width, image_size=p.image_size, num_classes=p.key.num_classes,
        precision=p.key.precision, batch_size=p.batch_size, eval_batch_size=p.eval_batch_size,
        train_images=p.train_images, epochs=p.epochs, steps_per_epoch=p.steps_per_epoch,
        train_steps=p.train_steps, val_images=p.val_images, val_passes=p.val_passes,
        test_images=p.test_images, test_passes=p.test_passes, eval_images=p.eval_images,
        eval_steps=p.val_passes * math.ceil(p.val_images / p.eval_batch_size)
        + p.test_passes * math.ceil(p.test_images / p.eval_batch_size),
        train_gflop_per_img=c.train_flops / 1e9, eval_gflop_per_img=c.eval_flops / 1e9,
        train_pflop=p.train_steps * p.batch_size * c.train_flops / 1e15,
        eval_pflop=p.eval_images * c.eval_flops / 1e15,
        train_kernel_ops=c.train_ops, fwd_kernel_ops=c.fwd_ops, bwd_kernel_ops=c.bwd_ops,
        opt_kernel_ops=c.opt_ops, train_other_ops=c.train_other_ops,
        eval_kernel_ops=c.eval_ops, eval_other_ops=c.eval_other_ops,
    )


def _eval_pass_s(images: int, batch: int, flops_per_img: float, rate: float,
                 host_s: float) -> float:
    """Seconds of one evaluation pass: ceil(images / batch) steps, each max(GPU, host)."""
    full, rest = divmod(images, batch)
    t = full * max(batch * flops_per_img / rate, host_s)
    if rest:
        t += max(rest * flops_per_img / rate, host_s)
    return t


def run_seconds(p: RunPlan, c: ModelCost, peak_tflops: float, mfu: float,
                op_us: float) -> dict:
    """Estimate of one run: every step takes max(GPU time, host time).

    GPU time = the step's FLOPs / (peak x MFU); host time = the step's kernel-launching
    operators x ``op_us`` microseconds. Returns the training and evaluation seconds and
    the per-step times (ms) of a training step and a full evaluation batch.
    """
    rate = peak_tflops * 1e12 * mfu  # FLOP/s
    gpu_s = p.batch_size * c.train_flops / rate
    host_s = c.train_ops * op_us * 1e-6
    eval_host_s = c.eval_ops * op_us * 1e-6
    eval_s = (p.val_passes * _eval_pass_s(p.val_images, p.eval_batch_size, c.eval_flops,
                                          rate, eval_host_s)
              + p.test_passes * _eval_pass_s(p.test_images, p.eval_batch_size, c.eval_flops,
                                             rate, eval_host_s))
    return dict(train_s=p.train_steps * max(gpu_s, host_s), eval_s=eval_s,
                gpu_ms=1e3 * gpu_s, host_ms=1e3 * host_s,
                eval_gpu_ms=1e3 * p.eval_batch_size * c.eval_flops / rate,
                eval_host_ms=1e3 * eval_host_s)


def _bound(host_ms: float, gpu_ms: float) -> str:
    return "host" if host_ms > gpu_ms else "GPU"


def estimate_hours(plans: Sequence[RunPlan], costs: Mapping[ModelKey, ModelCost],
                   peak_tflops: float = DEFAULT_PEAK_TFLOPS, mfu: float = DEFAULT_MFU,
                   op_us: float = DEFAULT_OP_US) -> list[dict]:
    """Rows of estimate mode: every step takes max(FLOPs / (peak x MFU), ops x op_us)."""
    _check_estimate_args(peak_tflops, mfu, op_us)
    (mfu_lo, us_lo), (mfu_hi, us_hi) = range_settings()
    rows = []
    for p in plans:
        c = costs[p.key]
        r = _base_row(p, c)
        t = run_seconds(p, c, peak_tflops, mfu, op_us)
        r.update(source="estimate", peak_tflops=peak_tflops, mfu=mfu, op_us=op_us,
                 gpu_ms=t["gpu_ms"], host_ms=t["host_ms"], step_ms=max(t["gpu_ms"], t["host_ms"]),
                 bound=_bound(t["host_ms"], t["gpu_ms"]), eval_gpu_ms=t["eval_gpu_ms"],
                 eval_host_ms=t["eval_host_ms"],
                 eval_bound=_bound(t["eval_host_ms"], t["eval_gpu_ms"]),
                 train_h=t["train_s"] / 3600, eval_h=t["eval_s"] / 3600,
                 total_h=(t["train_s"] + t["eval_s"]) / 3600)
        for name, (m, us) in (("gpu_only", (mfu, 0.0)), ("lo", (mfu_lo, us_lo)),
                              ("hi", (mfu_hi, us_hi))):
            t = run_seconds(p, c, peak_tflops, m, us)
            r[f"total_h_{name}"] = (t["train_s"] + t["eval_s"]) / 3600
        rows.append(r)
    return rows


def measured_hours(plans: Sequence[RunPlan], costs: Mapping[ModelKey, ModelCost],
                   step_rows: Mapping[tuple, dict]) -> list[dict]:
    """Rows of measured mode: training steps x measured step time; evaluation scaled by FLOPs.
    Operator counts are in the rows for information only."""
    rows = []
    for p in plans:
        c, m = costs[p.key], step_rows[_step_key(p)]
        step_s = m["step_ms"] / 1e3
        r = _base_row(p, c)
        train_s = p.train_steps * step_s
        eval_s = p.eval_images * (step_s / p.batch_size) * (c.eval_flops / c.train_flops)
        r.update(source=f"measured ({m['device']}, {m['precision']})", step_ms=m["step_ms"],
                 train_h=train_s / 3600, eval_h=eval_s / 3600,
                 total_h=(train_s + eval_s) / 3600)
        rows.append(r)
    return rows


def _check_estimate_args(peak_tflops: float, mfu: float, op_us: float = DEFAULT_OP_US
                         ) -> None:
    if not (isinstance(mfu, (int, float)) and 0.0 < mfu <= 1.0):
        raise ValueError(f"--mfu must be in (0, 1] (a fraction of the peak), got {mfu}")
    if not (isinstance(peak_tflops, (int, float)) and peak_tflops > 0 and
            math.isfinite(peak_tflops)):
        raise ValueError(f"--peak-tflops must be > 0, got {peak_tflops}")
    if not (isinstance(op_us, (int, float)) and op_us >= 0 and math.isfinite(op_us)):
        raise ValueError(f"--op-us must be >= 0 (microseconds per operator), got {op_us}")


def gpu_hours(experiment: str, overrides: Sequence[str] | None = None,
              step_times: Sequence[Path] | None = None,
              peak_tflops: float = DEFAULT_PEAK_TFLOPS, mfu: float = DEFAULT_MFU,
              op_us: float = DEFAULT_OP_US, cache: dict | None = None,
              log: Callable[[str], None] | None = None) -> GpuHours:
    """GPU-hours of every run of ``experiment`` with ``overrides``.

    ``step_times``: ``overhead.csv`` files (measured mode); None: estimate, every step
    max(FLOPs / (``peak_tflops`` x ``mfu``), kernel-launching operators x ``op_us`` us).
    ``cache`` (a dict) keeps FLOP and operator counts between calls.
    """
    _check_estimate_args(peak_tflops, mfu, op_us)
    overrides = list(overrides or [])
    table = load_step_times(step_times) if step_times else None
    plans = plan_runs(experiment, overrides)
    if not plans:
        raise ValueError(f"{experiment} with {overrides} has no runs")
    step_rows = match_step_times(plans, table) if table is not None else None
    if log:
        log(f"{experiment}: {len(plans)} runs, {len(set(p.key for p in plans))} distinct "
            "models to count FLOPs (FlopCounterMode) and operators (OpCounter) of, on CPU")
    costs = count_all(plans, cache, log)
    notes = ["Dataset sizes are the official ones (poolbench.data.DATASETS: train_size "
             "minus data.val_size, and test_size), not read from the files under data.root."]
    compiled = sum(p.compiled for p in plans)
    if step_rows is None:
        if compiled:
            notes.append(f"{compiled} run(s) set compile=true: torch.compile fuses operators, "
                         "so their host term (eager operators x op us) is an overestimate.")
        rows = estimate_hours(plans, costs, peak_tflops, mfu, op_us)
        return GpuHours(experiment, overrides, "estimate", rows, peak_tflops, mfu, op_us,
                        notes=notes)
    rows = measured_hours(plans, costs, step_rows)
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
    "width", "image_size", "num_classes", "precision", "batch_size", "eval_batch_size",
    "train_images", "epochs", "steps_per_epoch", "train_steps", "val_images", "val_passes",
    "test_images", "test_passes", "eval_images", "eval_steps", "train_gflop_per_img",
    "eval_gflop_per_img", "train_pflop", "eval_pflop", "train_kernel_ops", "fwd_kernel_ops",
    "bwd_kernel_ops", "opt_kernel_ops", "train_other_ops", "eval_kernel_ops",
    "eval_other_ops", "source", "peak_tflops", "mfu", "op_us", "gpu_ms", "host_ms", "bound",
    "step_ms", "eval_gpu_ms", "eval_host_ms", "eval_bound", "train_h", "eval_h", "total_h",
    "total_h_lo", "total_h_hi", "total_h_gpu_only",
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


def _bounds(rows, key: str = "bound") -> str:
    """Which term binds in ``rows``: "host", "GPU", or "host 5/8" when they differ."""
    n_host = sum(r[key] == "host" for r in rows)
    if n_host in (0, len(rows)):
        return rows[0][key]
    return f"host {n_host}/{len(rows)}"


def _range_label() -> str:
    (m_lo, us_lo), (m_hi, us_hi) = range_settings()
    return f"MFU {m_lo:.2f} & {us_lo:g} us/op to MFU {m_hi:.2f} & {us_hi:g} us/op"


def group_table(result: GpuHours) -> tuple[list[str], list[list[str]]]:
    """Per (data, model): runs, steps, FLOPs and operators per step, the two step-time
    terms (estimate) or the measured step time, hours."""
    est = result.mode == "estimate"
    head = ["data", "model", "runs", "epochs", "steps/run", "train GFLOP/img",
            "kernel ops/step"]
    head += (["GPU ms/step", "host ms/step", "bound", "h/run", "total h", "total h (range)"]
             if est else ["step ms (measured)", "h/run", "total h"])
    cells = []
    for (data, model), grp in _groups(result.rows):
        total = sum(r["total_h"] for r in grp)
        c = [data, model, str(len(grp)), _span((r["epochs"] for r in grp), _int),
             _span((r["train_steps"] for r in grp), _int),
             _span((r["train_gflop_per_img"] for r in grp), _gflop),
             _span((r["train_kernel_ops"] for r in grp), _int)]
        if est:
            c += [_span((r["gpu_ms"] for r in grp), _ms), _span((r["host_ms"] for r in grp), _ms),
                  _bounds(grp)]
        else:
            c.append(_span((r["step_ms"] for r in grp), _ms))
        c += [_span((r["total_h"] for r in grp), _hours), _hours(total)]
        if est:
            c.append(f"{_hours(sum(r['total_h_lo'] for r in grp))}-"
                     f"{_hours(sum(r['total_h_hi'] for r in grp))}")
        cells.append(c)
    c = ["total", "", str(len(result.rows)), "", "", "", ""]
    c += ["", "", f"host {result.host_bound_runs}/{len(result.rows)}", "",
          _hours(result.total_h), "{}-{}".format(*map(_hours, result.total_range))] if est \
        else ["", "", _hours(result.total_h)]
    cells.append(c)
    return head, cells


def method_differences(result: GpuHours) -> list[dict]:
    """Methods whose mean hours per run differ from the reference method's by >= NOTICEABLE.

    The reference of a (data, model) group is max pooling if the group has it, else the
    method with the fewest hours per run.
    """
    est = result.mode == "estimate"
    out = []
    for (data, model), grp in _groups(result.rows):
        per = {}
        for (pool,), g in _groups(grp, ("pool",)):
            n = len(g)
            per[pool] = dict(runs=n, h=sum(r["total_h"] for r in g) / n,
                             gflop=sum(r["train_gflop_per_img"] for r in g) / n,
                             ops=sum(r["train_kernel_ops"] for r in g) / n,
                             gpu_ms=sum(r["gpu_ms"] for r in g) / n if est else None,
                             host_ms=sum(r["host_ms"] for r in g) / n if est else None,
                             bound=_bounds(g) if est else None)
        if len(per) < 2:
            continue
        ref = "max" if "max" in per else min(per, key=lambda m: per[m]["h"])
        for pool, v in per.items():
            rel = v["h"] / per[ref]["h"] - 1
            if pool != ref and abs(rel) >= NOTICEABLE:
                out.append(dict(data=data, model=model, method=pool, ref=ref, rel=rel,
                                ref_ops=per[ref]["ops"], **v))
    return out


def _method_cells(diffs, est: bool = True) -> tuple[list[str], list[list[str]]]:
    head = ["data", "model", "method", "runs", "kernel ops/step", "train GFLOP/img"]
    head += ["GPU ms/step", "host ms/step", "bound"] if est else []
    head += ["h/run", "vs"]
    cells = []
    for d in diffs:
        c = [d["data"], d["model"], d["method"], str(d["runs"]),
             f"{d['ops']:,.0f} ({d['ops'] / d['ref_ops']:.1f}x)", _gflop(d["gflop"])]
        if est:
            c += [_ms(d["gpu_ms"]), _ms(d["host_ms"]), d["bound"]]
        c += [_hours(d["h"]), f"{100 * d['rel']:+.1f}% vs {d['ref']}"]
        cells.append(c)
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
        lo_h, hi_h = map(_hours, result.total_range)
        return (f"{ESTIMATE}: {what}: {n} runs, {_hours(total)} GPU-hours on "
                f"{gpu_name(result.peak_tflops)} ({lo_h}-{hi_h} h for {_range_label()}); "
                f"each step max(GPU time at MFU {result.mfu:.2f} of peak "
                f"{result.peak_tflops:g} TFLOPS, host time at {result.op_us:g} us per "
                f"kernel-launching operator): host-bound in {result.host_bound_runs} of {n} "
                "runs")
    return (f"MEASURED step times: {what}: {n} runs, {_hours(total)} GPU-hours on the device "
            f"the step times were measured on")


def _precisions(result: GpuHours) -> str:
    return ", ".join(sorted({r["precision"] for r in result.rows}))


def _counting(result: GpuHours) -> str:
    """The paragraph on how operators were counted."""
    rows = result.rows
    return (
        "Operators: counted on CPU with a `TorchDispatchMode` (`OpCounter`) in the same pass "
        "as the FLOPs, once per distinct model: one training step as a CUDA run takes it "
        f"(training mode, channels_last, forward + cross-entropy under autocast in the run's "
        f"precision, here {_precisions(result)}: `precision: auto` is 16-mixed on CUDA; CPU "
        "autocast casts the convolutions' and linear layers' inputs and weights as CUDA "
        "autocast does; backward of the `GradScaler`-scaled loss; the scaler's unscale, "
        "inf check and update; `SGD(momentum 0.9, weight decay 5e-4, foreach=True)`, the "
        "multi-tensor implementation PyTorch picks by default on CUDA, counted in its steady "
        "state; `zero_grad(set_to_none=True)`), and one evaluation forward pass (eval mode, "
        "no_grad). The pooling layers' CPU-only chunked code path is switched off while "
        "counting, so the counts are those of the path a GPU runs and do not depend on the "
        "batch or the image size. Views and metadata operators (view, t, expand, permute, "
        "transpose, slice, select, detach, ...; size queries, allocations, profiler markers) "
        "launch no kernel and are left out of the kernel count "
        f"({_span((r['train_other_ops'] for r in rows), _int)} per training step here). "
        "Kernel-launching operators per training step: "
        f"{_span((r['train_kernel_ops'] for r in rows), _int)} (forward + loss "
        f"{_span((r['fwd_kernel_ops'] for r in rows), _int)}, backward "
        f"{_span((r['bwd_kernel_ops'] for r in rows), _int)}, optimizer and scaler "
        f"{_span((r['opt_kernel_ops'] for r in rows), _int)}); per evaluation step "
        f"{_span((r['eval_kernel_ops'] for r in rows), _int)}.")


def derivation(result: GpuHours) -> list[str]:
    """How the numbers were derived, one paragraph per item."""
    runs = ("Runs: the sweep `poolbench-train -m experiment=" + result.experiment
            + (" " + " ".join(result.overrides) if result.overrides else "")
            + "` launches, each config composed with Hydra. A run trains epochs x "
            "floor(train images / batch) steps (the training loader drops the last partial "
            "batch; trainer.limit_train_batches and max_steps applied as Lightning does), "
            "evaluates the validation split every check_val_every_n_epoch epochs and the test "
            "set twice at the end (final weights and best-validation checkpoint), "
            "ceil(images / eval batch) steps per pass.")
    flops = ("FLOPs: counted with `torch.utils.flop_counter.FlopCounterMode` on CPU, once per "
             "distinct model, in the same pass as the operators: the run's model built with "
             "`poolbench.models.build_model` from its config, one training step (forward + "
             f"cross-entropy + backward) on a batch of {FLOP_BATCH} random images, divided by "
             f"{FLOP_BATCH} (training FLOPs per image); eval mode, forward only (evaluation "
             "FLOPs per image). FlopCounterMode counts convolutions and matrix "
             "multiplications only (2 FLOPs per multiply-add): elementwise work such as the "
             "pooling layers' own arithmetic, batch norm, activations and the optimizer step is "
             "not counted. (It counts the weight gradient of a grouped convolution as if it "
             "were dense: an overcount confined to the small depthwise layers, e.g. gated with "
             "pool.gate=depthwise.)")
    if result.mode == "estimate":
        rows = result.rows
        peak_note = ("the H100 SXM's dense FP16/BF16 tensor-core peak; the recipe trains in "
                     "16-mixed" if result.peak_tflops == DEFAULT_PEAK_TFLOPS else
                     f"--peak-tflops; the default {DEFAULT_PEAK_TFLOPS:g} is the H100 SXM's "
                     "dense FP16/BF16 tensor-core peak")
        lo_h, hi_h = map(_hours, result.total_range)
        ebs = _span((r["eval_batch_size"] for r in rows), _int)
        return [
            f"**{ESTIMATE}.** No GPU was measured. Every step takes max(GPU time, host "
            "time), because eager PyTorch enqueues kernels asynchronously: the host "
            "(Python, the dispatcher, autograd, the CUDA launch) runs ahead while the GPU is "
            "the slower side, and the GPU idles between small kernels while the host is. "
            "GPU time = the step's counted FLOPs / (peak x MFU), peak "
            f"{result.peak_tflops:g} TFLOPS ({peak_note}), MFU (model FLOPs utilisation: "
            f"counted FLOPs / (GPU time x peak)) {result.mfu:.2f}. Host time = the step's "
            f"kernel-launching ATen operators x {result.op_us:g} us. A training step has the "
            "training FLOPs and operators of the run's batch; an evaluation step the forward "
            f"pass's at the evaluation batch ({ebs}). The range, {lo_h}-{hi_h} h, puts the "
            f"two assumptions' ends together: {_range_label()}.",
            f"Assumptions. {result.op_us:g} us of host time per kernel-launching operator "
            f"(range {OP_US_RANGE[0]:g}-{OP_US_RANGE[1]:g} us, `--op-us`): not measured here "
            "(no GPU). Eager PyTorch's host cost per operator on a fast host is commonly put "
            "at 5-10 us with the CUDA launch (Python and the binding about 1-2 us, dispatcher "
            "and autograd bookkeeping 1-3 us, the caching allocator and cudaLaunchKernel "
            "2-4 us; backward operators, run by the C++ autograd engine, skip the Python "
            "part), more on a slow or busy host. MFU now stands for the GPU side only: how "
            "well the kernels use the tensor cores, with the uncounted elementwise work "
            "(pooling arithmetic, batch norm, activations, optimizer) inside it; range "
            f"{min(MFU_RANGE):.2f}-{max(MFU_RANGE):.2f} (`--mfu`).",
            _counting(result),
            "Left out of the host term (so it is, if anything, low): Lightning's own "
            "per-step Python work (hooks, logging, the LR scheduler), the on-device data "
            "augmentation, the training step's loss logging and non-finite check, the "
            "batch's host-to-device copy and evaluation metrics; the dispatch cost of the "
            "view operators; CUDA autocast's fp32 casts before some elementwise operators "
            "(exp, log, pow, softmax, sum, ...), which CPU autocast does not make; operators "
            "that launch more than one kernel (cuDNN convolutions, the multi-tensor optimizer "
            "operators). The max() assumes the host can run ahead of the GPU: the GradScaler "
            "reads its inf check back every step (one synchronisation, before the optimizer "
            "step), so it runs ahead within a step, which with the short optimizer tail "
            "changes little.",
            f"Here a training step's GPU time is "
            f"{_span((r['gpu_ms'] for r in rows), _ms)} ms and its host time "
            f"{_span((r['host_ms'] for r in rows), _ms)} ms: {result.host_bound_runs} of "
            f"{len(rows)} runs are host-bound. A full evaluation step takes GPU "
            f"{_span((r['eval_gpu_ms'] for r in rows), _ms)} ms, host "
            f"{_span((r['eval_host_ms'] for r in rows), _ms)} ms, host-bound in "
            f"{sum(r['eval_bound'] == 'host' for r in rows)} of {len(rows)} runs. Without "
            "the host term (FLOPs / (peak x MFU) alone, `--op-us 0`) the "
            f"total would be {_hours(result.total_gpu_only)} h. Measured step times settle "
            "it (how: below).",
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
        "training FLOPs per image), i.e. the measured step time scaled by the counted FLOPs. "
        "The operator counts (`kernel ops/step`) are for information only.",
        runs, flops, _counting(result),
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
    parts.append(f"FLOPs and operators counted on: cpu ({env['cpu']}, {env['threads']} "
                 f"threads), torch {env['torch']}, python {env['python']}")
    parts += ["", headline(result) + ".", ""]
    for para in derivation(result):
        parts += [para, ""]
    for note in result.notes:
        parts += [f"Note: {note}", ""]
    parts += ["## Per dataset and model", "", md_table(*group_table(result)), ""]
    diffs = method_differences(result)
    if diffs:
        parts += [f"## Methods whose hours per run differ by {100 * NOTICEABLE:.0f}% or more", "",
                  "`kernel ops/step` with its ratio to the reference method's.", "",
                  md_table(*_method_cells(diffs, result.mode == "estimate")), ""]
    elif any(len({r["pool"] for r in grp}) > 1 for _, grp in _groups(result.rows)):
        parts += [f"No method's hours per run differ from max pooling's (or the fastest "
                  f"method's) by {100 * NOTICEABLE:.0f}% or more.", ""]
    parts.append(f"Per run: `gpu_hours.csv` ({len(result.rows)} rows).")
    return "\n".join(parts)


def print_report(result: GpuHours, file=None) -> None:
    file = file or sys.stdout
    print(headline(result), file=file)
    rows = result.rows
    if result.mode == "estimate":
        print("Derived, not measured: a step takes max(GPU time = FLOPs counted by "
              "FlopCounterMode (convolutions and matmuls only) / (peak x MFU), host time = "
              "kernel-launching ATen operators per step (counted with a TorchDispatchMode, "
              f"GPU code path, {_precisions(result)}) x {result.op_us:g} us, an assumption). "
              f"Training step: GPU {_span((r['gpu_ms'] for r in rows), _ms)} ms, host "
              f"{_span((r['host_ms'] for r in rows), _ms)} ms; FLOPs alone (--op-us 0): "
              f"{_hours(result.total_gpu_only)} h.", file=file)
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
            terms = (f", GPU {_ms(d['gpu_ms'])} / host {_ms(d['host_ms'])} ms per step"
                     if d["gpu_ms"] is not None else "")
            print(f"  {d['data']} {d['model']} {d['method']}: {_hours(d['h'])} h/run "
                  f"({100 * d['rel']:+.1f}% vs {d['ref']}), {d['ops']:,.0f} kernel ops/step "
                  f"({d['ops'] / d['ref_ops']:.1f}x), {d['gflop']:.3f} GFLOP/img{terms}",
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
    p.add_argument("--op-us", type=float, default=DEFAULT_OP_US,
                   help=f"estimate mode: host microseconds per kernel-launching operator "
                        f"(default {DEFAULT_OP_US:g}; the report also shows "
                        f"{OP_US_RANGE[0]:g}-{OP_US_RANGE[1]:g}; 0: FLOPs alone)")
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
        _check_estimate_args(args.peak_tflops, args.mfu, args.op_us)
    except ValueError as exc:
        error(str(exc))
    try:
        result = gpu_hours(args.experiment, args.overrides, args.step_times,
                           peak_tflops=args.peak_tflops, mfu=args.mfu, op_us=args.op_us,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (ValueError, HydraException) as exc:
        error(str(exc))
    print_report(result)
    command = "poolbench-bench " + " ".join(shlex.quote(a) for a in argv)
    csv_path, md_path = write_outputs(result, args.out, command)
    print(f"\nwrote {csv_path} and {md_path}")
    return 0
