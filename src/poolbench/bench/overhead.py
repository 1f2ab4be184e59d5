"""Training-step overhead of every pooling method in VGG16 and ResNet18, relative to max pooling.

What is timed: one full training step as ``poolbench-train`` runs it, on a fixed batch
(``x = randn(batch, 3, S, S)``, ``y`` random labels, both made once):

* ``fwd``: the model's forward pass and the cross-entropy loss (under autocast with
  ``16-mixed``, the training default on CUDA; fp32 on CPU, as ``precision: auto`` does);
* ``bwd``: ``loss.backward()`` (through a ``GradScaler`` with ``16-mixed``);
* ``opt``: ``SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)`` step (the recipe of
  ``conf/train.yaml``) and ``zero_grad(set_to_none=True)``.

Models are built once per method with :func:`~poolbench.models.build_model` (100 classes,
the configs' defaults: VGG16 with the method at all five pools, ResNet18 with the paper's
stem, whose one pool is the method; ``width`` as given), seeded identically, in training
mode, in ``channels_last`` memory format with ``channels_last`` inputs (as training does;
``--memory-format contiguous`` to compare), and warmed up before timing.

Timing is **interleaved**: every repeat runs every method of one model once (``number``
steps each), in an order rotated from repeat to repeat, so slow drift of the machine
(frequency scaling, other processes) hits every method alike. A method's ratio is the
median over repeats of its step time divided by max pooling's step time *in the same
repeat*; the 25th and 75th percentiles of that ratio show how noisy it was. CPU times
come from ``time.perf_counter`` (wall) and ``time.process_time`` (the process's CPU time,
both recorded; ``clock="cpu"`` makes the ratios use it: with one thread it leaves out the
time the process was descheduled by other processes, which dominates the noise on a
shared machine), CUDA times from CUDA events with a synchronisation after each sample.

A method that refuses the model at this image size (``fractional_max``: on the 2x2/2 pools
of 32 and 64 px images its pseudo-random windows would be max pooling's own; checked by
``build_model(..., input_size=)``) is not timed; its row says ``refused`` and why.

Extra parameters are counted on the whole model (``model_summary``) against the same
model with max pooling.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..models import MODELS
from . import options
from .report import (
    command_line, device_line, environment, error_cell, log, markdown_head, md_table,
    resolve_device, say_written, text_table, write_csv_and_markdown,
)

HELP = "training-step time of VGG16 and ResNet18 with every method relative to max pooling"

# The shared step machinery; names tests and overhead_compile reach through this module too.
from .overhead_step import (  # noqa: F401 (re-exported)
    BASELINE, CLOCKS, MEMORY_FORMATS, PRECISIONS, TARGETS, OverheadConfig, _bench_model,
    _build_entry, resolve_clock, resolve_precision,
)

def run_overhead(cfg: OverheadConfig) -> list[dict]:
    """Run the benchmark; one row (dict) per model and method, max pooling first."""
    log = cfg.log or (lambda msg: None)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    clock = resolve_clock(cfg.clock, device)
    bad = sorted(set(cfg.models) - set(MODELS))
    if bad:
        raise ValueError(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    methods = options.resolve_methods(cfg.methods)
    if cfg.memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format={cfg.memory_format!r} is not valid; choose one of "
                         f"{list(MEMORY_FORMATS)}")
    for name, value in (("batch", cfg.batch), ("image_size", cfg.image_size),
                        ("repeats", cfg.repeats), ("number", cfg.number),
                        ("warmup", cfg.warmup)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    methods = [BASELINE] + [m for m in dict.fromkeys(methods) if m != BASELINE]
    bench = _bench_model
    if cfg.compile:
        from ..speed import COMPILE_MODES
        from .overhead_compile import bench_model as bench

        if cfg.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode={cfg.compile_mode!r} is not valid; choose one of "
                             f"{list(COMPILE_MODES)}")
    rows: list[dict] = []
    for model_name in cfg.models:
        log(f"{model_name} on {device.type}: batch {cfg.batch}, {cfg.image_size}x"
            f"{cfg.image_size}, width {cfg.width or 64}, precision {precision}, "
            f"{cfg.memory_format}, {torch.get_num_threads()} thread(s), {clock} clock"
            + (f", eager and compiled ({cfg.compile_mode})" if cfg.compile else ""))
        rows.extend(bench(model_name, cfg, device, precision, clock, methods, log))
    return rows


# ----------------------------------------------------------------------------- reporting

CSV_COLUMNS = (
    "device", "model", "method", "batch", "image_size", "width", "precision", "memory_format",
    "clock", "params_total", "extra_params", "extra_params_pct", "params_pooling", "pool_layers",
    "method_pool_layers", "step_ms", "fwd_ms", "bwd_ms", "opt_ms", "step_ratio",
    "step_ratio_q25", "step_ratio_q75", "fwd_ratio", "bwd_ratio", "step_ratio_wall",
    "step_ratio_cpu", "img_per_s", "peak_mib",
    "final_loss", "repeats", "number", "error",
    "compile", "compile_s", "step_ratio_vs_eager",  # with --compile (.overhead_compile)
)


def _fmt(v, digits=2) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _pct(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.1f}%"


def table_rows(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one model's table."""
    cuda = any(r["device"] == "cuda" for r in rows)
    both = not cuda and all("step_ratio_wall" in r for r in rows if "step_ratio" in r)
    head = ["method", "step x max", "(IQR)", "overhead", "fwd x", "bwd x"]
    head += ["wall x", "cpu x"] if both else []
    head += ["step ms", "fwd ms", "bwd ms", "opt ms", "extra params", "pool layers"]
    head += ["peak MiB"] if cuda else []
    cells = []
    for r in rows:
        extra = (f"{r['extra_params']:+,} ({r['extra_params_pct']:+.2f}%)"
                 if "extra_params" in r else "")
        layers = (f"{r['method_pool_layers']}/{r['pool_layers']}"
                  if "pool_layers" in r else "")
        if r.get("error") and "step_ratio" not in r:
            cells.append([r["method"], error_cell(r["error"])] + [""] * (len(head) - 4)
                         + [extra, layers])
            continue
        c = [r["method"], _fmt(r["step_ratio"], 3),
             f"{r['step_ratio_q25']:.3f}-{r['step_ratio_q75']:.3f}", _pct(r["step_ratio"]),
             _fmt(r["fwd_ratio"]), _fmt(r["bwd_ratio"])]
        if both:
            c += [_fmt(r["step_ratio_wall"], 3), _fmt(r["step_ratio_cpu"], 3)]
        c += [_fmt(r["step_ms"], 1),
             _fmt(r["fwd_ms"], 1), _fmt(r["bwd_ms"], 1), _fmt(r["opt_ms"], 1), extra, layers]
        if cuda:
            c.append(_fmt(r["peak_mib"], 0))
        if r.get("error"):
            c[0] += f" ({r['error']})"
        cells.append(c)
    return head, cells


def check_targets(rows: Sequence[dict]) -> list[dict]:
    out = []
    for model, methods, limit in TARGETS:
        sel = [r for r in rows if r["model"] == model and r["method"] != BASELINE
               and "step_ratio" in r and r.get("compile") in (None, "", "eager")]
        if methods is not None:
            sel = [r for r in sel if r["method"] in methods]
        for r in sel:
            out.append(dict(model=model, method=r["method"], limit=limit,
                            ratio=r["step_ratio"], q75=r["step_ratio_q75"],
                            met=r["step_ratio"] <= limit))
    return out


def _groups(rows):
    """(title, rows) per model, and per variant (eager, compiled) with --compile."""
    def key(r):
        return r["model"] + (f" ({r['compile']})" if r.get("compile") else "")

    keys = list(dict.fromkeys(key(r) for r in rows))
    return [(k, [r for r in rows if key(r) == k]) for k in keys]


def _setting(rows) -> str:
    r = rows[0]
    return (f"{r['device']}, batch {r['batch']}, {r['image_size']}x{r['image_size']} inputs, "
            f"width {r['width']}, precision {r['precision']}, {r['memory_format']}, "
            f"{r['repeats']} repeats x {r['number']} step(s), times from the {r['clock']} clock")


def _baseline_note(rows) -> str:
    b = next(r for r in rows if r["method"] == BASELINE)
    return (f"max pooling: {b['step_ms']:.1f} ms per step (fwd {b['fwd_ms']:.1f}, bwd "
            f"{b['bwd_ms']:.1f}, opt {b['opt_ms']:.1f}), {b['params_total']:,} parameters")


def to_markdown(rows: Sequence[dict], command: str | None = None, env: dict | None = None
                ) -> str:
    env = env or environment()
    device = rows[0]["device"] if rows else "?"
    parts = markdown_head("# Training-step overhead relative to max pooling", command, env)
    parts.append(device_line(device, env))
    parts += [
        "", "One training step = forward + cross-entropy, backward, SGD step (lr 0.1, momentum "
        "0.9, weight decay 5e-4) on a fixed random batch; models in training mode "
        "(stochastic methods sample), 100 classes, VGG16 with the method at all five pools, "
        "ResNet18 with the paper stem (its one pool is the method). Methods are timed "
        "interleaved, round-robin in one process; `step x max` is the median over repeats of "
        "(step time / max pooling's step time in the same repeat), `(IQR)` the 25th-75th "
        "percentile of that ratio. `fwd x`, `bwd x` likewise for the two passes; ms columns "
        "are medians. The times come from the clock named in each setting line: CUDA events, "
        "wall time (`perf_counter`) or the process's CPU time (`process_time`, which leaves "
        "out the time the process was descheduled by other work on a shared machine); a CPU "
        "run records both, as `wall x` and `cpu x`. `extra params`: whole model vs max pooling; `pool layers`: layers "
        "using the method / all pooling layers.", ""]
    for model, grp in _groups(rows):
        parts += [f"## {model}", "", f"Setting: {_setting(grp)}. {_baseline_note(grp)}.", "",
                  md_table(*table_rows(grp)), ""]
    targets = check_targets(rows)
    if targets:
        parts += ["## Targets (step time / max pooling)", ""]
        cells = [[t["model"], t["method"], f"<= {t['limit']:.2f}", f"{t['ratio']:.3f}",
                  f"{t['q75']:.3f}", "yes" if t["met"] else "**no**"] for t in targets]
        parts += [md_table(["model", "method", "target", "ratio", "q75", "met"], cells), ""]
    from .overhead_compile import markdown_section

    parts += markdown_section(rows)
    return "\n".join(parts)


def write_outputs(rows, out_dir: Path, command: str | None = None) -> tuple[Path, Path]:
    return write_csv_and_markdown(rows, CSV_COLUMNS, to_markdown(rows, command), out_dir,
                                  "overhead")


def print_report(rows, file=None) -> None:

    file = file or sys.stdout
    for model, grp in _groups(rows):
        print(f"\n{model}: {_setting(grp)}\n{_baseline_note(grp)}", file=file)
        print(text_table(*table_rows(grp)), file=file)
    targets = check_targets(rows)
    if targets:
        print("\ntargets (step time / max pooling)", file=file)
        cells = [[t["model"], t["method"], f"<= {t['limit']:.2f}", f"{t['ratio']:.3f}",
                  "yes" if t["met"] else "NO"] for t in targets]
        print(text_table(["model", "method", "target", "ratio", "met"], cells), file=file)
    from .overhead_compile import has_compiled, side_by_side

    if has_compiled(rows):
        print("\neager vs torch.compile", file=file)
        print(text_table(*side_by_side(rows)), file=file)


def overhead_frame(csv_path) -> "pd.DataFrame":  # noqa: F821
    """``overhead.csv`` in the column layout of :func:`poolbench.results.overhead_frame`.

    Step time stands in for epoch time: ``epoch_time_rel`` is the interleaved median ratio,
    ``epoch_time_s_mean`` the median step time in seconds and ``epoch_time_s_std`` the
    interquartile range of the ratio scaled to seconds (for error bars); ``data`` names the
    synthetic input (e.g. ``"random 32x32"``), ``n`` the repeats. Failed rows are dropped.
    """
    import pandas as pd

    df = pd.read_csv(csv_path, keep_default_na=False, na_values=["", "nan"])
    df = df[df["step_ratio"].notna()]
    base_ms = df[df["method"] == BASELINE].set_index("model")["step_ms"]
    iqr = (df["step_ratio_q75"] - df["step_ratio_q25"]) * df["model"].map(base_ms) / 1e3
    return pd.DataFrame({
        "data": "random " + df["image_size"].astype(str) + "x" + df["image_size"].astype(str),
        "model": df["model"], "method": df["method"], "n": df["repeats"],
        "epoch_time_s_mean": df["step_ms"] / 1e3, "epoch_time_s_std": iqr,
        "epoch_time_rel": df["step_ratio"], "throughput_img_s": df["img_per_s"],
        "params_total": df["params_total"], "extra_params": df["extra_params"],
        "extra_params_pct": df["extra_params_pct"], "params_pooling": df["params_pooling"],
        "pool_layers": df["pool_layers"],
        "devices": [[d] for d in df["device"]],
    }).reset_index(drop=True)


# ----------------------------------------------------------------------------- command line

def add_arguments(p) -> None:
    """Arguments of ``poolbench-bench overhead``."""
    p.add_argument("--models", nargs="+", default=None, choices=list(OverheadConfig.models),
                   metavar="MODEL",
                   help=f"models (default: {' '.join(OverheadConfig.models)}; the paper's)")
    options.add_methods(p, "pooling methods (default: all registered; max is always included)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default 128, the recipe's; 4 with --quick)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input height and width (default 32, CIFAR; 64 is Tiny ImageNet)")
    p.add_argument("--width", type=int, default=None,
                   help="model base width (default 64, the real models; 8 with --quick)")
    options.add_device(p)
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto (default): 16-mixed on CUDA, 32 on CPU, as the trainer")
    p.add_argument("--memory-format", default="channels_last", choices=list(MEMORY_FORMATS),
                   help="memory format of model and input (default: channels_last, as training)")
    p.add_argument("--clock", default="auto", choices=CLOCKS,
                   help="what the ratios are computed from: auto (default) = CUDA events on "
                        "CUDA, wall time (perf_counter) on CPU; cpu = the process's CPU time "
                        "(CPU only, use with --threads 1): time the process was descheduled "
                        "by other work does not count, steadier on a shared machine. A CPU "
                        "run records both ratios either way")
    options.add_repeats(p, "round-robin repeats per model (default 15, 3 with --quick)")
    options.add_number(p, "training steps per sample (default 1)", default=1)
    options.add_warmup(p, "untimed steps per method first (default 2 on CPU, 10 on CUDA, 1 "
                          "with --quick)")
    options.add_budget(p, "time budget per model for the repeats: fewer repeats (at least 3) "
                          "to fit (default: none)")
    options.add_threads(p, quick=1)
    options.add_seed(p, "seed of models and batch (default 0)")
    options.add_quick(p, "batch 4, width 8, 3 repeats, 1 warm-up step, 1 thread: a smoke "
                         "test of seconds")
    p.add_argument("--compile", action="store_true",
                   help="also time every method torch.compile'd (inductor), side by side "
                        "with eager in the same round-robin; the first compiled step is "
                        "reported as compile time")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode with --compile (default: default; "
                        "reduce-overhead, max-autotune, max-autotune-no-cudagraphs)")
    options.add_out(p, "overhead")


def config_from_args(args) -> OverheadConfig:
    """The :class:`OverheadConfig` of parsed arguments, the ``--quick`` and per-device
    defaults filled in."""
    q = args.quick

    def pick(value, default):
        return default if value is None else value

    options.check_positive(batch=args.batch, image_size=args.image_size, width=args.width,
                           repeats=args.repeats, number=args.number, warmup=args.warmup)
    try:  # CUDA: more warm-up, so the GradScaler has found its scale (skipped steps are cheap)
        cuda = resolve_device(args.device).type == "cuda"
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return OverheadConfig(
        models=args.models or list(OverheadConfig.models), methods=args.methods,
        batch=pick(args.batch, 4 if q else 128), image_size=pick(args.image_size, 32),
        width=pick(args.width, 8 if q else None),
        device=args.device, precision=args.precision, memory_format=args.memory_format,
        clock=args.clock, repeats=pick(args.repeats, 3 if q else 15), number=args.number,
        warmup=pick(args.warmup, 1 if q else 10 if cuda else 2),
        budget_s=args.budget if args.budget and args.budget > 0 else None, seed=args.seed,
        compile=args.compile, compile_mode=args.compile_mode, log=log,
    )


def run(args, argv: Sequence[str]) -> int:
    """Run ``poolbench-bench overhead`` with parsed ``args`` (``argv`` is recorded)."""
    cfg = config_from_args(args)
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    with options.num_threads(threads):  # the report records the thread count
        try:
            rows = run_overhead(cfg)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        print_report(rows)
        say_written(write_outputs(rows, args.out, command_line(argv)))
    return 0
