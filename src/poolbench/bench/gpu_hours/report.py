"""The report of ``poolbench-bench gpu-hours``: Markdown, terminal text and CSV columns.

Formats a :class:`~.estimate.GpuHours`: the headline, how every number was derived (one
paragraph each), a table per dataset and model, the methods whose hours differ, and the
commands that would replace an estimate with measured step times. It reads the time model
(:mod:`.estimate`); the time model never reads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..report import (
    environment, markdown_head, md_table, text_table, write_csv_and_markdown,
)
from .count import FLOP_BATCH
from .estimate import (
    DEFAULT_GPU, DEFAULT_PEAK_TFLOPS, MFU_RANGE, OP_US_RANGE, GpuHours, overhead_command,
    overhead_out, range_settings,
)

NOTICEABLE = 0.01  # per-method lines for methods whose hours per run differ by >= 1%
ESTIMATE = "ESTIMATE (no GPU measurement)"

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


def _runs_paragraph(result: GpuHours) -> str:
    return ("Runs: the sweep `poolbench-train -m experiment=" + result.experiment
            + (" " + " ".join(result.overrides) if result.overrides else "")
            + "` launches, each config composed with Hydra. A run trains epochs x "
            "floor(train images / batch) steps (the training loader drops the last partial "
            "batch; trainer.limit_train_batches and max_steps applied as Lightning does), "
            "evaluates the validation split every check_val_every_n_epoch epochs and the test "
            "set twice at the end (final weights and best-validation checkpoint), "
            "ceil(images / eval batch) steps per pass.")


def _flops_paragraph() -> str:
    return ("FLOPs: counted with `torch.utils.flop_counter.FlopCounterMode` on CPU, once per "
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


def _model_paragraph(result: GpuHours) -> str:
    """Estimate mode: the time model, max(GPU time, host time) per step."""
    peak_note = ("the H100 SXM's dense FP16/BF16 tensor-core peak; the recipe trains in "
                 "16-mixed" if result.peak_tflops == DEFAULT_PEAK_TFLOPS else
                 f"--peak-tflops; the default {DEFAULT_PEAK_TFLOPS:g} is the H100 SXM's "
                 "dense FP16/BF16 tensor-core peak")
    lo_h, hi_h = map(_hours, result.total_range)
    ebs = _span((r["eval_batch_size"] for r in result.rows), _int)
    return (
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
        f"two assumptions' ends together: {_range_label()}.")


def _assumptions_paragraph(result: GpuHours) -> str:
    return (
        f"Assumptions. {result.op_us:g} us of host time per kernel-launching operator "
        f"(range {OP_US_RANGE[0]:g}-{OP_US_RANGE[1]:g} us, `--op-us`): not measured here "
        "(no GPU). Eager PyTorch's host cost per operator on a fast host is commonly put "
        "at 5-10 us with the CUDA launch (Python and the binding about 1-2 us, dispatcher "
        "and autograd bookkeeping 1-3 us, the caching allocator and cudaLaunchKernel "
        "2-4 us; backward operators, run by the C++ autograd engine, skip the Python "
        "part), more on a slow or busy host. MFU now stands for the GPU side only: how "
        "well the kernels use the tensor cores, with the uncounted elementwise work "
        "(pooling arithmetic, batch norm, activations, optimizer) inside it; range "
        f"{min(MFU_RANGE):.2f}-{max(MFU_RANGE):.2f} (`--mfu`).")


LEFT_OUT = (
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
    "changes little.")


def _step_terms_paragraph(result: GpuHours) -> str:
    """Estimate mode: the two terms of a step here, and the total without the host term."""
    rows = result.rows
    return (
        f"Here a training step's GPU time is "
        f"{_span((r['gpu_ms'] for r in rows), _ms)} ms and its host time "
        f"{_span((r['host_ms'] for r in rows), _ms)} ms: {result.host_bound_runs} of "
        f"{len(rows)} runs are host-bound. A full evaluation step takes GPU "
        f"{_span((r['eval_gpu_ms'] for r in rows), _ms)} ms, host "
        f"{_span((r['eval_host_ms'] for r in rows), _ms)} ms, host-bound in "
        f"{sum(r['eval_bound'] == 'host' for r in rows)} of {len(rows)} runs. Without "
        "the host term (FLOPs / (peak x MFU) alone, `--op-us 0`) the "
        f"total would be {_hours(result.total_gpu_only)} h. Measured step times settle "
        "it (how: below).")


def _measured_paragraph(result: GpuHours) -> str:
    src = ", ".join(f"`{s}`" for s in result.step_sources)
    on = ("; measured on " + "; ".join(result.measured_on)) if result.measured_on else ""
    return (
        f"**MEASURED step times** from {src}{on}: hours = training steps x the measured step "
        "time (forward, backward and optimizer step at the run's batch size, "
        "`poolbench-bench overhead`) of the run's model, method, image size and width; "
        "evaluation time = evaluated images x (step time / batch) x (evaluation FLOPs / "
        "training FLOPs per image), i.e. the measured step time scaled by the counted FLOPs. "
        "The operator counts (`kernel ops/step`) are for information only.")


def derivation(result: GpuHours) -> list[str]:
    """How the numbers were derived, one paragraph per item."""
    if result.mode == "estimate":
        return [_model_paragraph(result), _assumptions_paragraph(result), _counting(result),
                LEFT_OUT, _step_terms_paragraph(result), _runs_paragraph(result),
                _flops_paragraph(), measure_hint(result)]
    return [_measured_paragraph(result), _runs_paragraph(result), _flops_paragraph(),
            _counting(result)]


def measure_hint(result: GpuHours) -> str:
    """How to replace the estimate with measured step times: the overhead commands it needs."""
    settings = sorted({(int(r["batch_size"]), int(r["image_size"]), int(r["width"]))
                       for r in result.rows})
    cmds = [f"`{overhead_command(*s)}`" for s in settings]
    csvs = [f"{overhead_out(*s)}/overhead.csv" for s in settings]
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
    parts = markdown_head(title, command, env)
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

