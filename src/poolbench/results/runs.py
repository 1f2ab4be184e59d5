"""The collected runs as data: :class:`Collection` (one row per run, one per run and epoch),
how a row is made from a results.json dict (:func:`run_row`, the same for both sources) or
from a per-epoch log (:func:`epoch_rows`), and the data files of a report: ``runs.csv``
(:func:`runs_csv`) and ``learned_params.csv`` (:func:`learned_params_frame`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from ..rundir import INCOMPLETE
from .labels import method_label, pool_order_key, pool_variant


@dataclass
class Collection:
    """What :func:`~poolbench.results.collect.collect_files` or
    :func:`~poolbench.results.wandb_source.collect_wandb` found.

    ``runs``: one row per run (see :data:`RUN_COLUMNS`); ``epochs``: one row per run and
    epoch (``run_id``, ``epoch`` and every logged metric: ``train/loss``, ``val/acc``,
    ``time/epoch_s``, ``pool/<layer>/<key>``, ...); ``source``: where from.
    """

    runs: pd.DataFrame
    epochs: pd.DataFrame
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def experiments(self) -> list[str]:
        return sorted(self.runs["experiment"].dropna().unique().tolist())

    def select(self, mask) -> "Collection":
        runs = self.runs[mask].reset_index(drop=True)
        epochs = self.epochs[self.epochs["run_id"].isin(set(runs["run_id"]))]
        return Collection(runs, epochs.reset_index(drop=True), self.source, list(self.warnings))

    def experiment(self, name: str) -> "Collection":
        return self.select(self.runs["experiment"] == name)


RUN_COLUMNS = (
    "run_id", "experiment", "data", "model", "pool", "seed", "status", "error", "method",
    "variant", "kt_ablation", "topk", "threshold",
    "test_top1_final", "test_top5_final", "test_top1_best_val", "test_top5_best_val",
    "best_val_acc", "best_val_epoch", "epochs_run", "max_epochs", "wall_time_s",
    "mean_epoch_time_s", "epoch_time_s", "throughput_img_s", "params_total",
    "params_trainable", "params_pooling", "n_pool_layers", "precision", "device",
    "git_commit", "wandb_id", "finished_at", "run_dir", "predictions", "hparams", "config",
)


# ---- one row per run ---------------------------------------------------------------------

def _num(v):
    if v is None:
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def run_row(results: dict, run_id: str, epochs: pd.DataFrame | None = None,
            predictions: str | None = None) -> dict:
    """One row of :attr:`Collection.runs` from a results.json dict (or the same from W&B)."""
    config = results.get("config") or None
    pool = results.get("pool")
    hp, variant, kt = pool_variant(pool, (config or {}).get("pool"))
    test = results.get("test") or {}
    final, best = test.get("final") or {}, test.get("best_val") or {}
    params = results.get("params") or {}
    mean_epoch = results.get("mean_epoch_time_s")
    row = {
        "run_id": run_id,
        "experiment": results.get("experiment"),
        "data": results.get("data"),
        "model": results.get("model"),
        "pool": pool,
        "seed": int(results["seed"]) if results.get("seed") is not None else None,
        "status": results.get("status") or INCOMPLETE,
        "error": results.get("error"),
        "method": method_label(pool, variant),
        "variant": variant,
        "kt_ablation": kt,
        "topk": _num(hp.get("topk")),
        "threshold": _num(hp.get("threshold")),
        "test_top1_final": _num(final.get("top1", results.get("test_top1_final"))),
        "test_top5_final": _num(final.get("top5", results.get("test_top5_final"))),
        "test_top1_best_val": _num(best.get("top1", results.get("test_top1_best_val"))),
        "test_top5_best_val": _num(best.get("top5", results.get("test_top5_best_val"))),
        "best_val_acc": _num(results.get("best_val_acc")),
        "best_val_epoch": _num(results.get("best_val_epoch")),
        "epochs_run": _num(results.get("epochs_run")),
        "max_epochs": _num(results.get("max_epochs")),
        "wall_time_s": _num(results.get("wall_time_s")),
        "mean_epoch_time_s": _num(mean_epoch),
        "epoch_time_s": _num(steady_epoch_time(epochs, mean_epoch)),
        "throughput_img_s": _num(results.get("throughput_img_s")),
        "params_total": _num(params.get("params_total", results.get("params_total"))),
        "params_trainable": _num(params.get("params_trainable",
                                            results.get("params_trainable"))),
        "params_pooling": _num(params.get("params_pooling", results.get("params_pooling"))),
        "n_pool_layers": (len(params["pooling_layers"]) if "pooling_layers" in params
                          else np.nan),
        "precision": results.get("precision"),
        "device": results.get("device"),
        "git_commit": results.get("git_commit"),
        "wandb_id": results.get("wandb_id"),
        "finished_at": results.get("finished_at"),
        "run_dir": results.get("run_dir"),
        "predictions": predictions,
        "hparams": hp,
        "config": config,
    }
    return row


def _frames(rows: list[dict], epoch_frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, epochs) from :func:`run_row` rows and per-run epoch frames (each with its
    ``run_id``); runs sorted by cell, methods in registry order."""
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for c in ("hparams", "config", "error", "predictions"):
        runs[c] = runs[c].astype(object)
    if len(runs):
        runs["seed"] = runs["seed"].astype("Int64")
        runs = runs.sort_values(["experiment", "data", "model", "pool", "variant", "seed"],
                                key=_sort_key, na_position="last").reset_index(drop=True)
    kept = [f for f in epoch_frames if f is not None and len(f)]
    epochs = pd.concat(kept, ignore_index=True) if kept else \
        pd.DataFrame(columns=["run_id", "epoch"])
    return runs, epochs


def build_collection(read: Iterable[tuple[dict, pd.DataFrame | None]], source: str,
                     warnings: Iterable[str] = ()) -> Collection:
    """A :class:`Collection` from (:func:`run_row` row, per-epoch rows or None) pairs, as a
    reader yields them; ``warnings`` is read after ``read`` is exhausted."""
    rows, epoch_frames = [], []
    for row, epochs in read:
        rows.append(row)
        if epochs is not None and len(epochs):
            epoch_frames.append(epochs.assign(run_id=row["run_id"]))
    runs, epochs = _frames(rows, epoch_frames)
    return Collection(runs, epochs, source=source, warnings=list(warnings))


def _sort_key(col: pd.Series) -> pd.Series:
    if col.name == "pool":
        return col.map(lambda p: pool_order_key(p) if isinstance(p, str) else (999, ""))
    return col


def status_counts(runs: pd.DataFrame) -> str:
    """'3 done, 1 failed': how many runs have each status, most first (for progress lines)."""
    if runs.empty:
        return "none"
    counts = runs["status"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items())


# ---- one row per run and epoch -----------------------------------------------------------

def epoch_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch from a Lightning metrics log (CSV or W&B history).

    Lightning writes several rows per epoch, each with some columns filled: this takes the
    last non-null value of each column per epoch. Test-time rows (``test/*`` only, logged
    with the epoch counter past the last training epoch) are dropped.
    """
    if df is None or df.empty or "epoch" not in df:
        return pd.DataFrame(columns=["epoch"])
    df = df.drop(columns=[c for c in df.columns
                          if c.startswith("test/") or c.startswith("_") or c == "trainer/global_step"])
    df = df[pd.to_numeric(df["epoch"], errors="coerce").notna()].copy()
    df["epoch"] = pd.to_numeric(df["epoch"]).astype(int)
    metric_cols = [c for c in df.columns if c not in ("epoch", "step")]
    if metric_cols:
        df = df[df[metric_cols].notna().any(axis=1)]
    if df.empty:
        return pd.DataFrame(columns=["epoch", *metric_cols])
    out = df.groupby("epoch", sort=True).last().reset_index()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = pd.to_numeric(out[c], errors="coerce")
    return out


def steady_epoch_time(epochs: pd.DataFrame, fallback=None) -> float | None:
    """Median per-epoch training time, leaving out the first epoch when there are more.

    The first epoch carries one-off costs (cuDNN autotuning, torch.compile, data upload).
    Falls back to ``fallback`` (results.json's ``mean_epoch_time_s``) without a log.
    """
    if epochs is not None and "time/epoch_s" in epochs:
        t = epochs.sort_values("epoch")["time/epoch_s"].dropna().to_numpy(dtype=float)
        if len(t) > 1:
            t = t[1:]
        if len(t):
            return float(np.median(t))
    return None if fallback is None else float(fallback)


# ---- the data files of a report (CSV) -----------------------------------------------------

def runs_csv(runs: pd.DataFrame) -> str:
    df = runs.copy()
    for c in ("hparams", "config"):
        df[c] = df[c].map(lambda v: json.dumps(v, sort_keys=True, default=str)
                          if isinstance(v, dict) else "")
    return df.to_csv(index=False)


def learned_params_frame(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Long form of every ``pool/<layer>/<key>`` value: one row per run, epoch, layer, key."""
    cols = [c for c in epochs.columns if c.startswith("pool/")]
    if not cols or epochs.empty:
        return pd.DataFrame(columns=["run_id", "experiment", "data", "model", "method", "seed",
                                     "epoch", "layer", "key", "value"])
    long = epochs[["run_id", "epoch", *cols]].melt(id_vars=["run_id", "epoch"],
                                                   var_name="column", value_name="value")
    long = long.dropna(subset=["value"])
    parts = long["column"].str[len("pool/"):].str.rpartition("/")
    long = long.assign(layer=parts[0], key=parts[2]).drop(columns="column")
    meta = runs[["run_id", "experiment", "data", "model", "method", "seed"]]
    out = long.merge(meta, on="run_id", how="inner")
    return out[["run_id", "experiment", "data", "model", "method", "seed", "epoch", "layer",
                "key", "value"]].sort_values(["data", "model", "method", "seed", "layer", "key",
                                              "epoch"]).reset_index(drop=True)
