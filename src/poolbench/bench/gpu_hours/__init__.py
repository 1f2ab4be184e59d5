"""GPU-hours of an experiment grid: ``poolbench-bench gpu-hours EXPERIMENT [OVERRIDES ...]``.

What a user planning a sweep needs before launching it: how many GPU-hours the runs of
``poolbench-train -m experiment=<EXPERIMENT> [OVERRIDES]`` take on one GPU (an H100 by
default), one run after another. In four steps, a module each; each imports only the ones
above it:

1. :mod:`.plan`: the runs, composed from the grid as Hydra's sweeper launches them, and the
   steps, images and passes each one trains and evaluates.
2. :mod:`.count`: FLOPs per image (``FlopCounterMode``) and ATen operators per step
   (:class:`~.count.OpCounter`) of every distinct model, counted on CPU on the GPU's code
   path.
3. :mod:`.estimate`: the time model, hours per run from measured step times or estimated as
   max(GPU time, host time) per step; :func:`~.estimate.gpu_hours` runs steps 1-3.
4. :mod:`.report`: Markdown, terminal text and CSV of the result.

:mod:`.cli` holds the subcommand's arguments and its run.
"""

from .count import (
    FLOP_BATCH, NO_KERNEL_OPS, ModelCost, OpCounter, count_all, count_model, gpu_code_path,
    launches_kernel,
)
from .estimate import (
    DEFAULT_MFU, DEFAULT_OP_US, DEFAULT_PEAK_TFLOPS, MFU_RANGE, OP_US_RANGE, GpuHours,
    estimate_hours, gpu_hours, load_step_times, match_step_times, measured_hours,
    range_settings, run_seconds,
)
from .plan import ModelKey, RunPlan, cuda_precision, lightning_num_batches, plan_run, plan_runs
from .report import CSV_COLUMNS, derivation, headline, print_report, to_markdown, write_outputs

__all__ = [
    "CSV_COLUMNS", "DEFAULT_MFU", "DEFAULT_OP_US", "DEFAULT_PEAK_TFLOPS", "FLOP_BATCH",
    "MFU_RANGE", "NO_KERNEL_OPS", "OP_US_RANGE", "GpuHours", "ModelCost", "ModelKey",
    "OpCounter", "RunPlan", "count_all", "count_model", "cuda_precision", "derivation",
    "estimate_hours", "gpu_code_path", "gpu_hours", "headline", "launches_kernel",
    "lightning_num_batches", "load_step_times", "match_step_times", "measured_hours",
    "plan_run", "plan_runs", "print_report", "range_settings", "run_seconds", "to_markdown",
    "write_outputs",
]
