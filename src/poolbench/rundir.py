"""The run directory: where a run lives, what state it is in, and what it leaves behind.

Every rule about run directories lives here; ``train``, ``grid``, ``results`` and ``bench``
ask this module instead of knowing them:

* **layout and identity**: ``<outputs>/<experiment>/<data>/<model>/<pool>/seed=<seed>[-<h>]``,
  ``<h>`` 8 hex digits of a hash of every other override (:func:`run_subdir`, which
  ``conf/train.yaml`` calls; :func:`identity_from_path` reads a path back);
* **files** (:data:`RUN_FILES`) and **statuses** (:data:`STATUSES`, :func:`run_status`,
  :data:`FINISHED`: what a re-run skips);
* **results.json**, the unit of truth, written once and atomically at the end
  (:data:`RESULT_FIELDS`, :func:`results_record`, :func:`write_results`), or the failure
  record of a run that raised (:func:`record_failure`);
* **which config keys do not change a run's result** (:data:`IDENTITY_EXCLUDED_KEYS`, read
  from ``conf/train.yaml``; :data:`IGNORED_CONFIG_KEYS`, for comparing the configs of runs).

Every write to a run directory goes through :func:`start`, :func:`clear`,
:func:`write_results` and :func:`record_failure`: that is where ownership of a directory
(a lease naming host, pid and SLURM job, and a ``running`` status) and rank-0-only writes
under DDP belong when they come.

No torch, Lightning or pandas at import: a re-run must find a finished run and skip it in
well under a second.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

import yaml

from .config import CONF_DIR, is_config_group
from .utils import atomic_write_json, read_json

# ---- files -------------------------------------------------------------------------------

CONFIG = "config.json"              # the resolved config, written when the run starts
METRICS = "metrics.csv"             # per-epoch metrics (Lightning's CSVLogger file name)
LAST_CKPT = "last.ckpt"             # the resume point, every epoch
BEST_CKPT = "best.ckpt"             # the best validation top-1 so far
PREDICTIONS = "test_predictions.npz"
WANDB_ID = "wandb_id.txt"           # so a resumed run continues the same W&B run
WANDB_DIR = "wandb"                 # W&B's own files (offline runs)
RESULTS = "results.json"            # written last, atomically: the run is over
# What force=true deletes before retraining (with WANDB_DIR); config.json is rewritten.
RUN_FILES = (LAST_CKPT, BEST_CKPT, METRICS, RESULTS, PREDICTIONS, WANDB_ID)

# ---- statuses ----------------------------------------------------------------------------

DONE, DIVERGED, FAILED = "done", "diverged", "failed"
INTERRUPTED, INCOMPLETE, MISSING = "interrupted", "incomplete", "missing"

#: Every status a run can have, in the order summaries list them, each with what it means.
#: The first three are written into results.json; the others are read off the directory.
STATUSES = {
    DONE: "trained and tested: results.json holds the test accuracies",
    DIVERGED: "the training loss turned non-finite: results.json says when; not tested",
    FAILED: "an error ended the run: results.json holds the traceback; a re-run retries",
    INTERRUPTED: "stopped after a checkpoint (killed, preempted, out of time): last.ckpt but "
                 "no results.json; a re-run resumes from last.ckpt",
    INCOMPLETE: "the directory exists but holds neither results.json nor last.ckpt: killed "
                "in its first epoch, or still in it; a re-run starts it again",
    MISSING: "no run directory: never started",
}
RESULT_STATUSES = (DONE, DIVERGED, FAILED)  # the statuses results.json records
FINISHED = (DONE, DIVERGED)                 # a re-run skips these (force=true retrains)
SKIP_NOTICE = "skipping finished run"       # what poolbench-train prints when it skips


def read_results(run_dir: str | Path) -> dict | None:
    """results.json of ``run_dir``, or None (missing, or unreadable: cut short by a kill)."""
    return read_json(Path(run_dir) / RESULTS)


def run_status(run_dir: str | Path, results: dict | None = None) -> str:
    """The status (a key of :data:`STATUSES`) of the run in ``run_dir``.

    A results.json with a status of :data:`RESULT_STATUSES` decides; otherwise (none, an
    unreadable one, or an unknown status) the directory does: ``last.ckpt`` is
    ``interrupted``, an existing directory ``incomplete``, none ``missing``. ``results``:
    the already-read results.json, to read it only once.
    """
    run_dir = Path(run_dir)
    results = read_results(run_dir) if results is None else results
    if results and results.get("status") in RESULT_STATUSES:
        return results["status"]
    if (run_dir / LAST_CKPT).exists():
        return INTERRUPTED
    return INCOMPLETE if run_dir.is_dir() else MISSING


def finished_status(run_dir: str | Path) -> str | None:
    """The status of a finished run (one of :data:`FINISHED`) in ``run_dir``, or None if the
    run must (re)train."""
    status = run_status(run_dir)
    return status if status in FINISHED else None


# ---- layout and identity -----------------------------------------------------------------

CELL_FIELDS = ("experiment", "data", "model", "pool")  # runs of one cell differ in seed only
IDENTITY_FIELDS = (*CELL_FIELDS, "seed")
HASH_DIGITS = 8
RUN_DIR_NAME = re.compile(rf"^seed=(-?\d+)(?:-[0-9a-f]{{{HASH_DIGITS}}})?$")


def canonical_overrides(overrides, exclude_keys=()) -> str:
    """The overrides that are not part of the run's identity path, as one canonical string.

    Each override is written the way Hydra's sweeper writes a multirun job's overrides
    (``optim.lr=1e-1`` -> ``optim.lr=0.1``, ``a=[1, 2]`` -> ``a=[1,2]``), so a run typed by
    hand and the same run inside a sweep get the same string; keys in ``exclude_keys`` are
    dropped (as for Hydra's ``job.override_dirname``); the rest is sorted and comma-joined.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    exclude = set(exclude_keys or ())
    lines = []
    for o in OverridesParser.create().parse_overrides([str(x) for x in overrides]):
        if o.key_or_group in exclude:
            continue
        if o.is_sweep_override():  # not in a job's overrides; kept as typed
            lines.append(o.input_line)
        else:
            lines.append(f"{o.get_key_element()}={o.get_value_element_as_str()}")
    return ",".join(sorted(lines))


def override_suffix(overrides="", exclude_keys=()) -> str:
    """'' when no other overrides were given, else '-' + 8 hex digits of their hash.

    ``overrides``: Hydra's ``hydra.overrides.task`` (a list), reduced by
    :func:`canonical_overrides` with ``exclude_keys`` (:data:`IDENTITY_EXCLUDED_KEYS`: the
    keys of the run's identity path and those that do not change its result). A string is
    taken as already reduced.
    """
    text = overrides if isinstance(overrides, str) else canonical_overrides(overrides,
                                                                             exclude_keys)
    if not text:
        return ""
    return "-" + hashlib.sha1(text.encode()).hexdigest()[:HASH_DIGITS]


def run_subdir(experiment, data, model, pool, seed, overrides=(), exclude_keys=()) -> str:
    """``<experiment>/<data>/<model>/<pool>/seed=<seed>[-<hash>]``: a run's directory under
    the outputs directory, a pure function of its identity and its other overrides
    (``conf/train.yaml``'s ``run_subdir`` calls this as ``${poolbench_run_subdir:...}``)."""
    return (f"{experiment}/{data}/{model}/{pool}/seed={seed}"
            f"{override_suffix(overrides, exclude_keys)}")


def identity_from_path(run_dir: str | Path) -> dict:
    """experiment/data/model/pool/seed read back from a path :func:`run_subdir` made, or {}
    when ``run_dir`` is not named like a run directory."""
    run_dir = Path(run_dir)
    m = RUN_DIR_NAME.match(run_dir.name)
    parts = run_dir.parts
    if not m or len(parts) < 5:
        return {}
    return {**dict(zip(CELL_FIELDS, parts[-5:-1])), "seed": int(m.group(1))}


def run_identity(cfg) -> dict:
    """experiment/data/model/pool/seed of a run config (a DictConfig or the plain dict of
    config.json); raises KeyError/TypeError/ValueError when ``cfg`` is not a run config."""
    return {"experiment": cfg["experiment_name"], "data": cfg["data"]["name"],
            "model": cfg["model"]["name"], "pool": cfg["pool"]["name"],
            "seed": int(cfg["seed"])}


def identity_from_config(cfg) -> dict:
    """:func:`run_identity`, or {} when ``cfg`` (e.g. a config.json) is not a run config."""
    try:
        return run_identity(cfg)
    except (TypeError, KeyError, ValueError):
        return {}


# ---- config keys that do not change a run's result ---------------------------------------

def _train_yaml_excludes() -> tuple[str, ...]:
    hydra = yaml.safe_load((CONF_DIR / "train.yaml").read_text())["hydra"]
    return tuple(hydra["job"]["config"]["override_dirname"]["exclude_keys"])


#: Overrides left out of the run directory's hash: ``hydra.job.config.override_dirname.
#: exclude_keys`` of conf/train.yaml, read from there. Config groups among them (``pool``,
#: ``data``, ...) are in the path itself; the other keys do not change what a run computes.
IDENTITY_EXCLUDED_KEYS = _train_yaml_excludes()

#: Config keys (and key prefixes) that do not change what a run computes, ignored when
#: checking that the runs of one cell share one config: the keys of IDENTITY_EXCLUDED_KEYS
#: that are config keys (not config groups, whose choice is the cell), plus keys that are
#: never typed as overrides but differ between runs of one cell anyway: where the run lives
#: (``run_dir``, ``run_subdir``), its ``tags``, and all of ``logger`` (W&B's settings).
IGNORED_CONFIG_KEYS = (
    *(k for k in IDENTITY_EXCLUDED_KEYS if not is_config_group(k)),
    "run_dir", "run_subdir", "tags", "logger",
)


# ---- writing -----------------------------------------------------------------------------

def clear(run_dir: str | Path) -> None:
    """Delete what an earlier attempt left (:data:`RUN_FILES` and W&B's files): force=true."""
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / WANDB_DIR, ignore_errors=True)


def start(run_dir: str | Path, config: dict) -> None:
    """Create ``run_dir`` and write ``config`` (the resolved run config) to config.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG, config)


def resume_point(run_dir: str | Path) -> tuple[str | None, int]:
    """(``last.ckpt`` to resume from or None, epochs it completed) of ``run_dir``."""
    last = Path(run_dir) / LAST_CKPT
    if not last.exists():
        return None, 0
    import torch

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return str(last), ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


#: results.json's fields, in the order written. The first eight (status ... run_dir) are also
#: the whole failure record; the rest are measured by the run (:func:`results_record`).
RESULT_FIELDS = (
    "status", "error", *IDENTITY_FIELDS, "run_dir",
    "test",                   # {"final": {top1, top5} or None, "best_val": the same}
    "test_top1_final", "test_top1_best_val",  # copies of test's top1, for flat tables
    "best_val_acc", "best_val_epoch",         # selection on validation only (0-based epoch)
    "epochs_run", "max_epochs", "wall_time_s",
    "first_step_at", "startup_s", "launch_s",  # callbacks.FirstStepClock.timing()
    "mean_epoch_time_s", "throughput_img_s",
    "params",                 # models.model_summary: counts, pooling layers
    "precision", "threads", "device", "git_commit", "versions", "wandb_id", "finished_at",
    "config",                 # the resolved run config (as in config.json)
)
_DERIVED = ("status", "error", *IDENTITY_FIELDS, "run_dir", "test_top1_final",
            "test_top1_best_val", "max_epochs", "finished_at", "config")


def _record_head(status: str, error: str | None, cfg, run_dir: str | Path) -> dict:
    return {"status": status, "error": error, **run_identity(cfg), "run_dir": str(run_dir)}


def results_record(config: dict, run_dir: str | Path, status: str, error: str | None,
                   **measured) -> dict:
    """results.json of a run that ended (``status`` done or diverged), fields in
    :data:`RESULT_FIELDS` order: identity, max_epochs and config from ``config``, the copies
    of the top-1 accuracies from ``measured["test"]``, ``measured`` for the rest."""
    expected = set(RESULT_FIELDS) - set(_DERIVED)
    if set(measured) != expected:
        raise ValueError(f"results.json needs the measured fields {sorted(expected)}; "
                         f"missing {sorted(expected - set(measured))}, "
                         f"unknown {sorted(set(measured) - expected)}")
    test = measured["test"]
    record = {
        **_record_head(status, error, config, run_dir), **measured,
        "test_top1_final": (test["final"] or {}).get("top1"),
        "test_top1_best_val": (test["best_val"] or {}).get("top1"),
        "max_epochs": int(config["trainer"]["max_epochs"]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
    }
    return {k: record[k] for k in RESULT_FIELDS}


def write_results(run_dir: str | Path, results: dict) -> None:
    """Write results.json atomically: readers see no file or the whole of it."""
    atomic_write_json(Path(run_dir) / RESULTS, results)


def record_failure(run_dir: str | Path, cfg, error: str) -> None:
    """Record that the run raised ``error`` (a traceback): results.json with status failed
    and the run's identity, unless the run had already finished (then it is kept)."""
    if finished_status(run_dir):
        return
    write_results(run_dir, _record_head(FAILED, error, cfg, run_dir))
