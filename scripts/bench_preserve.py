#!/usr/bin/env python
"""Feature-preservation benchmark: ``poolbench-bench preserve`` under another name.

    python scripts/bench_preserve.py --quick
    python scripts/bench_preserve.py --resize nearest --methods max avg softpool

Every argument is passed on to ``poolbench-bench preserve`` (see ``--help``).
"""

import sys
from pathlib import Path

try:
    from poolbench.bench.cli import main
except ImportError:  # not installed: run from the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from poolbench.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(["preserve", *sys.argv[1:]]))
