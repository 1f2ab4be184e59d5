"""Interleaved timing, shared by the benchmarks that time methods round-robin against a
baseline (``latency``, ``overhead``): how many repeats fit a time budget, the order of
each repeat, and ratios to the baseline measured in the same repeat.

Every repeat runs every method once, in an order rotated from repeat to repeat
(:func:`rotated`), so slow drift of the machine (frequency scaling, other processes) hits
every method alike; a method's ratio is the median over repeats of its time divided by the
baseline's time in the same repeat (:func:`median_ratio`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def fit_repeats(repeats: int, min_repeats: int, budget_s: float | None, round_s: float) -> int:
    """``repeats``, lowered so that rounds of ``round_s`` seconds fit ``budget_s`` (None: no
    budget), but never below ``min(min_repeats, repeats)``."""
    if budget_s is None:
        return repeats
    fit = int(budget_s // max(round_s, 1e-9))
    return max(min(min_repeats, repeats), min(repeats, fit))


def rotated(items: Sequence[T], r: int) -> list[T]:
    """The order of repeat ``r``: ``items`` rotated left by ``r`` places."""
    shift = r % len(items)
    return list(items[shift:]) + list(items[:shift])


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-repeat ratios ``num[i] / den[i]``."""
    return [a / b for a, b in zip(num, den)]


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repeats of ``num[i] / den[i]``."""
    return statistics.median(ratios(num, den))


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, linearly interpolated between order statistics."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
