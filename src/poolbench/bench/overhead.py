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
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from ..models import MODELS, build_model, cpu_channels_last_hazard, model_summary
from ..pooling import available_pools, find_pooling
from . import options
from .report import (
    command_line, device_line, environment, error_cell, log, markdown_head, md_table,
    refusal, resolve_device, say_written, text_table, write_csv_and_markdown,
)
from .timing import fit_repeats, median_ratio, quantile, ratios, rotated

HELP = "training-step time of VGG16 and ResNet18 with every method relative to max pooling"

BASELINE = "max"
PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed")
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
RECIPE = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False)  # conf/train.yaml
NUM_CLASSES = 100

# The targets, per training step relative to max pooling. The 5% group: the
# parameter-free methods that blend max pooling with a mean (T-Max-Avg, its soft version,
# mixed pooling) and SoftPool. ``None`` as the method list means every method.
TARGETS: tuple[tuple[str, tuple[str, ...] | None, float], ...] = (
    ("vgg16", ("tmaxavg", "soft_tmaxavg", "mixed", "softpool"), 1.05),
    ("vgg16", None, 1.10),
    ("resnet18", None, 1.10),
)


@dataclass
class OverheadConfig:
    models: Sequence[str] = ("vgg16", "resnet18")
    methods: Sequence[str] | None = None  # None: every registered method (max always included)
    batch: int = 128
    image_size: int = 32
    width: int | None = None  # None: the models' real width (64)
    device: str = "auto"
    precision: str = "auto"  # auto: 16-mixed on CUDA, 32 elsewhere (as the trainer)
    memory_format: str = "channels_last"
    clock: str = "auto"  # auto: CUDA events on CUDA, wall (perf_counter) on CPU; or "cpu"
    repeats: int = 15
    min_repeats: int = 3
    number: int = 1  # training steps per sample
    warmup: int = 2  # untimed steps per method before the repeats
    budget_s: float | None = None  # per model: fewer repeats (not below min_repeats) to fit
    seed: int = 0
    log: Callable[[str], None] | None = None
    extra: dict = field(default_factory=dict)




def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; choose one of {list(PRECISIONS)}")
    if precision == "auto":
        return "16-mixed" if device.type == "cuda" else "32"
    if precision == "16-mixed" and device.type != "cuda":
        raise ValueError("precision 16-mixed needs CUDA (use 32 or bf16-mixed on CPU)")
    return precision


CLOCKS = ("auto", "wall", "cpu")


def resolve_clock(clock: str, device: torch.device) -> str:
    """The clock the ratios use: ``"cuda"`` (events) on CUDA; ``"wall"`` or ``"cpu"`` on CPU."""
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r} is not valid; choose one of {list(CLOCKS)}")
    if device.type == "cuda":
        if clock == "cpu":
            raise ValueError("clock 'cpu' (process CPU time) cannot time CUDA work; use auto")
        return "cuda"
    return "wall" if clock == "auto" else clock


@dataclass
class _Entry:
    method: str
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    summary: dict
    error: str | None = None
    # clock -> one (fwd, bwd, opt) seconds triple per repeat
    times: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    loss: torch.Tensor | None = None
    peak_mib: float = math.nan

    def phase(self, clock: str, i: int) -> list[float]:
        """Per-repeat seconds of phase ``i`` (0 fwd, 1 bwd, 2 opt) on ``clock``."""
        return [t[i] for t in self.times[clock]]

    def steps(self, clock: str) -> list[float]:
        return [sum(t) for t in self.times[clock]]


class _Stepper:
    """Runs and times training steps of one entry on the fixed batch."""

    def __init__(self, device: torch.device, precision: str, x, y):
        self.device, self.x, self.y = device, x, y
        self.cuda = device.type == "cuda"
        self.amp_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _fwd(self, e: _Entry):
        with self._autocast():
            return F.cross_entropy(e.model(self.x), self.y)

    def _bwd(self, e: _Entry, loss):
        (e.scaler.scale(loss) if e.scaler is not None else loss).backward()

    def _opt(self, e: _Entry):
        if e.scaler is not None:
            e.scaler.step(e.opt)
            e.scaler.update()
        else:
            e.opt.step()
        e.opt.zero_grad(set_to_none=True)

    def run(self, e: _Entry, number: int) -> dict[str, tuple[float, float, float]]:
        """Mean (fwd, bwd, opt) seconds over ``number`` steps, per clock: ``"cuda"`` (events)
        on CUDA; ``"wall"`` (perf_counter) and ``"cpu"`` (process CPU time) elsewhere."""
        if self.cuda:
            events = []
            for _ in range(number):
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
                ev[0].record()
                loss = self._fwd(e)
                ev[1].record()
                self._bwd(e, loss)
                ev[2].record()
                self._opt(e)
                ev[3].record()
                events.append(ev)
            torch.cuda.synchronize()
            e.loss = loss.detach()
            parts = [sum(ev[i].elapsed_time(ev[i + 1]) for ev in events) / 1e3 / number
                     for i in range(3)]
            return {"cuda": (parts[0], parts[1], parts[2])}
        wall, cpu = [0.0] * 3, [0.0] * 3
        for _ in range(number):
            w0, c0 = time.perf_counter(), time.process_time()
            loss = self._fwd(e)
            w1, c1 = time.perf_counter(), time.process_time()
            self._bwd(e, loss)
            w2, c2 = time.perf_counter(), time.process_time()
            self._opt(e)
            w3, c3 = time.perf_counter(), time.process_time()
            for acc, t in ((wall, (w0, w1, w2, w3)), (cpu, (c0, c1, c2, c3))):
                for i in range(3):
                    acc[i] += t[i + 1] - t[i]
        e.loss = loss.detach()
        return {"wall": tuple(v / number for v in wall), "cpu": tuple(v / number for v in cpu)}

    def peak_mib(self, e: _Entry) -> float:
        if not self.cuda:
            return math.nan
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self.run(e, 1)
        return (torch.cuda.max_memory_allocated() - before) / 2**20


def _build_entry(model_name: str, method: str, cfg: OverheadConfig, device, precision,
                 mf) -> _Entry:
    torch.manual_seed(cfg.seed)
    kwargs = {} if cfg.width is None else {"width": cfg.width}
    model = build_model(model_name, NUM_CLASSES, pool=method, input_size=cfg.image_size,
                        **kwargs)
    hazard = cpu_channels_last_hazard(model)
    if hazard and device.type == "cpu" and mf == torch.channels_last:
        raise ValueError(f"{model_name} at --width {cfg.width}: {hazard}")
    model = model.to(device=device, memory_format=mf).train()
    opt = torch.optim.SGD(model.parameters(), **RECIPE)
    scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" else None
    summary = model_summary(model)
    summary["pool_layers"] = len(find_pooling(model))
    summary["method_pool_layers"] = len(find_pooling(model, method))
    return _Entry(method, model, opt, scaler, summary)


def _fixed_batch(cfg: OverheadConfig, device, mf) -> tuple[torch.Tensor, torch.Tensor]:
    """The one batch every step trains on: ``randn`` images and random labels, seeded."""
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, 3, cfg.image_size, cfg.image_size, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (cfg.batch,), generator=gen)
    return x.to(device).contiguous(memory_format=mf), y.to(device)


def _build_entries(model_name: str, methods: Sequence[str], cfg: OverheadConfig, device,
                   precision: str, mf, log) -> list[_Entry]:
    """One entry per method; one that refuses the model or fails to build keeps its reason."""
    entries: list[_Entry] = []
    t0 = time.perf_counter()
    for method in methods:
        try:
            entries.append(_build_entry(model_name, method, cfg, device, precision, mf))
        except Exception as exc:  # noqa: BLE001 - reported in the table, never hidden
            if isinstance(exc, ValueError):  # refuses this model and image size
                err = refusal(exc)
                log(f"  {method}: {err}")
            else:
                err = f"{type(exc).__name__}: {exc}"
                log(f"  {method}: could not build ({err})")
            entries.append(_Entry(method, None, None, None, {}, error=err))  # type: ignore[arg-type]
    log(f"  built {len(entries)} models in {time.perf_counter() - t0:.1f} s")
    return entries


def _warm_up(entries: Sequence[_Entry], stepper: _Stepper, warmup: int, clock: str,
             log) -> dict[str, float]:
    """Untimed steps of every built entry; its fastest step time (seconds) by method. An
    entry that fails keeps the error; its peak memory is measured here (CUDA)."""
    est: dict[str, float] = {}
    for e in entries:
        if e.error:
            continue
        try:
            est[e.method] = min(sum(stepper.run(e, 1)[clock]) for _ in range(warmup))
            e.peak_mib = stepper.peak_mib(e)
        except Exception as exc:  # noqa: BLE001
            e.error = f"{type(exc).__name__}: {exc}"
            log(f"  {e.method}: failed ({e.error})")
    return est


def _time_interleaved(live: Sequence[_Entry], stepper: _Stepper, number: int, repeats: int,
                      clock: str, log) -> None:
    """``repeats`` round-robin rounds of ``number`` steps of every live entry (the baseline
    first), in an order rotated every repeat; progress after about every fifth."""
    t_start = time.perf_counter()
    for r in range(repeats):
        for e in rotated(live, r):
            for c, t in stepper.run(e, number).items():
                e.times.setdefault(c, []).append(t)
        if r == 0 or (r + 1) % max(1, repeats // 5) == 0 or r + 1 == repeats:
            msg = f"  repeat {r + 1}/{repeats} ({time.perf_counter() - t_start:.0f} s)"
            log(msg + _slowest_so_far(live, clock))


def _slowest_so_far(live: Sequence[_Entry], clock: str) -> str:
    base = live[0].steps(clock)
    worst = max(live[1:], default=None, key=lambda e: median_ratio(e.steps(clock), base))
    if worst is None:
        return ""
    ratio = median_ratio(worst.steps(clock), base)
    return f": slowest so far {worst.method} x{ratio:.3f} ({clock} clock)"


def _bench_model(model_name: str, cfg: OverheadConfig, device, precision: str, clock: str,
                 methods: Sequence[str], log) -> list[dict]:
    """Rows of every method in ``model_name``: build, warm up, time interleaved."""
    mf = MEMORY_FORMATS[cfg.memory_format]
    stepper = _Stepper(device, precision, *_fixed_batch(cfg, device, mf))
    entries = _build_entries(model_name, methods, cfg, device, precision, mf, log)
    est = _warm_up(entries, stepper, cfg.warmup, clock, log)
    live = [e for e in entries if e.error is None]
    if not live or live[0].method != BASELINE:
        raise RuntimeError(f"the baseline ({BASELINE}) failed on {model_name}")
    round_s = cfg.number * sum(est[e.method] for e in live)
    repeats = fit_repeats(cfg.repeats, cfg.min_repeats, cfg.budget_s, round_s)
    log(f"  {len(live)} methods, {repeats} repeats x {cfg.number} step(s), "
        f"~{round_s:.1f} s per round, ~{round_s * repeats:.0f} s")
    _time_interleaved(live, stepper, cfg.number, repeats, clock, log)
    setting = dict(device=device.type, model=model_name, batch=cfg.batch,
                   image_size=cfg.image_size, width=cfg.width if cfg.width is not None else 64,
                   precision=precision, memory_format=cfg.memory_format, clock=clock,
                   repeats=repeats, number=cfg.number)
    return [_row(e, live[0], setting, clock) for e in entries]


def _row(e: _Entry, baseline: _Entry, setting: dict, clock: str) -> dict:
    """The row of one method: the setting, its parameters and, if it ran, its times."""
    row = dict(setting)
    row["method"] = e.method
    if e.summary:
        base_params = baseline.summary["params_total"]
        row.update(
            params_total=e.summary["params_total"],
            extra_params=e.summary["params_total"] - base_params,
            extra_params_pct=100.0 * (e.summary["params_total"] - base_params) / base_params,
            params_pooling=e.summary["params_pooling"],
            pool_layers=e.summary["pool_layers"],
            method_pool_layers=e.summary["method_pool_layers"])
    if e.error:
        return {**row, "error": e.error}
    return {**row, **_times(e, baseline, clock, setting["batch"])}


def _times(e: _Entry, baseline: _Entry, clock: str, batch: int) -> dict:
    """Medians of a timed entry's step and phases, and its ratios to the baseline's."""
    steps = e.steps(clock)
    step_ratios = ratios(steps, baseline.steps(clock))
    others = {f"step_ratio_{c}": median_ratio(e.steps(c), baseline.steps(c))
              for c in ("wall", "cpu") if c in e.times}  # both clocks of a CPU run
    loss = float(e.loss) if e.loss is not None else math.nan
    return {
        **others,
        "step_ms": 1e3 * statistics.median(steps),
        "fwd_ms": 1e3 * statistics.median(e.phase(clock, 0)),
        "bwd_ms": 1e3 * statistics.median(e.phase(clock, 1)),
        "opt_ms": 1e3 * statistics.median(e.phase(clock, 2)),
        "step_ratio": statistics.median(step_ratios),
        "step_ratio_q25": quantile(step_ratios, 0.25),
        "step_ratio_q75": quantile(step_ratios, 0.75),
        "fwd_ratio": median_ratio(e.phase(clock, 0), baseline.phase(clock, 0)),
        "bwd_ratio": median_ratio(e.phase(clock, 1), baseline.phase(clock, 1)),
        "img_per_s": batch / statistics.median(steps),
        "peak_mib": e.peak_mib,
        "final_loss": loss,
        "error": "" if math.isfinite(loss) else "non-finite loss",
    }


def run_overhead(cfg: OverheadConfig) -> list[dict]:
    """Run the benchmark; one row (dict) per model and method, max pooling first."""
    log = cfg.log or (lambda msg: None)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    clock = resolve_clock(cfg.clock, device)
    bad = sorted(set(cfg.models) - set(MODELS))
    if bad:
        raise ValueError(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    methods = list(available_pools() if cfg.methods is None else cfg.methods)
    bad = sorted(set(methods) - set(available_pools()))
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {available_pools()}")
    if cfg.memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format={cfg.memory_format!r} is not valid; choose one of "
                         f"{list(MEMORY_FORMATS)}")
    for name, value in (("batch", cfg.batch), ("image_size", cfg.image_size),
                        ("repeats", cfg.repeats), ("number", cfg.number),
                        ("warmup", cfg.warmup)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    methods = [BASELINE] + [m for m in dict.fromkeys(methods) if m != BASELINE]
    rows: list[dict] = []
    for model_name in cfg.models:
        log(f"{model_name} on {device.type}: batch {cfg.batch}, {cfg.image_size}x"
            f"{cfg.image_size}, width {cfg.width or 64}, precision {precision}, "
            f"{cfg.memory_format}, {torch.get_num_threads()} thread(s), {clock} clock")
        rows.extend(_bench_model(model_name, cfg, device, precision, clock, methods, log))
    return rows


# ----------------------------------------------------------------------------- reporting

CSV_COLUMNS = (
    "device", "model", "method", "batch", "image_size", "width", "precision", "memory_format",
    "clock", "params_total", "extra_params", "extra_params_pct", "params_pooling", "pool_layers",
    "method_pool_layers", "step_ms", "fwd_ms", "bwd_ms", "opt_ms", "step_ratio",
    "step_ratio_q25", "step_ratio_q75", "fwd_ratio", "bwd_ratio", "step_ratio_wall",
    "step_ratio_cpu", "img_per_s", "peak_mib",
    "final_loss", "repeats", "number", "error",
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
               and "step_ratio" in r]
        if methods is not None:
            sel = [r for r in sel if r["method"] in methods]
        for r in sel:
            out.append(dict(model=model, method=r["method"], limit=limit,
                            ratio=r["step_ratio"], q75=r["step_ratio_q75"],
                            met=r["step_ratio"] <= limit))
    return out


def _groups(rows):
    models = list(dict.fromkeys(r["model"] for r in rows))
    return [(m, [r for r in rows if r["model"] == m]) for m in models]


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
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS), metavar="MODEL",
                   help=f"models (default: {' '.join(MODELS)})")
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
        models=args.models or list(MODELS), methods=args.methods,
        batch=pick(args.batch, 4 if q else 128), image_size=pick(args.image_size, 32),
        width=pick(args.width, 8 if q else None),
        device=args.device, precision=args.precision, memory_format=args.memory_format,
        clock=args.clock, repeats=pick(args.repeats, 3 if q else 15), number=args.number,
        warmup=pick(args.warmup, 1 if q else 10 if cuda else 2),
        budget_s=args.budget if args.budget and args.budget > 0 else None, seed=args.seed,
        log=log,
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
