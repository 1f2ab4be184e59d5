"""FLOPs per image and ATen operators per step of a run's model (``gpu-hours``, step 2).

For every distinct :class:`~.plan.ModelKey` (model, model options, method, method
hyperparameters, image size, classes, precision, memory format, optimizer options),
:func:`count_model` runs one training step of a batch of :data:`FLOP_BATCH` random images on
CPU the way training runs it on a GPU (training mode, ``channels_last``, autocast in the
run's mixed precision (``precision: auto`` is ``16-mixed`` on CUDA), forward +
cross-entropy, backward through a ``GradScaler``, ``SGD(momentum, weight_decay,
foreach=True)`` as PyTorch picks on CUDA, in its steady state, i.e. its second step), then
one evaluation forward pass (eval mode, ``no_grad``). In that one pass
:class:`torch.utils.flop_counter.FlopCounterMode` counts the FLOPs (convolutions and matrix
multiplications only; divided by the batch) and :class:`OpCounter`, a
``TorchDispatchMode``, counts every ATen operator call. Operators that launch no kernel
(views and metadata, :func:`launches_kernel`) are counted apart. The pooling layers' CPU
chunked path is switched off while counting (:func:`gpu_code_path`), so the counts are
those of the path a GPU runs, independent of the batch and the image size.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ...models import build_model
from .plan import ModelKey, RunPlan

FLOP_BATCH = 2  # images per FLOP-counting pass (FLOPs are exactly linear in the batch)


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

    ``poolbench.pooling.tiles`` splits the work into chunks of samples on CPU (many more,
    batch- and size-dependent operators, some on worker threads a dispatch mode does not
    see); a GPU runs the functional path. Counting on CPU inside this context counts what
    the GPU runs. ``enabled=False`` leaves the CPU path on (for tests).
    """
    from ...pooling import tiles

    if not enabled:
        yield
        return
    with tiles.functional_path():
        yield


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

