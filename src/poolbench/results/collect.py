"""Collect finished runs from their run directories into one :class:`~.runs.Collection`.

A run directory (see conf/train.yaml) holds ``results.json`` (the unit of truth),
``config.json`` (written when it starts), ``metrics.csv`` (per-epoch logs) and
``test_predictions.npz``. :func:`find_run_dirs` finds them under an outputs directory,
:func:`read_run_dir` reads one, :func:`collect_files` reads them all, and
:func:`load_predictions` reads a run's saved test predictions for the image-level tests.
The same runs from W&B: :mod:`~poolbench.results.wandb_source`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..rundir import (
    CONFIG, LAST_CKPT, METRICS, PREDICTIONS, RESULTS, RUN_DIR_NAME,
    identity_from_config, identity_from_path, run_status,
)
from ..utils import read_json
from .runs import Collection, build_collection, epoch_rows, run_row, status_counts

__all__ = ["collect_files", "find_run_dirs", "load_predictions", "read_metrics_csv",
           "read_run_dir"]


def find_run_dirs(outputs: Path) -> list[Path]:
    """Every run directory under ``outputs``: those holding a results.json, a checkpoint or
    a config.json, or named ``seed=<s>[-<hash>]``."""
    outputs = Path(outputs)
    found = set()
    for pattern in (RESULTS, LAST_CKPT, CONFIG):
        for p in outputs.rglob(pattern):
            if "report" in p.relative_to(outputs).parts[:-1] and pattern == CONFIG:
                continue
            if pattern == CONFIG and not RUN_DIR_NAME.match(p.parent.name):
                continue
            found.add(p.parent)
    for p in outputs.rglob("seed=*"):
        if p.is_dir() and RUN_DIR_NAME.match(p.name):
            found.add(p)
    return sorted(found)


def collect_files(outputs: str | Path, log: Callable[[str], None] | None = None) -> Collection:
    """Read every run under ``outputs`` (any depth: the whole outputs/ or one experiment).

    A run directory with a results.json contributes its results; one with ``last.ckpt`` but
    no results.json is ``interrupted``; one with neither is ``incomplete`` (started, or
    killed before its first checkpoint). Its identity comes from its config.json (written
    when the run starts) or, failing that, from its path.
    """
    log = log or (lambda _msg: None)
    outputs = Path(outputs)
    if not outputs.is_dir():
        raise FileNotFoundError(f"outputs directory {str(outputs)!r} does not exist")
    run_dirs = find_run_dirs(outputs)
    log(f"collecting {len(run_dirs)} run director{'y' if len(run_dirs) == 1 else 'ies'}"
        f" under {outputs}")
    warnings: list[str] = []
    coll = build_collection(_read_all(outputs, run_dirs, warnings, log), f"files:{outputs}",
                            warnings)
    log(f"collected {len(coll.runs)} runs ({status_counts(coll.runs)})")
    return coll


def _read_all(outputs: Path, run_dirs: list[Path], warnings: list[str], log):
    """(row, per-epoch rows) of every run directory in ``run_dirs``, a progress line every 200."""
    for i, run_dir in enumerate(run_dirs, 1):
        run_id = str(run_dir.relative_to(outputs)) if run_dir != outputs else run_dir.name
        row, epochs = read_run_dir(run_dir, run_id, warnings)
        if row is not None:
            yield row, epochs
        if i % 200 == 0:
            log(f"  read {i}/{len(run_dirs)}")


def read_run_dir(run_dir: Path, run_id: str, warnings: list[str]
                 ) -> tuple[dict | None, pd.DataFrame | None]:
    """(row of :func:`~.runs.run_row`, per-epoch rows or None) of one run directory; (None,
    None) and a line in ``warnings`` when it is not one."""
    results = read_json(run_dir / RESULTS)
    if results is None:
        if (run_dir / RESULTS).exists():
            warnings.append(f"{run_id}: results.json is unreadable")
        cfg = read_json(run_dir / CONFIG)
        ident = identity_from_config(cfg) or identity_from_path(run_dir)
        if not ident:
            warnings.append(f"{run_id}: not a run directory (no results.json, no config)")
            return None, None
        results = {**ident, "status": run_status(run_dir, {}), "run_dir": str(run_dir),
                   "config": cfg}
    elif not results.get("config"):
        # A failed run's results.json has no config; config.json (written at start) has.
        results = {**results, "config": read_json(run_dir / CONFIG)}
    epochs = read_metrics_csv(run_dir / METRICS) if (run_dir / METRICS).exists() else None
    preds = run_dir / PREDICTIONS
    return run_row(results, run_id, epochs, str(preds) if preds.exists() else None), epochs


def read_metrics_csv(path: Path) -> pd.DataFrame:
    """One row per epoch from a run's metrics.csv (empty if it is unreadable)."""
    try:
        return epoch_rows(pd.read_csv(path))
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["epoch"])


def load_predictions(path: str | None, which: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(predicted class, label) per test image of ``which`` weights, or None if absent."""
    if not isinstance(path, str) or not path:
        return None
    try:
        with np.load(path) as z:
            if which not in z or "labels" not in z:
                return None
            return np.asarray(z[which]), np.asarray(z["labels"])
    except (OSError, ValueError):
        return None
