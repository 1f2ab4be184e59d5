"""Collect runs from the W&B API instead of run directories (``--source wandb``).

poolbench-train pushes results.json's scalars into each run's summary and the resolved config
into its config; :func:`collect_wandb` reads them back into the same
:class:`~poolbench.results.runs.Collection` that :func:`~poolbench.results.collect.collect_files`
builds, with per-epoch rows from each run's history. ``wandb`` itself is imported only when
no ``api`` object is given, so nothing else in ``results/`` needs it installed; tests pass a
fake ``api`` with the few attributes read here (``runs()``, and per run ``summary``,
``config``, ``id``, ``state``, ``scan_history()``).
"""

from __future__ import annotations

import json
from typing import Callable, Iterable

import pandas as pd

from ..rundir import FAILED, INCOMPLETE, INTERRUPTED, identity_from_config
from .runs import Collection, build_collection, epoch_rows, run_row, status_counts

#: The status of a run whose summary has none (it did not finish: W&B's run state says why).
WANDB_STATE = {"running": INCOMPLETE, "pending": INCOMPLETE, "crashed": FAILED,
               "failed": FAILED, "killed": INTERRUPTED, "finished": INCOMPLETE}


def wandb_filters(experiment: str | None = None, tags: Iterable[str] = ()) -> dict | None:
    """Server-side W&B filters (MongoDB syntax) for an experiment name and tags."""
    clauses = []
    if experiment:
        clauses.append({"config.experiment_name": experiment})
    for t in tags:
        clauses.append({"tags": {"$in": [t]}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def collect_wandb(entity: str | None, project: str, experiment: str | None = None,
                  tags: Iterable[str] = (), api=None, history: bool = True,
                  log: Callable[[str], None] | None = None) -> Collection:
    """Read the runs of a W&B project through the public API (``wandb.Api().runs``).

    results.json's scalars are in each run's summary and the resolved config is its config
    (both pushed by poolbench-train). What W&B does not hold: test top-5 and parameter
    counts (nested in results.json, not pushed as scalars) and test predictions, so the
    image-level tests and the extra-parameter columns stay empty for this source.
    """
    log = log or (lambda _msg: None)
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    filters = wandb_filters(experiment, tags)
    log(f"querying W&B runs of {path}" + (f" with filters {json.dumps(filters)}"
                                          if filters else ""))
    coll = build_collection(_read_all(api.runs(path, filters=filters), path, history, log),
                            f"wandb:{path}")
    log(f"collected {len(coll.runs)} runs from W&B ({status_counts(coll.runs)})")
    return coll


def _read_all(runs, path: str, history: bool, log):
    """(row, per-epoch rows or None) of every poolbench run of ``runs``, a line every 25."""
    for i, run in enumerate(runs, 1):
        results = run_results(run)
        if results.get("experiment") is None:
            continue  # not a poolbench run
        run_id = f"wandb:{path}/{getattr(run, 'id', i)}"
        epochs = _history(run, run_id, log) if history else None
        yield run_row(results, run_id, epochs), epochs
        if i % 25 == 0:
            log(f"  read {i} runs")


def run_results(run) -> dict:
    """A results.json-like dict of one W&B run: its summary's scalars (W&B's own ``_*`` keys
    left out), identity from its config where the summary lacks it, a status from its state
    where the summary has none, its id, and its config (unflattened when logged flat)."""
    config = dict(run.config or {})
    if any("/" in str(k) for k in config):
        config = unflatten(config)
    results = {k: v for k, v in _summary_dict(run).items() if not str(k).startswith("_")}
    for k, v in identity_from_config(config).items():
        results.setdefault(k, v)
    if "status" not in results:
        results["status"] = WANDB_STATE.get(getattr(run, "state", ""), INCOMPLETE)
    results.setdefault("wandb_id", getattr(run, "id", None))
    results["config"] = config or None
    return results


def _history(run, run_id: str, log) -> pd.DataFrame | None:
    """One row per epoch from the run's logged history; None (and a line) if it is unreadable."""
    try:
        return epoch_rows(pd.DataFrame.from_records(list(run.scan_history())))
    except Exception as e:  # noqa: BLE001 - a broken history must not stop the rest
        log(f"  {run_id}: could not read history ({e})")
        return None


def _summary_dict(run) -> dict:
    """The run's summary as a plain dict (``summary_metrics`` where the API has it, else
    ``summary``: a mapping, or an object that keeps it in ``_json_dict``)."""
    d = getattr(run, "summary_metrics", None)
    if isinstance(d, dict):
        return dict(d)
    s = getattr(run, "summary", None)
    if s is None:
        return {}
    js = getattr(s, "_json_dict", None)
    return dict(js) if isinstance(js, dict) else dict(s)


def unflatten(d: dict, sep: str = "/") -> dict:
    """``{"data/name": x}`` -> ``{"data": {"name": x}}`` (for configs logged flattened)."""
    out: dict = {}
    for k, v in d.items():
        parts = str(k).split(sep) if sep in str(k) else [k]
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                break
        else:
            cur[parts[-1]] = v
    return out
