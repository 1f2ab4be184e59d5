"""Collect finished runs into one pandas table: from run directories or from the W&B API.

A run directory (see conf/train.yaml) holds ``results.json`` (the unit of truth),
``metrics.csv`` (per-epoch logs) and ``test_predictions.npz``. :func:`collect_files` reads
every run directory under an outputs directory, :func:`collect_wandb` reads the same numbers
from W&B (``run.summary`` holds results.json's scalars, ``run.config`` the resolved config).
Both return a :class:`Collection`: one row per run (``runs``) and one row per run and epoch
(``epochs``). :func:`check_runs` says what is missing, failed, diverged or mixed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..pooling import POOLS, pool_hparams
from ._rundir import (
    CONFIG, DONE, FAILED, IGNORED_CONFIG_KEYS, INCOMPLETE, INTERRUPTED, LAST_CKPT, METRICS,
    PREDICTIONS, RESULTS, RUN_DIR_NAME, identity_from_config, identity_from_path, read_json,
    run_status,
)

# Pool hyperparameters that the K x T ablation varies. Runs that differ from their method's
# registry defaults only in these are ablation runs: they feed the K x T table and heatmap,
# not the main tables.
KT_KEYS = ("topk", "threshold")

@dataclass
class Collection:
    """What :func:`collect_files` / :func:`collect_wandb` found.

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


# ---- configs -------------------------------------------------------------------------------

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


def _same(a, b) -> bool:
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
        if any(v is missing for v in vals) or not all(_same(first, v) for v in vals[1:]):
            seen = []
            for v in vals:
                v = "<absent>" if v is missing else v
                if not any(_same(v, s) for s in seen):
                    seen.append(v)
            diffs[k] = seen
    return diffs


def pool_variant(pool: str, pool_cfg: dict | None) -> tuple[dict, str, bool]:
    """(hyperparameters, variant label, is K x T ablation) of a run's ``config["pool"]``.

    The label lists the hyperparameters that differ from the registry's defaults
    (``"topk=2, threshold=0.3"``; ``""`` for the defaults). A run is a K x T ablation run
    when its method has ``topk`` and ``threshold`` and only those differ.
    """
    hp = {k: v for k, v in (pool_cfg or {}).items() if k != "name"}
    if pool not in POOLS:
        return hp, "", False
    defaults = pool_hparams(pool)
    order = list(defaults) + sorted(set(hp) - set(defaults))
    diff = [k for k in order if k in hp and (k not in defaults or not _same(hp[k], defaults[k]))]
    label = ", ".join(f"{k}={_fmt_value(hp[k])}" for k in diff)
    kt = bool(diff) and all(k in KT_KEYS for k in diff) and all(k in defaults for k in KT_KEYS)
    return hp, label, kt


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def method_label(pool: str, variant: str) -> str:
    return f"{pool} ({variant})" if variant else pool


def pool_order_key(pool: str) -> tuple:
    names = list(POOLS)
    return (names.index(pool), "") if pool in names else (len(names), pool)


def order_methods(methods: Iterable[str]) -> list[str]:
    """Methods in registry order (the paper's eight first), variants after their method."""
    def key(m: str):
        pool, _, variant = m.partition(" (")
        return (*pool_order_key(pool), variant)
    return sorted(set(methods), key=key)


MODEL_ORDER = ("vgg16", "resnet18")
DATA_ORDER = ("cifar100", "tinyimagenet")


def order_models(models) -> list[str]:
    """The paper's models first (VGG16, ResNet18), then any other, alphabetically."""
    models = set(models)
    return [m for m in MODEL_ORDER if m in models] + sorted(models - set(MODEL_ORDER))


def order_data(data) -> list[str]:
    """The paper's datasets first (CIFAR-100, Tiny ImageNet), then any other."""
    data = set(data)
    return [d for d in DATA_ORDER if d in data] + sorted(data - set(DATA_ORDER))


# ---- per-epoch metrics ---------------------------------------------------------------------

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


def read_metrics_csv(path: Path) -> pd.DataFrame:
    try:
        return epoch_rows(pd.read_csv(path))
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["epoch"])


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


# ---- one run -------------------------------------------------------------------------------

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


def _frame(rows: list[dict], epoch_frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for c in ("hparams", "config", "error", "predictions"):
        runs[c] = runs[c].astype(object)
    if len(runs):
        runs["seed"] = runs["seed"].astype("Int64")
        runs = runs.sort_values(["experiment", "data", "model", "pool", "variant", "seed"],
                                key=_sort_key, na_position="last").reset_index(drop=True)
    frames = [f for f in epoch_frames if f is not None and len(f)]
    epochs = pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=["run_id", "epoch"])
    return runs, epochs


def _sort_key(col: pd.Series) -> pd.Series:
    if col.name == "pool":
        return col.map(lambda p: pool_order_key(p) if isinstance(p, str) else (999, ""))
    return col


def _progress(log, msg):
    if log is not None:
        log(msg)


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
    outputs = Path(outputs)
    if not outputs.is_dir():
        raise FileNotFoundError(f"outputs directory {str(outputs)!r} does not exist")
    run_dirs = find_run_dirs(outputs)
    _progress(log, f"collecting {len(run_dirs)} run director{'y' if len(run_dirs) == 1 else 'ies'}"
                   f" under {outputs}")
    rows, epoch_frames, warnings = [], [], []
    for i, run_dir in enumerate(run_dirs, 1):
        run_id = str(run_dir.relative_to(outputs)) if run_dir != outputs else run_dir.name
        results = read_json(run_dir / RESULTS)
        if results is None:
            if (run_dir / RESULTS).exists():
                warnings.append(f"{run_id}: results.json is unreadable")
            cfg = read_json(run_dir / CONFIG)
            ident = identity_from_config(cfg) or identity_from_path(run_dir)
            if not ident:
                warnings.append(f"{run_id}: not a run directory (no results.json, no config)")
                continue
            results = {**ident, "status": run_status(run_dir, {}), "run_dir": str(run_dir),
                       "config": cfg}
        elif not results.get("config"):
            # A failed run's results.json has no config; config.json (written at start) has.
            results = {**results, "config": read_json(run_dir / CONFIG)}
        epochs = read_metrics_csv(run_dir / METRICS) if (run_dir / METRICS).exists() else None
        preds = run_dir / PREDICTIONS
        rows.append(run_row(results, run_id, epochs, str(preds) if preds.exists() else None))
        if epochs is not None and len(epochs):
            epoch_frames.append(epochs.assign(run_id=run_id))
        if i % 200 == 0:
            _progress(log, f"  read {i}/{len(run_dirs)}")
    runs, epochs = _frame(rows, epoch_frames)
    _progress(log, f"collected {len(runs)} runs ({_status_counts(runs)})")
    return Collection(runs, epochs, source=f"files:{outputs}", warnings=warnings)


def _status_counts(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "none"
    counts = runs["status"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items())


# ---- W&B -----------------------------------------------------------------------------------

_WANDB_STATE = {"running": INCOMPLETE, "pending": INCOMPLETE, "crashed": FAILED,
                "failed": FAILED, "killed": INTERRUPTED, "finished": INCOMPLETE}


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
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    filters = wandb_filters(experiment, tags)
    _progress(log, f"querying W&B runs of {path}" + (f" with filters {json.dumps(filters)}"
                                                     if filters else ""))
    rows, epoch_frames = [], []
    for i, run in enumerate(api.runs(path, filters=filters), 1):
        summary = _summary_dict(run)
        config = dict(run.config or {})
        if any("/" in str(k) for k in config):
            config = unflatten(config)
        results = {k: v for k, v in summary.items() if not str(k).startswith("_")}
        ident = identity_from_config(config)
        for k, v in ident.items():
            results.setdefault(k, v)
        if "status" not in results:
            results["status"] = _WANDB_STATE.get(getattr(run, "state", ""), INCOMPLETE)
        results.setdefault("wandb_id", getattr(run, "id", None))
        results["config"] = config or None
        if results.get("experiment") is None:
            continue  # not a poolbench run
        run_id = f"wandb:{path}/{getattr(run, 'id', i)}"
        epochs = None
        if history:
            try:
                epochs = epoch_rows(pd.DataFrame.from_records(list(run.scan_history())))
            except Exception as e:  # noqa: BLE001 - a broken history must not stop the rest
                _progress(log, f"  {run_id}: could not read history ({e})")
        rows.append(run_row(results, run_id, epochs))
        if epochs is not None and len(epochs):
            epoch_frames.append(epochs.assign(run_id=run_id))
        if i % 25 == 0:
            _progress(log, f"  read {i} runs")
    runs, epochs = _frame(rows, epoch_frames)
    _progress(log, f"collected {len(runs)} runs from W&B ({_status_counts(runs)})")
    return Collection(runs, epochs, source=f"wandb:{path}")


def _summary_dict(run) -> dict:
    for attr in ("summary_metrics",):
        d = getattr(run, attr, None)
        if isinstance(d, dict):
            return dict(d)
    s = getattr(run, "summary", None)
    if s is None:
        return {}
    js = getattr(s, "_json_dict", None)
    return dict(js) if isinstance(js, dict) else dict(s)


# ---- filtering -----------------------------------------------------------------------------

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
            if not (_same(have, v) or str(have) == str(v)):
                ok = False
                break
        mask.append(ok)
    return coll.select(np.array(mask, dtype=bool))


# ---- what is missing -----------------------------------------------------------------------

@dataclass
class DataReport:
    """What :func:`check_runs` found (each a DataFrame; empty when all is well)."""

    expected_seeds: list[int]
    short_cells: pd.DataFrame    # cells with fewer usable runs than expected seeds
    bad_runs: pd.DataFrame       # failed, diverged, interrupted, incomplete runs
    mixed: pd.DataFrame          # cells whose runs differ in config: key, values
    variants: pd.DataFrame       # K x T ablation variants (kept out of the main tables)
    duplicates: pd.DataFrame     # more than one usable run for the same cell and seed
                                 # (run_ids in finishing order: the last one is used)

    def ok(self) -> bool:
        return all(len(x) == 0 for x in (self.short_cells, self.bad_runs, self.mixed,
                                          self.duplicates))


def check_runs(runs: pd.DataFrame, seeds: Iterable[int] | None = None) -> DataReport:
    """Missing seeds, bad runs and mixed configs, per experiment.

    The expected grid of an experiment is every data x model x method (main methods, not
    K x T ablation variants) seen in it, each with every expected seed: ``seeds`` if given,
    else the union of the seeds seen in that experiment. K x T variants are expected to
    have every seed too, but only in the data/model cells where they were run.
    """
    seeds = sorted(set(int(s) for s in seeds)) if seeds is not None else None
    short, mixed, dup = [], [], []
    all_seeds: set[int] = set()
    for exp, er in runs.groupby("experiment", sort=True):
        exp_seeds = seeds if seeds is not None else sorted(int(s) for s in er["seed"].dropna().unique())
        all_seeds.update(exp_seeds)
        main = er[~er["kt_ablation"].astype(bool)]
        cells = [(d, m, meth) for d in sorted(er["data"].dropna().unique())
                 for m in sorted(er["model"].dropna().unique())
                 for meth in order_methods(main["method"].dropna().unique())]
        kt = er[er["kt_ablation"].astype(bool)]
        cells += sorted(set(zip(kt["data"], kt["model"], kt["method"])))
        for d, m, meth in cells:
            cell = er[(er["data"] == d) & (er["model"] == m) & (er["method"] == meth)]
            usable = cell[cell["status"] == DONE]
            have = sorted(int(s) for s in usable["seed"].dropna().unique())
            missing = [s for s in exp_seeds if s not in have]
            if missing:
                no_dir = [s for s in missing if s not in set(cell["seed"].dropna().astype(int))]
                short.append({"experiment": exp, "data": d, "model": m, "method": meth,
                              "n": len(have), "expected": len(exp_seeds),
                              "seeds_missing": missing, "seeds_without_run_dir": no_dir})
            counts = usable["seed"].value_counts()
            for s, n in counts[counts > 1].items():
                dup.append({"experiment": exp, "data": d, "model": m, "method": meth,
                            "seed": int(s), "n": int(n),
                            "run_ids": list(by_finish(usable[usable["seed"] == s])["run_id"])})
            configs = [comparable_config(c) for c in cell["config"] if isinstance(c, dict)]
            if len(configs) > 1:
                for key, values in config_differences(configs).items():
                    mixed.append({"experiment": exp, "data": d, "model": m, "method": meth,
                                  "key": key, "values": values})
    bad = runs[runs["status"] != DONE]
    bad = bad[["experiment", "data", "model", "method", "seed", "status", "error", "run_id"]]
    bad = bad.assign(error=bad["error"].map(_last_line))
    variants = runs[runs["kt_ablation"].astype(bool)].groupby(
        ["experiment", "data", "model", "pool", "variant"], sort=False).size() \
        .rename("runs").reset_index() if runs["kt_ablation"].astype(bool).any() else \
        pd.DataFrame(columns=["experiment", "data", "model", "pool", "variant", "runs"])
    return DataReport(
        expected_seeds=seeds if seeds is not None else sorted(all_seeds),
        short_cells=pd.DataFrame(short, columns=["experiment", "data", "model", "method", "n",
                                                 "expected", "seeds_missing",
                                                 "seeds_without_run_dir"]),
        bad_runs=bad.reset_index(drop=True),
        mixed=pd.DataFrame(mixed, columns=["experiment", "data", "model", "method", "key",
                                           "values"]),
        variants=variants,
        duplicates=pd.DataFrame(dup, columns=["experiment", "data", "model", "method", "seed",
                                              "n", "run_ids"]),
    )


def _last_line(err) -> str:
    if not isinstance(err, str) or not err.strip():
        return ""
    return err.strip().splitlines()[-1][:200]


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
