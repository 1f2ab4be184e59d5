"""``poolbench-bench``: benchmarks of the pooling layers.

    poolbench-bench latency [--shapes S ...] [--device cpu|cuda|auto]
                            [--memory-format contiguous|channels_last|both]
                            [--methods M ...] [--repeats N] [--quick] [--out DIR]
                            [--number N] [--warmup N] [--threads N] [--budget SECONDS]
    poolbench-bench gpu-hours EXPERIMENT [HYDRA OVERRIDES ...] [--step-times CSV ...]
                              [--peak-tflops 989] [--mfu 0.25] [--out DIR]

Each subcommand lives in its own module and registers itself in :data:`SUBCOMMANDS`
(``add_arguments(parser)`` and ``run(args, argv) -> int``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from ..pooling import available_pools
from . import launch, overhead, preserve
from .gpu_hours import cli as gpu_hours


def _add_latency_arguments(p: argparse.ArgumentParser) -> None:
    from .latency import DEFAULT_SHAPES

    p.add_argument(
        "--shapes", nargs="+", metavar="SHAPE",
        help="input shapes NxCxHxW, optionally with the pooling geometry as :K/S/P "
             "(default: VGG16-on-CIFAR shapes at batch 128 with 2x2/2, and the ResNet stem "
             f"128x64x112x112:3/2/1; that is {' '.join(_shape_arg(s) for s in DEFAULT_SHAPES)})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="device (default: cuda if available, else cpu)")
    p.add_argument("--memory-format", default="both",
                   choices=("contiguous", "channels_last", "both"),
                   help="memory format of the input and output gradient (default: both)")
    p.add_argument("--methods", nargs="+", metavar="METHOD", choices=available_pools(),
                   help="pooling methods (default: all registered methods)")
    p.add_argument("--repeats", type=int, default=None,
                   help="round-robin repeats per shape (default 15, 5 with --quick); on CPU "
                        "shapes whose repeats would exceed --budget get fewer (at least 3)")
    p.add_argument("--number", type=int, default=None, metavar="N",
                   help="iterations averaged per sample (default: enough for the baseline's "
                        "sample to take 10 ms, at most 50)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="warm-up iterations per method before timing (default 2, 1 with --quick)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch.set_num_threads(N) for the run (default: PyTorch's default; "
                        "1 gives steadier numbers on a busy machine)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="time budget for the repeats of one shape and memory format "
                        "(default: 120 s on CPU, 8 s with --quick, none on CUDA; 0 disables)")
    p.add_argument("--quick", action="store_true",
                   help="batch 32 and two shapes (64x32x32 and 512x4x4) unless --shapes is "
                        "given, at most 5 repeats and 8 s per shape and memory format, one "
                        "warm-up: a smoke test of under a minute on a small CPU")
    p.add_argument("--out", type=Path, default=Path("outputs/bench/latency"),
                   help="directory for latency.csv and latency.md "
                        "(default: outputs/bench/latency)")


def _shape_arg(spec) -> str:
    s = "x".join(map(str, spec.shape))
    if (spec.kernel, spec.stride_, spec.padding) != (2, 2, 0):
        s += f":{spec.kernel}/{spec.stride_}/{spec.padding}"
    return s


def _run_latency(args: argparse.Namespace, argv: list[str]) -> int:
    from . import latency as lat

    device = lat.resolve_device(args.device)
    if args.shapes:
        shapes = [lat.parse_shape(s) for s in args.shapes]
    else:
        shapes = list(lat.QUICK_SHAPES if args.quick else lat.DEFAULT_SHAPES)
    repeats = args.repeats if args.repeats is not None else (5 if args.quick else 15)
    if repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.number is not None and args.number < 1:
        raise SystemExit("--number must be >= 1")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if warmup < 1:
        raise SystemExit("--warmup must be >= 1")
    budget = args.budget
    if budget is None:
        budget = None if device.type == "cuda" else (8.0 if args.quick else 120.0)
    elif budget <= 0:
        budget = None
    formats = (["contiguous", "channels_last"] if args.memory_format == "both"
               else [args.memory_format])
    cfg = lat.LatencyConfig(
        shapes=shapes, methods=args.methods, device=str(device), memory_formats=formats,
        repeats=repeats, min_repeats=min(3, repeats), budget_s=budget,
        warmup=warmup, number=args.number,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    rows = lat.run_latency(cfg)
    lat.print_report(rows)
    command = "poolbench-bench " + " ".join(shlex.quote(a) for a in argv)
    csv_path, md_path = lat.write_outputs(rows, args.out, command)
    print(f"\nwrote {csv_path} and {md_path}")
    return 0


SUBCOMMANDS = {
    "latency": (
        "time every pooling method relative to native max pooling",
        _add_latency_arguments, _run_latency,
    ),
    "preserve": (
        "SSIM and PSNR of real photographs pooled with every method and resized back",
        preserve.add_arguments, preserve.run,
    ),
    "overhead": (
        "training-step time of VGG16 and ResNet18 with every method relative to max pooling",
        overhead.add_arguments, overhead.run,
    ),
    "launch": (
        "poolbench-train's launch overhead: command to first training step, and a skipped run",
        launch.add_arguments, launch.run,
    ),
    "gpu-hours": (
        "GPU-hours of an experiment grid (e.g. paper_grid on one H100), from measured step "
        "times or estimated from counted FLOPs and operators",
        gpu_hours.add_arguments, gpu_hours.run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolbench-bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, _) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return SUBCOMMANDS[args.command][2](args, argv)


if __name__ == "__main__":
    sys.exit(main())
