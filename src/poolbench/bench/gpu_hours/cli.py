"""``poolbench-bench gpu-hours EXPERIMENT [OVERRIDES ...]``: its arguments and its run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ...grid import experiments
from .. import options
from ..report import command_line, log, say_written
from .estimate import (
    DEFAULT_MFU, DEFAULT_OP_US, DEFAULT_PEAK_TFLOPS, MFU_RANGE, OP_US_RANGE,
    check_estimate_args, gpu_hours,
)
from .report import print_report, write_outputs

HELP = ("GPU-hours of an experiment grid (e.g. paper_grid on one H100), from measured step "
        "times or estimated from counted FLOPs and operators")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``poolbench-bench gpu-hours``."""
    p.add_argument("experiment", help="a config in conf/experiment/ (one of "
                                      f"{', '.join(experiments())})")
    p.add_argument("overrides", nargs="*",
                   help="Hydra overrides, as for poolbench-train (e.g. seed=0 "
                        "trainer.max_epochs=20 pool=max,softpool)")
    p.add_argument("--step-times", nargs="+", type=Path, default=None, metavar="CSV",
                   help="overhead.csv file(s) of `poolbench-bench overhead --device cuda`: use "
                        "their measured step times (default: estimate from FLOPs)")
    p.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS,
                   help=f"estimate mode: the GPU's peak TFLOPS (default {DEFAULT_PEAK_TFLOPS:g}, "
                        "H100 SXM dense FP16/BF16 tensor cores)")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                   help=f"estimate mode: model FLOPs utilisation in (0, 1] (default "
                        f"{DEFAULT_MFU}; the report also shows {MFU_RANGE[0]}-{MFU_RANGE[1]})")
    p.add_argument("--op-us", type=float, default=DEFAULT_OP_US,
                   help=f"estimate mode: host microseconds per kernel-launching operator "
                        f"(default {DEFAULT_OP_US:g}; the report also shows "
                        f"{OP_US_RANGE[0]:g}-{OP_US_RANGE[1]:g}; 0: FLOPs alone)")
    options.add_out(p, "gpu_hours")
    p.set_defaults(gpu_hours_parser=p)  # run() reports errors through it, as argparse does


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``poolbench-bench gpu-hours`` with parsed ``args`` (``argv`` is recorded)."""
    from hydra.errors import HydraException

    parser = getattr(args, "gpu_hours_parser", None)

    def error(msg: str):
        if parser is not None:
            parser.error(msg)  # exits with status 2 and the usage line
        raise SystemExit(msg)

    try:
        check_estimate_args(args.peak_tflops, args.mfu, args.op_us)
    except ValueError as exc:
        error(str(exc))
    try:
        result = gpu_hours(args.experiment, args.overrides, args.step_times,
                           peak_tflops=args.peak_tflops, mfu=args.mfu, op_us=args.op_us,
                           log=log)
    except (ValueError, HydraException) as exc:
        error(str(exc))
    print_report(result)
    say_written(write_outputs(result, args.out, command_line(argv)))
    return 0
