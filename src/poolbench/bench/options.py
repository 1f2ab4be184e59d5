"""The arguments benchmark subcommands share, each defined once, and their checks.

A subcommand of ``poolbench-bench`` is a module with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args, argv) -> int`` (see :mod:`poolbench.bench.cli`).
Its ``add_arguments`` adds its own flags and, through the functions here, the ones several
benchmarks share: where it runs (``--device``, ``--threads``), what it times (``--methods``),
how long (``--repeats``, ``--number``, ``--warmup``, ``--budget``, ``--quick``), its seed
and where it writes (``--out``). The help text says what the flag means to that
subcommand (its defaults differ); the name, type and checks are the same everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from ..pooling import available_pools

DEVICES = ("auto", "cpu", "cuda")


def add_device(p: argparse.ArgumentParser, default: str = "auto", help: str | None = None
               ) -> None:
    """``--device auto|cpu|cuda`` (:func:`poolbench.bench.report.resolve_device` resolves it)."""
    p.add_argument("--device", default=default, choices=DEVICES,
                   help=help or "device (default: cuda if available, else cpu)")


def add_methods(p: argparse.ArgumentParser,
                help: str = "pooling methods (default: all registered methods)") -> None:
    """``--methods M [M ...]``, registered pooling methods only."""
    p.add_argument("--methods", nargs="+", metavar="METHOD", choices=available_pools(),
                   help=help)


def add_repeats(p: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    """``--repeats N``: timed rounds (a positive int; None: the subcommand's default)."""
    p.add_argument("--repeats", type=int, default=default, help=help)


def add_number(p: argparse.ArgumentParser, help: str, default: int | None = None,
               metavar: str | None = None) -> None:
    """``--number N``: iterations per timed sample."""
    p.add_argument("--number", type=int, default=default, metavar=metavar, help=help)


def add_warmup(p: argparse.ArgumentParser, help: str, default: int | None = None,
               metavar: str | None = None) -> None:
    """``--warmup N``: untimed iterations first."""
    p.add_argument("--warmup", type=int, default=default, metavar=metavar, help=help)


def add_budget(p: argparse.ArgumentParser, help: str) -> None:
    """``--budget SECONDS``: fewer repeats to fit a time budget."""
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS", help=help)


def add_threads(p: argparse.ArgumentParser, quick: int | None = None) -> None:
    """``--threads N``: ``torch.set_num_threads(N)`` for the run (:func:`num_threads`);
    ``quick``: the default with ``--quick``."""
    with_quick = f", {quick} with --quick" if quick is not None else ""
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"torch.set_num_threads(N) for the run (default: PyTorch's "
                        f"default{with_quick}; 1 gives steadier numbers on a busy machine)")


def add_seed(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=help)


def add_quick(p: argparse.ArgumentParser, help: str) -> None:
    """``--quick``: a smoke test of the subcommand, small and fast."""
    p.add_argument("--quick", action="store_true", help=help)


def add_out(p: argparse.ArgumentParser, stem: str, files: str | None = None) -> None:
    """``--out DIR`` (default ``outputs/bench/<stem>``) for ``files`` (default: ``<stem>.csv``
    and ``<stem>.md``, as :func:`poolbench.bench.report.write_csv_and_markdown` writes)."""
    default = Path("outputs/bench") / stem
    files = files or f"{stem}.csv and {stem}.md"
    p.add_argument("--out", type=Path, default=default,
                   help=f"directory for {files} (default: {default})")


def check_positive(**values: int | list[int] | None) -> None:
    """Exit with ``--<flag> must be >= 1, got <value>`` for the first value (or list with an
    element) below 1; None (the subcommand's default) passes."""
    for name, value in values.items():
        items = value if isinstance(value, list) else [value]
        if any(v is not None and v < 1 for v in items):
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {value}")


@contextlib.contextmanager
def num_threads(threads: int | None):
    """``torch.set_num_threads(threads)`` inside, the previous count restored after (the
    setting is process-wide); None leaves it as it is."""
    check_positive(threads=threads)
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)
