"""Latency of every pooling method relative to native max pooling on the same tensor.

For each input shape and memory format, every method and the baseline (native
``F.max_pool2d`` with the same geometry) are timed **round-robin**: each repeat runs every
method once, in an order rotated from repeat to repeat, so slow drift of the machine
(frequency scaling, noisy neighbours) hits all of them alike. A method's ratio is the
median over repeats of its time divided by the baseline's time *in the same repeat*.

What is timed, per iteration (layers in train mode, so stochastic methods sample):

* ``fwd``: ``y = layer(x)`` with autograd recording (a training step's forward);
* ``bwd``: ``torch.autograd.grad(y, [x, *params], grad_out)`` (the input and every
  learnable parameter of the layer get a gradient);
* ``fwd+bwd``: both, i.e. the cost of the layer in a training step.

A method that refuses a shape (``fractional_max`` where its pseudo-random windows would be
fixed: every 2x2/2 pool on an even size, where it would be max pooling) is not timed there;
its row says ``refused`` and why.

``x`` is ``relu(randn(shape))`` (pools follow ReLUs, so a quarter of the windows of a 2x2 pool
hold ties at 0) and ``grad_out`` is a fixed ``randn`` of the output shape, both in the
memory format benchmarked. Timing uses ``time.perf_counter`` on CPU and CUDA events (with
a synchronisation after each sample) on CUDA, after warm-up iterations; a *sample* averages
``number`` iterations, with ``number`` chosen so that a baseline sample takes at least
``min_sample_ms``.

Memory, in two columns:

* ``saved_mib`` (every device): bytes of the distinct storages that autograd keeps for
  the backward pass (caught with ``torch.autograd.graph.saved_tensors_hooks``), not counting
  the input itself or the layer's parameters, which exist anyway. This is the activation
  memory a layer adds to a training step between its forward and its backward.
* ``peak_mib`` (CUDA only, ``n/a`` on CPU): ``torch.cuda.max_memory_allocated`` during one
  forward+backward minus the memory allocated before it; it includes the output and the
  gradients, so the baseline's value is not 0.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from ..pooling import available_pools, create_pool
from . import options
from .report import (
    command_line, device_line, environment, error_cell, log, markdown_head, md_table,
    refusal, resolve_device, say_written, text_table, write_csv_and_markdown,
)
from .timing import fit_repeats, median_ratio, rotated

HELP = "time every pooling method relative to native max pooling"

BASELINE = "native_max_pool2d"
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass(frozen=True)
class ShapeSpec:
    """An input shape ``(N, C, H, W)`` and the pooling geometry applied to it."""

    shape: tuple[int, int, int, int]
    kernel: int = 2
    stride: int | None = None
    padding: int = 0

    @property
    def stride_(self) -> int:
        return self.kernel if self.stride is None else self.stride

    @property
    def label(self) -> str:
        s = "x".join(map(str, self.shape)) + f" k{self.kernel}s{self.stride_}"
        return s + (f"p{self.padding}" if self.padding else "")

    def with_batch(self, batch: int) -> ShapeSpec:
        return replace(self, shape=(batch, *self.shape[1:]))


def parse_shape(text: str) -> ShapeSpec:
    """Parse ``NxCxHxW`` or ``NxCxHxW:K[/S[/P]]`` (kernel, stride, padding; default 2/K/0)."""
    body, _, geo = text.strip().partition(":")
    try:
        dims = tuple(int(v) for v in body.replace(",", "x").split("x"))
        nums = [int(v) for v in geo.split("/")] if geo else []
    except ValueError:
        raise ValueError(f"bad shape {text!r}: expected NxCxHxW or NxCxHxW:K/S/P") from None
    if len(dims) != 4 or min(dims) < 1 or len(nums) > 3 or (nums and min(nums) < 0):
        raise ValueError(f"bad shape {text!r}: expected NxCxHxW or NxCxHxW:K/S/P")
    kernel = nums[0] if nums else 2
    stride = nums[1] if len(nums) > 1 else None
    padding = nums[2] if len(nums) > 2 else 0
    if kernel < 1 or (stride is not None and stride < 1):
        raise ValueError(f"bad shape {text!r}: kernel and stride must be >= 1")
    return ShapeSpec(dims, kernel, stride, padding)  # type: ignore[arg-type]


# VGG16 on CIFAR (32x32 input): the five 2x2/2 max pools, at batch 128; ResNet stem 3x3/2 pad 1.
DEFAULT_SHAPES: tuple[ShapeSpec, ...] = (
    ShapeSpec((128, 64, 32, 32)),
    ShapeSpec((128, 128, 16, 16)),
    ShapeSpec((128, 256, 8, 8)),
    ShapeSpec((128, 512, 4, 4)),
    ShapeSpec((128, 512, 2, 2)),
    ShapeSpec((128, 64, 112, 112), kernel=3, stride=2, padding=1),
)
QUICK_BATCH = 32
QUICK_SHAPES: tuple[ShapeSpec, ...] = tuple(
    s.with_batch(QUICK_BATCH) for s in (DEFAULT_SHAPES[0], DEFAULT_SHAPES[3])
)

# Targets of the issue: forward+backward time relative to native max pooling, on contiguous
# CPU tensors at batch 128. ``None`` as the method list means every method.
TARGETS: tuple[tuple[ShapeSpec, tuple[str, ...] | None, float], ...] = (
    (DEFAULT_SHAPES[0], ("channel_adaptive", "stochastic_mix", "mixed"), 1.2),
    (DEFAULT_SHAPES[0], ("softpool", "tmaxavg", "soft_tmaxavg", "learnable_t", "gated",
                         "attention"), 2.0),
    (DEFAULT_SHAPES[3], None, 3.0),
)


@dataclass
class LatencyConfig:
    shapes: Sequence[ShapeSpec] = DEFAULT_SHAPES
    methods: Sequence[str] | None = None  # None: every registered method
    device: str = "auto"
    memory_formats: Sequence[str] = ("contiguous", "channels_last")
    repeats: int = 15
    min_repeats: int = 3
    warmup: int = 2
    min_sample_ms: float = 10.0
    max_number: int = 50
    number: int | None = None  # iterations per sample; None: from min_sample_ms
    # Wall-clock budget (seconds) for the timed repeats of one shape and memory format; the
    # repeat count is lowered (not below ``min_repeats``) to fit. None: no budget.
    budget_s: float | None = None
    seed: int = 0
    dtype: torch.dtype = torch.float32
    log: Callable[[str], None] | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class _Entry:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    params: list[torch.nn.Parameter]
    n_params: int
    error: str | None = None
    fwd: list[float] = field(default_factory=list)
    bwd: list[float] = field(default_factory=list)




def _make_entries(spec: ShapeSpec, methods: Sequence[str], device, dtype) -> list[_Entry]:
    """The baseline and every method's layer; a method that refuses this geometry
    (``fractional_max`` where its windows would be fixed) gets an entry with its reason."""
    k, s, p = spec.kernel, spec.stride_, spec.padding
    entries = [_Entry(BASELINE, lambda x: F.max_pool2d(x, k, s, p), [], 0)]
    for name in methods:
        try:
            layer = create_pool(name, spec.shape[1], kernel_size=k, stride=s, padding=p)
            layer.check_input_size(*spec.shape[-2:])
        except ValueError as exc:
            entries.append(_Entry(name, None, [], 0, error=refusal(exc)))  # type: ignore[arg-type]
            continue
        layer = layer.to(device=device, dtype=dtype).train()
        params = [q for q in layer.parameters() if q.requires_grad]
        entries.append(_Entry(name, layer, params, sum(q.numel() for q in params)))
    return entries


class _Timer:
    """Times one forward and one backward; CUDA events on CUDA, perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def run(self, entry: _Entry, x, grad_out, number: int) -> tuple[float, float]:
        inputs = [x, *entry.params]
        if self.cuda:
            events = []
            for _ in range(number):
                e = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
                e[0].record()
                y = entry.fn(x)
                e[1].record()
                torch.autograd.grad(y, inputs, grad_out, allow_unused=True)
                e[2].record()
                del y
                events.append(e)
            torch.cuda.synchronize()
            fwd = sum(e[0].elapsed_time(e[1]) for e in events) / 1e3
            bwd = sum(e[1].elapsed_time(e[2]) for e in events) / 1e3
            return fwd / number, bwd / number
        fwd = bwd = 0.0
        for _ in range(number):
            t0 = time.perf_counter()
            y = entry.fn(x)
            t1 = time.perf_counter()
            torch.autograd.grad(y, inputs, grad_out, allow_unused=True)
            t2 = time.perf_counter()
            del y
            fwd += t1 - t0
            bwd += t2 - t1
        return fwd / number, bwd / number


def saved_tensor_bytes(fn, x: torch.Tensor, params: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward in ``fn(x)``.

    The storages of ``x`` and of ``params`` are not counted (they exist anyway).
    """
    exclude = {x.untyped_storage().data_ptr()}
    exclude |= {q.untyped_storage().data_ptr() for q in params}
    seen: dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return t
        ptr = st.data_ptr()
        if ptr not in exclude and ptr not in seen:
            seen[ptr] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    del y
    return sum(seen.values())


def _cuda_peak_bytes(entry: _Entry, x, grad_out) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    y = entry.fn(x)
    grads = torch.autograd.grad(y, [x, *entry.params], grad_out, allow_unused=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del y, grads
    return peak


def _bench_one(spec: ShapeSpec, fmt: str, cfg: LatencyConfig, device: torch.device,
               methods: Sequence[str], log) -> list[dict]:
    torch.manual_seed(cfg.seed)
    mf = MEMORY_FORMATS[fmt]
    x = torch.randn(spec.shape, device=device, dtype=cfg.dtype).relu_()
    x = x.contiguous(memory_format=mf).requires_grad_(True)
    entries = _make_entries(spec, methods, device, cfg.dtype)
    with torch.no_grad():
        out_shape = entries[0].fn(x).shape
    grad_out = torch.randn(out_shape, device=device, dtype=cfg.dtype).contiguous(
        memory_format=mf)
    timer = _Timer(device)

    # Warm-up (also catches methods that fail on this geometry).
    est: dict[str, float] = {}
    for e in entries:
        if e.error:
            log(f"  {e.name}: {e.error}")
            continue
        try:
            est[e.name] = min(sum(timer.run(e, x, grad_out, 1)) for _ in range(cfg.warmup))
        except Exception as exc:  # noqa: BLE001 - reported in the table, never hidden
            e.error = f"{type(exc).__name__}: {exc}"
            log(f"  {e.name}: failed ({e.error})")
    entries = [e for e in entries if e.error is None] + [e for e in entries if e.error]
    live = [e for e in entries if e.error is None]
    if not live or live[0].name != BASELINE:
        raise RuntimeError(f"the baseline failed on {spec.label}")

    base = est[BASELINE]
    number = cfg.number or max(
        1, min(cfg.max_number, math.ceil(cfg.min_sample_ms / 1e3 / max(base, 1e-9))))
    round_1 = sum(est[e.name] for e in live)  # one iteration of every layer
    if cfg.budget_s is not None and cfg.number is None:  # fewer iterations per sample first
        fit = int(cfg.budget_s // max(round_1 * min(cfg.min_repeats, cfg.repeats), 1e-9))
        number = max(1, min(number, fit))
    round_s = number * round_1
    repeats = fit_repeats(cfg.repeats, cfg.min_repeats, cfg.budget_s, round_s)
    log(f"  {len(live)} layers, {repeats} repeats x {number} iteration(s), "
        f"~{round_s * repeats:.0f} s")

    for r in range(repeats):
        for e in rotated(live, r):
            f, b = timer.run(e, x, grad_out, number)
            e.fwd.append(f)
            e.bwd.append(b)

    baseline = live[0]
    base_fb = [f + b for f, b in zip(baseline.fwd, baseline.bwd)]
    rows = []
    for e in entries:
        row = dict(
            device=device.type, shape=spec.label, N=spec.shape[0], C=spec.shape[1],
            H=spec.shape[2], W=spec.shape[3], kernel=spec.kernel, stride=spec.stride_,
            padding=spec.padding, memory_format=fmt, method=e.name, params=e.n_params,
            repeats=repeats, number=number,
        )
        if e.error:
            rows.append({**row, "error": e.error})
            continue
        fb = [f + b for f, b in zip(e.fwd, e.bwd)]
        saved = saved_tensor_bytes(e.fn, x, e.params)
        peak = _cuda_peak_bytes(e, x, grad_out) if device.type == "cuda" else math.nan
        rows.append({
            **row,
            "fwd_ms": 1e3 * statistics.median(e.fwd),
            "bwd_ms": 1e3 * statistics.median(e.bwd),
            "fwdbwd_ms": 1e3 * statistics.median(fb),
            "fwd_ratio": median_ratio(e.fwd, baseline.fwd),
            "bwd_ratio": median_ratio(e.bwd, baseline.bwd),
            "fwdbwd_ratio": median_ratio(fb, base_fb),
            "saved_mib": saved / 2**20,
            "peak_mib": peak / 2**20,
            "error": "",
        })
    return rows


def run_latency(cfg: LatencyConfig) -> list[dict]:
    """Run the benchmark; one row (dict) per shape, memory format and method."""
    log = cfg.log or (lambda msg: None)
    device = resolve_device(cfg.device)
    methods = list(available_pools() if cfg.methods is None else cfg.methods)
    bad = sorted(set(methods) - set(available_pools()))
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {available_pools()}")
    for fmt in cfg.memory_formats:
        if fmt not in MEMORY_FORMATS:
            raise ValueError(f"unknown memory format {fmt!r}; choose from {list(MEMORY_FORMATS)}")
    rows: list[dict] = []
    for spec in cfg.shapes:
        for fmt in cfg.memory_formats:
            log(f"{spec.label} {fmt} on {device.type}")
            rows.extend(_bench_one(spec, fmt, cfg, device, methods, log))
    return rows


# ----------------------------------------------------------------------------- reporting

CSV_COLUMNS = (
    "device", "shape", "N", "C", "H", "W", "kernel", "stride", "padding", "memory_format",
    "method", "params", "fwd_ms", "bwd_ms", "fwdbwd_ms", "fwd_ratio", "bwd_ratio",
    "fwdbwd_ratio", "saved_mib", "peak_mib", "repeats", "number", "error",
)


def _fmt(v, digits=2) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}f}"
    return str(v)


def _groups(rows):
    keys = []
    for r in rows:
        k = (r["shape"], r["memory_format"])
        if k not in keys:
            keys.append(k)
    return [(k, [r for r in rows if (r["shape"], r["memory_format"]) == k]) for k in keys]


def _baseline(rows):
    return next(r for r in rows if r["method"] == BASELINE)


def table_rows(rows) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the detailed table of one (shape, memory format) group."""
    cuda = any(r["device"] == "cuda" for r in rows)
    head = ["method", "params", "fwd x", "bwd x", "fwd+bwd x", "fwd ms", "bwd ms",
            "fwd+bwd ms", "saved MiB"] + (["peak MiB"] if cuda else [])
    cells = []
    for r in rows:
        if r.get("error"):
            cells.append([r["method"], str(r["params"]), error_cell(r["error"])]
                         + [""] * (len(head) - 3))
            continue
        c = [r["method"], f"{r['params']:,}", _fmt(r["fwd_ratio"]), _fmt(r["bwd_ratio"]),
             _fmt(r["fwdbwd_ratio"]), _fmt(r["fwd_ms"], 3), _fmt(r["bwd_ms"], 3),
             _fmt(r["fwdbwd_ms"], 3), _fmt(r["saved_mib"], 1)]
        if cuda:
            c.append(_fmt(r["peak_mib"], 1))
        cells.append(c)
    return head, cells


def summary_rows(rows, fmt: str) -> tuple[list[str], list[list[str]]]:
    """Methods x shapes table of forward+backward ratios for one memory format."""
    sel = [r for r in rows if r["memory_format"] == fmt]
    shapes = list(dict.fromkeys(r["shape"] for r in sel))
    methods = list(dict.fromkeys(r["method"] for r in sel))
    by = {(r["method"], r["shape"]): r for r in sel}
    cells = []
    for m in methods:
        line = [m]
        for s in shapes:
            r = by.get((m, s))
            line.append("" if r is None else error_cell(r["error"], short=True)
                        if r.get("error") else _fmt(r["fwdbwd_ratio"]))
        cells.append(line)
    base = ["baseline fwd+bwd ms"]
    for s in shapes:
        r = by.get((BASELINE, s))
        base.append("" if r is None else _fmt(r["fwdbwd_ms"], 3))
    cells.append(base)
    return ["method"] + shapes, cells


def check_targets(rows) -> list[dict]:
    """Evaluate :data:`TARGETS` on the contiguous rows whose shape matches exactly."""
    out = []
    for spec, methods, limit in TARGETS:
        sel = [r for r in rows if r["shape"] == spec.label and r["memory_format"] == "contiguous"
               and r["method"] != BASELINE and not r.get("error")]
        if methods is not None:
            sel = [r for r in sel if r["method"] in methods]
        for r in sel:
            out.append(dict(shape=spec.label, method=r["method"], limit=limit,
                            ratio=r["fwdbwd_ratio"], met=r["fwdbwd_ratio"] <= limit))
    return out




def _baseline_note(rows) -> str:
    b = _baseline(rows)
    return (f"baseline native F.max_pool2d: fwd {b['fwd_ms']:.3f} ms, bwd {b['bwd_ms']:.3f} ms, "
            f"fwd+bwd {b['fwdbwd_ms']:.3f} ms (medians of {b['repeats']} repeats x "
            f"{b['number']} iteration(s))")


def to_markdown(rows, command: str | None = None, env: dict | None = None) -> str:
    env = env or environment()
    device = rows[0]["device"] if rows else "?"
    parts = markdown_head("# Pooling latency relative to native max pooling", command, env)
    parts.append(device_line(device, env))
    parts += ["", "Ratios are medians over round-robin repeats of (method time / native "
              "`F.max_pool2d` time in the same repeat), layers in train mode, input "
              "`relu(randn)`, every input and parameter gets a gradient. `saved MiB`: storages "
              "autograd keeps for backward, beyond the input and the parameters"
              + ("; `peak MiB`: CUDA peak allocation during forward+backward." if device == "cuda"
                 else "."), ""]
    for fmt in dict.fromkeys(r["memory_format"] for r in rows):
        parts += [f"## Forward+backward time / native max pool, {fmt}", ""]
        parts += [md_table(*summary_rows(rows, fmt)), ""]
    targets = check_targets(rows)
    if targets:
        parts += ["## Targets (contiguous, forward+backward)", ""]
        cells = [[t["shape"], t["method"], f"<= {t['limit']:g}", _fmt(t["ratio"]),
                  "yes" if t["met"] else "**no**"] for t in targets]
        parts += [md_table(["shape", "method", "target", "ratio", "met"], cells), ""]
    parts += ["## Details", ""]
    for (shape, fmt), grp in _groups(rows):
        parts += [f"### {shape}, {fmt}", "", _baseline_note(grp) + ".", ""]
        parts += [md_table(*table_rows(grp)), ""]
    return "\n".join(parts)


def write_outputs(rows, out_dir: Path, command: str | None = None) -> tuple[Path, Path]:
    return write_csv_and_markdown(rows, CSV_COLUMNS, to_markdown(rows, command), out_dir,
                                  "latency")


def print_report(rows, file=None) -> None:
    """Rich tables on a terminal, plain text otherwise."""
    file = file or sys.stdout
    rich_ok = False
    if file.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
            rich_ok = True
        except ImportError:
            pass
    if rich_ok:
        console = Console(file=file)

        def show(title, head, cells, caption=None):
            t = Table(title=title, caption=caption)
            for i, h in enumerate(head):
                t.add_column(h, justify="left" if i == 0 else "right")
            for c in cells:
                t.add_row(*c)
            console.print(t)
    else:
        def show(title, head, cells, caption=None):
            print(f"\n{title}", file=file)
            if caption:
                print(caption, file=file)
            print(text_table(head, cells), file=file)

    for (shape, fmt), grp in _groups(rows):
        show(f"{shape} {fmt} ({grp[0]['device']})", *table_rows(grp), caption=_baseline_note(grp))
    for fmt in dict.fromkeys(r["memory_format"] for r in rows):
        show(f"forward+backward / native max pool, {fmt}", *summary_rows(rows, fmt))
    targets = check_targets(rows)
    if targets:
        cells = [[t["shape"], t["method"], f"<= {t['limit']:g}", _fmt(t["ratio"]),
                  "yes" if t["met"] else "NO"] for t in targets]
        show("targets (contiguous, forward+backward)",
             ["shape", "method", "target", "ratio", "met"], cells)


# ----------------------------------------------------------------------------- command line

def add_arguments(p) -> None:
    """Arguments of ``poolbench-bench latency``."""
    p.add_argument(
        "--shapes", nargs="+", metavar="SHAPE",
        help="input shapes NxCxHxW, optionally with the pooling geometry as :K/S/P "
             "(default: VGG16-on-CIFAR shapes at batch 128 with 2x2/2, and the ResNet stem "
             f"128x64x112x112:3/2/1; that is {' '.join(_shape_arg(s) for s in DEFAULT_SHAPES)})")
    options.add_device(p)
    p.add_argument("--memory-format", default="both",
                   choices=("contiguous", "channels_last", "both"),
                   help="memory format of the input and output gradient (default: both)")
    options.add_methods(p)
    options.add_repeats(p, "round-robin repeats per shape (default 15, 5 with --quick); on CPU "
                           "shapes whose repeats would exceed --budget get fewer (at least 3)")
    options.add_number(p, "iterations averaged per sample (default: enough for the baseline's "
                          "sample to take 10 ms, at most 50)", metavar="N")
    options.add_warmup(p, "warm-up iterations per method before timing (default 2, 1 with "
                          "--quick)", metavar="N")
    options.add_threads(p)
    options.add_budget(p, "time budget for the repeats of one shape and memory format "
                          "(default: 120 s on CPU, 8 s with --quick, none on CUDA; 0 disables)")
    options.add_quick(p, "batch 32 and two shapes (64x32x32 and 512x4x4) unless --shapes is "
                         "given, at most 5 repeats and 8 s per shape and memory format, one "
                         "warm-up: a smoke test of under a minute on a small CPU")
    options.add_out(p, "latency")


def _shape_arg(spec: ShapeSpec) -> str:
    """``spec`` as ``--shapes`` takes it (the inverse of :func:`parse_shape`)."""
    s = "x".join(map(str, spec.shape))
    if (spec.kernel, spec.stride_, spec.padding) != (2, 2, 0):
        s += f":{spec.kernel}/{spec.stride_}/{spec.padding}"
    return s


def config_from_args(args) -> LatencyConfig:
    """The :class:`LatencyConfig` of parsed arguments, the ``--quick`` and per-device
    defaults filled in; a bad value exits with a message naming it."""
    q = args.quick
    options.check_positive(repeats=args.repeats, number=args.number, warmup=args.warmup)
    try:
        device = resolve_device(args.device)
        shapes = ([parse_shape(s) for s in args.shapes] if args.shapes
                  else list(QUICK_SHAPES if q else DEFAULT_SHAPES))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    repeats = args.repeats if args.repeats is not None else (5 if q else 15)
    budget = args.budget
    if budget is None:
        budget = None if device.type == "cuda" else (8.0 if q else 120.0)
    elif budget <= 0:
        budget = None
    return LatencyConfig(
        shapes=shapes, methods=args.methods, device=str(device),
        memory_formats=(["contiguous", "channels_last"] if args.memory_format == "both"
                        else [args.memory_format]),
        repeats=repeats, min_repeats=min(3, repeats), budget_s=budget,
        warmup=args.warmup if args.warmup is not None else (1 if q else 2),
        number=args.number, log=log,
    )


def run(args, argv) -> int:
    """Run ``poolbench-bench latency`` with parsed ``args`` (``argv`` is recorded)."""
    cfg = config_from_args(args)
    with options.num_threads(args.threads):  # the report records the thread count
        rows = run_latency(cfg)
        print_report(rows)
        say_written(write_outputs(rows, args.out, command_line(argv)))
    return 0
