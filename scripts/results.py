#!/usr/bin/env python
"""Thin entry point: same as the `poolbench-results` console script.

    python scripts/results.py outputs/<experiment> [--which best_val] [--seeds 0,1,2]
"""

import sys

from poolbench.results.cli import main

if __name__ == "__main__":
    sys.exit(main())
