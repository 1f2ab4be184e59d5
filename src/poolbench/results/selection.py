"""Which runs count: the user's ``--filter KEY=VALUE`` selection (:func:`filter_runs`), and
the rule every table, test and figure shares: finished runs of the main methods, one per
seed, the one that finished last (:func:`usable_main`, :func:`one_run_per_seed`)."""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..rundir import DONE
from .configs import flatten, same
from .runs import Collection


# ---- the user's selection (--filter) ------------------------------------------------------

def parse_filters(items: Iterable[str]) -> dict[str, Any]:
    """``["model.name=vgg16", "optim.lr=0.1"]`` -> ``{"model.name": "vgg16", "optim.lr": 0.1}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--filter expects KEY=VALUE (a dotted config key), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def filter_runs(coll: Collection, filters: dict[str, Any]) -> Collection:
    """Keep runs whose resolved config has every ``dotted.key == value`` in ``filters``.

    A key that is also a column (``data``, ``model``, ``pool``, ``experiment``, ``status``,
    ``seed``) matches the column, so runs without a config (failed early) can be selected.
    """
    if not filters:
        return coll
    mask = []
    for _, r in coll.runs.iterrows():
        flat = flatten(r["config"]) if isinstance(r["config"], dict) else {}
        ok = True
        for k, v in filters.items():
            if k in coll.runs.columns and k not in ("config", "hparams"):
                have = r[k]
            elif k in flat:
                have = flat[k]
            else:
                ok = False
                break
            if not (same(have, v) or str(have) == str(v)):
                ok = False
                break
        mask.append(ok)
    return coll.select(np.array(mask, dtype=bool))


# ---- the runs a table, test or figure uses ------------------------------------------------

def finished_main(runs: pd.DataFrame) -> pd.DataFrame:
    """Every finished run of the main methods (no K x T ablation variants), with all the runs
    of a seed that finished more than once."""
    return runs[(runs["status"] == DONE) & ~runs["kt_ablation"].astype(bool)]


def usable_main(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs of the main methods, one per seed: what every table and figure shows
    (:func:`one_run_per_seed`)."""
    return one_run_per_seed(finished_main(runs))[0]


SEED_KEY = ("experiment", "data", "model", "method", "seed")


def by_finish(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` ordered by when they finished (results.json's ``finished_at``; runs without
    one first), then by ``run_id``: the last of a seed's runs is the one that counts."""
    when = pd.to_datetime(runs["finished_at"], utc=True, errors="coerce", format="ISO8601")
    order = pd.DataFrame({"when": when, "run_id": runs["run_id"].astype(str)})
    return runs.loc[order.sort_values(["when", "run_id"], na_position="first",
                                      kind="stable").index]


def one_run_per_seed(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, left out): one run per experiment/data/model/method/seed, the latest finished.

    A seed can finish twice: re-launched with a config key outside the run's identity
    changed, or the same run pushed twice to W&B. Every table, test and figure of a seed's
    accuracy keeps the one that finished last (:func:`by_finish`); the data report lists the
    others. Both frames keep ``runs``' order.
    """
    last = by_finish(runs).drop_duplicates(list(SEED_KEY), keep="last").index
    kept = runs.index.isin(last)
    return runs[kept], runs[~kept]


def accuracy_column(which: str) -> str:
    if which not in ("final", "best_val"):
        raise ValueError(f"which must be 'final' or 'best_val', got {which!r}")
    return f"test_top1_{which}"
