"""Benchmarks of the pooling layers (``poolbench-bench``).

Subcommands (see :mod:`poolbench.bench.cli`):

``latency``
    forward, backward and forward+backward time of every pooling method relative to native
    ``F.max_pool2d`` on the same tensor, measured round-robin in one run, plus the memory
    each method keeps for backward and its learnable parameter count
    (:mod:`poolbench.bench.latency`).
"""

from .latency import LatencyConfig, ShapeSpec, parse_shape, run_latency

__all__ = ["LatencyConfig", "ShapeSpec", "parse_shape", "run_latency"]
