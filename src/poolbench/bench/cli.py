"""``poolbench-bench``: benchmarks of the pooling layers.

    poolbench-bench latency [--shapes S ...] [--methods M ...] [--quick] [--out DIR] ...
    poolbench-bench preserve [--images I ...] [--kernels K ...] [--quick] [--out DIR] ...
    poolbench-bench overhead [--models M ...] [--methods M ...] [--quick] [--out DIR] ...
    poolbench-bench launch [OVERRIDES ...] [--repeats N] [--out DIR] ...
    poolbench-bench gpu-hours EXPERIMENT [OVERRIDES ...] [--step-times CSV ...] [--out DIR]
    poolbench-bench data [--images N] [--workers N ...] [--threads N ...] [--device D] ...

Each subcommand is one module with ``HELP`` (one line), ``add_arguments(parser)``, which
defines its arguments (the shared ones through :mod:`poolbench.bench.options`), and
``run(args, argv) -> int``; this module only registers them in :data:`SUBCOMMANDS`. A new
subcommand is a new module and one line there.
"""

from __future__ import annotations

import argparse
import sys

from . import data, latency, overhead, preserve, startup
from .gpu_hours import cli as gpu_hours

# name -> the module of the subcommand, in the order ``--help`` lists them
SUBCOMMANDS = {
    "latency": latency,
    "preserve": preserve,
    "overhead": overhead,
    "launch": startup,  # measures start-up; the command keeps its name
    "gpu-hours": gpu_hours,
    "data": data,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolbench-bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return SUBCOMMANDS[args.command].run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
