"""Prepare and inspect the datasets: ``python -m poolbench.data ROOT [--download] [--stats]``.

Run it once before a sweep, e.g. on a cluster's login node (compute nodes often have no
internet): it downloads what is missing (with ``--download``), decodes Tiny ImageNet into
its cache, and prints what is there, so that the jobs only read.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .datasets import DATASETS, channel_stats, load_dataset
from .download import DatasetFormatError, DatasetNotFoundError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m poolbench.data", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="the data directory (data.root)")
    p.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    p.add_argument("--download", action="store_true", help="download what is missing")
    p.add_argument("--stats", action="store_true",
                   help="recompute the per-channel mean/std of the training images and compare "
                        "them with the constants used for normalisation")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    status = 0
    for name in args.datasets:
        spec = DATASETS[name]
        start = time.perf_counter()
        try:
            d = load_dataset(name, args.root, download=args.download)
        except (DatasetNotFoundError, DatasetFormatError) as e:
            print(f"{name}: {e}", file=sys.stderr)
            status = 1
            continue
        n_train, n_test = len(d["train_labels"]), len(d["test_labels"])
        print(f"{name}: {n_train} train + {n_test} test images of {spec.image_size}x"
              f"{spec.image_size}, {len(d['classes'])} classes "
              f"({time.perf_counter() - start:.1f} s)")
        if (n_train, n_test) != (spec.train_size, spec.test_size):
            print(f"  note: the official set has {spec.train_size} + {spec.test_size} "
                  "(fixture or partial data?)")
        if args.stats:
            mean, std = channel_stats(d["train_images"])
            fmt = lambda v: "(" + ", ".join(f"{x:.4f}" for x in v) + ")"  # noqa: E731
            print(f"  mean {fmt(mean)} (constant {fmt(spec.mean)})")
            print(f"  std  {fmt(std)} (constant {fmt(spec.std)})")
    return status


if __name__ == "__main__":
    sys.exit(main())
