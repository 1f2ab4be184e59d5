"""The time model of ``poolbench-bench gpu-hours`` (step 3): hours per run, and the result.

Either *measured*: ``--step-times`` names ``overhead.csv`` files written by
``poolbench-bench overhead`` on the GPU (:func:`load_step_times`, :func:`match_step_times`),
and a run's training time is its training steps times the measured step time of its
(model, method, image size, width, batch); evaluation time is that step time per image
scaled by eval FLOPs / training FLOPs (operator counts are then informational only)
(:func:`measured_hours`). Or an *estimate* (:func:`estimate_hours`): eager PyTorch enqueues
kernels asynchronously, so a step takes max(GPU time, host time): GPU time = FLOPs /
(peak FLOP/s x MFU), peak 989 TFLOPS (H100 SXM, dense FP16/BF16 tensor cores) and MFU
(model FLOPs utilisation) 0.25 by default; host time = kernel-launching operators x
``--op-us`` microseconds of host time per operator (Python, dispatcher, autograd and the
CUDA launch), 8 by default. Training steps use the training counts at ``data.batch_size``;
evaluation steps (ceil(images / ``data.eval_batch_size``) per pass) the evaluation counts at
that batch. The range shown alongside combines the extremes: MFU 0.40 with 4 us per
operator, and MFU 0.10 with 16 us.

:func:`gpu_hours` puts the steps together (plan, count, time) into a :class:`GpuHours`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...models import model_options
from ...pooling import pool_hparams as default_pool_hparams
from .count import ModelCost, count_all
from .plan import ModelKey, RunPlan, freeze, plan_runs

DEFAULT_PEAK_TFLOPS = 989.0  # H100 SXM: dense FP16/BF16 tensor-core peak (1979 is with sparsity)
DEFAULT_GPU = "one H100 SXM"
DEFAULT_MFU = 0.25
MFU_RANGE = (0.10, 0.40)  # the sensitivity the report always shows
# Host time per kernel-launching ATen operator of an eager PyTorch step on the GPU (Python,
# dispatcher, autograd bookkeeping, caching allocator and cudaLaunchKernel). An assumption,
# not a measurement: a few to ~25 us per op is the usual order for eager PyTorch on a fast
# host; the range is shown as MFU's is.
DEFAULT_OP_US = 8.0
OP_US_RANGE = (4.0, 16.0)


# ----------------------------------------------------------------------------- measured step times

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


def overhead_out(batch: int, size: int, width: int) -> str:
    """Where the suggested ``poolbench-bench overhead`` commands write (one per setting)."""
    return f"outputs/bench/overhead_b{batch}_s{size}" + (f"_w{width}" if width != 64 else "")


def overhead_command(batch: int, size: int, width: int, models=(), methods=()) -> str:
    return (f"poolbench-bench overhead --device cuda --batch {batch} --image-size {size}"
            + (f" --width {width}" if width != 64 else "")
            + (f" --models {' '.join(models)}" if models else "")
            + (f" --methods {' '.join(methods)}" if methods else "")
            + f" --out {overhead_out(batch, size, width)}")


def _measure_command(model_methods: dict, batch: int, size: int, width: int) -> str:
    return overhead_command(batch, size, width, sorted({m for m, _ in model_methods}),
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
                 if k != "width" and freeze(defaults.get(k)) != v}
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
    check_estimate_args(peak_tflops, mfu, op_us)
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


def check_estimate_args(peak_tflops: float, mfu: float, op_us: float = DEFAULT_OP_US
                        ) -> None:
    """Raise ``ValueError`` naming the flag and the value for an MFU outside (0, 1], a
    peak that is not a positive number or a negative host time per operator."""
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
    check_estimate_args(peak_tflops, mfu, op_us)
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
        freeze(default_pool_hparams(p.pool).get(k)) != v for k, v in p.key.pool_hparams)]
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

