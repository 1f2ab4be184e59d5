"""Benchmarks: ``poolbench-bench SUBCOMMAND`` (:mod:`poolbench.bench.cli` registers them).

One module a subcommand, each defining its arguments (``add_arguments``) and its run:

``latency`` (:mod:`.latency`)
    forward, backward and forward+backward time of every pooling method relative to native
    ``F.max_pool2d`` on the same tensor, measured round-robin in one run, plus the memory
    each method keeps for backward and its learnable parameter count.
``preserve`` (:mod:`.preserve`)
    SSIM and PSNR of real photographs pooled with every method and resized back.
``overhead`` (:mod:`.overhead`)
    training-step time of VGG16 and ResNet18 with every method relative to max pooling.
``launch`` (:mod:`.startup`)
    start-up of ``poolbench-train``: command to first training step, and a skipped run.
``gpu-hours`` (:mod:`.gpu_hours`, a package: plan, count, estimate, report, cli)
    GPU-hours of an experiment grid, from measured step times or counted FLOPs and operators.
``data`` (:mod:`.data`)
    throughput of the data pipeline: the on-device fast path vs torchvision's DataLoader.

Shared by all: :mod:`.options` (the arguments several subcommands take, defined once),
:mod:`.timing` (interleaved round-robin timing: repeats, rotation, ratios) and
:mod:`.report` (environment, tables, the recorded command, CSV and Markdown files).
"""

from .latency import LatencyConfig, ShapeSpec, parse_shape, run_latency

__all__ = ["LatencyConfig", "ShapeSpec", "parse_shape", "run_latency"]
