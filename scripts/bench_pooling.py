#!/usr/bin/env python
"""Pooling latency benchmark: ``poolbench-bench latency`` under another name.

    python scripts/bench_pooling.py --quick
    python scripts/bench_pooling.py --memory-format contiguous --methods tmaxavg softpool

Every argument is passed on to ``poolbench-bench latency`` (see ``--help``).
"""

import sys
from pathlib import Path

try:
    from poolbench.bench.cli import main
except ImportError:  # not installed: run from the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from poolbench.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(["latency", *sys.argv[1:]]))
