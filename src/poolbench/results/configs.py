"""Comparing run configs: flatten a resolved config, drop the keys that do not change what a
run computes, and name the keys whose values differ among runs (the data report's "mixed
configs"); :func:`same` is the one equality of config values (numbers within rounding)."""

from __future__ import annotations

import math
from typing import Any, Iterable

from ..rundir import IGNORED_CONFIG_KEYS


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are kept as values)."""
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _ignored(key: str, ignored: Iterable[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in ignored)


def comparable_config(config: dict | None, ignored: Iterable[str] = IGNORED_CONFIG_KEYS) -> dict:
    """The flattened config minus the keys that do not change what a run computes."""
    if not config:
        return {}
    return {k: v for k, v in flatten(config).items() if not _ignored(k, ignored)}


def same(a, b) -> bool:
    """Config values are the same: numbers (not bools) within rounding, others by ``==``."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def config_differences(configs: list[dict]) -> dict[str, list]:
    """Keys whose values differ among ``configs`` (already flattened), with the values seen."""
    keys = sorted(set().union(*configs)) if configs else []
    missing = object()
    diffs = {}
    for k in keys:
        vals = [c.get(k, missing) for c in configs]
        first = vals[0]
        if any(v is missing for v in vals) or not all(same(first, v) for v in vals[1:]):
            seen = []
            for v in vals:
                v = "<absent>" if v is missing else v
                if not any(same(v, s) for s in seen):
                    seen.append(v)
            diffs[k] = seen
    return diffs
