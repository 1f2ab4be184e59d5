"""One training step timed per pooling method: the pieces ``poolbench-bench overhead`` and
its ``--compile`` variant (:mod:`.overhead_compile`) share: the configuration, the models
with their fixed batch, the stepper with its clocks, warm-up, round-robin timing and a
method's row. :mod:`.overhead` runs and reports them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from ..models import build_model, cpu_channels_last_hazard, model_summary
from ..pooling import find_pooling
from .report import refusal
from .timing import fit_repeats, median_ratio, quantile, ratios, rotated

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
    compile: bool = False  # also time every method torch.compile'd (.overhead_compile)
    compile_mode: str = "default"
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
