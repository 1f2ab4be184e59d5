#!/usr/bin/env python
"""Training-step overhead benchmark: ``poolbench-bench overhead`` under another name.

    python scripts/bench_overhead.py --quick
    python scripts/bench_overhead.py --batch 32 --threads 1 --models vgg16

Every argument is passed on to ``poolbench-bench overhead`` (see ``--help``).
"""

import sys
from pathlib import Path

try:
    from poolbench.bench.cli import main
except ImportError:  # not installed: run from the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from poolbench.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(["overhead", *sys.argv[1:]]))
