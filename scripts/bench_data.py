#!/usr/bin/env python
"""Data pipeline throughput: fast on-device path vs torchvision DataLoader.

    scripts/venv-run python scripts/bench_data.py [--workers 0 2] [--threads 1] ...

A thin entry point over ``poolbench.data.bench`` (see ``--help``).
"""

import sys

from poolbench.data.bench import main

if __name__ == "__main__":
    sys.exit(main())
