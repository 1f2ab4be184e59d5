"""``poolbench-bench gpu-hours EXPERIMENT [OVERRIDES ...]``: its arguments and its run."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ...grid import experiments
from .estimate import (
    DEFAULT_MFU, DEFAULT_OP_US, DEFAULT_PEAK_TFLOPS, MFU_RANGE, OP_US_RANGE,
    check_estimate_args, gpu_hours,
)
from .report import print_report, write_outputs

DEFAULT_OUT = Path("outputs/bench/gpu_hours")


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
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"directory for gpu_hours.csv and gpu_hours.md (default: {DEFAULT_OUT})")
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
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (ValueError, HydraException) as exc:
        error(str(exc))
    print_report(result)
    command = "poolbench-bench " + " ".join(shlex.quote(a) for a in argv)
    csv_path, md_path = write_outputs(result, args.out, command)
    print(f"\nwrote {csv_path} and {md_path}")
    return 0
