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
  from ``conf/train.yaml``; :data:`IGNORED_CONFIG_KEYS`, for comparing the configs of runs);
* **who may train it, and who writes**: :func:`claim` decides, on global rank 0 only,
  whether a launch skips the run (finished, or owned by a live launch: status ``running``)
  or trains it, from which checkpoint, holding its lease (:mod:`poolbench.lease`); the
  other ranks of a DDP launch receive that decision (:mod:`poolbench.launch`) and write
  nothing.

Every write to a run directory goes through :func:`start`, :func:`clear`,
:func:`write_results` and :func:`record_failure` (global rank 0 only; the others refuse),
and the checkpoint and metrics writers, which Lightning calls on rank 0 only.

No torch, Lightning or pandas at import: a re-run must find a finished run and skip it in
well under a second.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import launch
from .config import CONF_DIR, is_config_group
from .lease import LEASE, Lease, OwnedError, describe, live_owner, owned_by_another
from .utils import atomic_write_json, read_json

# ---- files -------------------------------------------------------------------------------

CONFIG = "config.json"              # the resolved config, written when the run starts
METRICS = "metrics.csv"             # per-epoch metrics (Lightning's CSVLogger file name)
LAST_CKPT = "last.ckpt"             # the resume point, every epoch
LAST_CKPT_PENDING = ".last.ckpt.pending"  # the next last.ckpt, until its epoch's metrics are in
BEST_CKPT = "best.ckpt"             # the best validation top-1 so far
PREDICTIONS = "test_predictions.npz"
WANDB_ID = "wandb_id.txt"           # so a resumed run continues the same W&B run
WANDB_DIR = "wandb"                 # W&B's own files (offline runs)
RESULTS = "results.json"            # written last, atomically: the run is over
OWNER = LEASE                       # owner.json: the live launch's lease (poolbench.lease)
# What force=true deletes before retraining (with WANDB_DIR); config.json is rewritten.
RUN_FILES = (LAST_CKPT, LAST_CKPT_PENDING, BEST_CKPT, METRICS, RESULTS, PREDICTIONS, WANDB_ID)
TEMP_FILES = ".*.tmp"               # atomic writes cut short by a kill (utils.atomic_file)

# ---- statuses ----------------------------------------------------------------------------

DONE, DIVERGED, FAILED = "done", "diverged", "failed"
RUNNING, INTERRUPTED, INCOMPLETE, MISSING = "running", "interrupted", "incomplete", "missing"

#: Every status a run can have, in the order summaries list them, each with what it means.
#: The first three are written into results.json; the others are read off the directory.
STATUSES = {
    DONE: "trained and tested: results.json holds the test accuracies",
    DIVERGED: "the training loss turned non-finite: results.json says when; not tested",
    FAILED: "an error ended the run: results.json holds the traceback; a re-run retries",
    RUNNING: "a live launch owns the directory (owner.json names its host, pid and SLURM "
             "job; its heartbeat is fresh): a re-run skips it (wait_for_owner=true waits)",
    INTERRUPTED: "stopped after a checkpoint (killed, preempted, out of time): last.ckpt but "
                 "no results.json; a re-run resumes from last.ckpt",
    INCOMPLETE: "the directory exists but holds neither results.json nor last.ckpt: killed "
                "in its first epoch, or still in it; a re-run starts it again",
    MISSING: "no run directory: never started",
}
RESULT_STATUSES = (DONE, DIVERGED, FAILED)  # the statuses results.json records
FINISHED = (DONE, DIVERGED)                 # a re-run skips these (force=true retrains)
SKIP_NOTICE = "skipping finished run"       # what poolbench-train prints when it skips
OWNED_NOTICE = "skipping run owned by a live launch"  # ... when another launch trains it


def read_results(run_dir: str | Path) -> dict | None:
    """results.json of ``run_dir``, or None (missing, or unreadable: cut short by a kill)."""
    return read_json(Path(run_dir) / RESULTS)


def run_status(run_dir: str | Path, results: dict | None = None) -> str:
    """The status (a key of :data:`STATUSES`) of the run in ``run_dir``.

    A results.json with a :data:`FINISHED` status decides; then a live owner's lease
    (``running``: also over the results.json of a failed attempt that a new launch
    retries); then results.json's ``failed``; otherwise (no results.json, an unreadable
    one, or an unknown status) the directory: ``last.ckpt`` is ``interrupted``, an existing
    directory ``incomplete``, none ``missing``. ``results``: the already-read results.json,
    to read it only once.
    """
    run_dir = Path(run_dir)
    results = read_results(run_dir) if results is None else results
    status = results.get("status") if results else None
    if status in FINISHED:
        return status
    if (run_dir / OWNER).exists() and live_owner(run_dir):
        return RUNNING
    if status in RESULT_STATUSES:
        return status
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


def experiment_dir(run_dir: str | Path) -> Path:
    """The experiment's folder, ``<outputs>/<experiment>``, of a directory :func:`run_subdir`
    laid out under ``<outputs>``."""
    return Path(run_dir).parents[len(CELL_FIELDS) - 1]


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


# ---- writing (global rank 0 only) --------------------------------------------------------

def _writer_only(what: str) -> None:
    if not launch.is_rank_zero():
        raise RuntimeError(f"{what}: only global rank 0 writes to a run directory; this "
                           f"process has {launch.rank_variables()}")


def clear(run_dir: str | Path) -> None:
    """Delete what an earlier attempt left (:data:`RUN_FILES`, W&B's files, temporary files
    of cut-short writes): force=true. The lease (owner.json) and config.json stay."""
    _writer_only("clear")
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    _remove_leftovers(run_dir)
    shutil.rmtree(run_dir / WANDB_DIR, ignore_errors=True)


def _remove_leftovers(run_dir: Path) -> None:
    """Temporary files of writes a kill cut short, and a last.ckpt that was never
    published (its epoch's metrics may be missing): the owner removes them as it starts."""
    for tmp in [*run_dir.glob(TEMP_FILES), run_dir / LAST_CKPT_PENDING]:
        tmp.unlink(missing_ok=True)


def start(run_dir: str | Path, config: dict) -> None:
    """Create ``run_dir`` and write ``config`` (the resolved run config) to config.json."""
    _writer_only("start")
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


#: results.json's fields of a run's processes and steps (appended to RESULT_FIELDS; runs made
#: before DDP lack them): processes (DDP), each one's share of the global batch
#: (data.batch_size), and the optimiser steps taken, the same for any process count.
PARALLEL_FIELDS = ("world_size", "batch_size_per_device", "global_batch_size", "optimizer_steps")

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
    *PARALLEL_FIELDS,
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
    _writer_only("write_results")
    atomic_write_json(Path(run_dir) / RESULTS, results)


def record_failure(run_dir: str | Path, cfg, error: str) -> None:
    """Record that the run raised ``error`` (a traceback): results.json with status failed
    and the run's identity, unless the run had already finished (then it is kept), another
    live launch owns it (its run goes on), or this process is not global rank 0 (the other
    ranks' errors are theirs to print)."""
    if not launch.is_rank_zero() or finished_status(run_dir) or owned_by_another(run_dir):
        return
    write_results(run_dir, _record_head(FAILED, error, cfg, run_dir))


# ---- who trains a run: skip it, or own it and train ----------------------------------------

WAIT_POLL_S = 10.0  # how often a launch that waits for a directory's owner looks again


@dataclass
class Claim:
    """A launch's decision about a run directory (:func:`claim`): ``action`` is
    ``launch.TRAIN`` (from ``ckpt_path``, after ``epochs_done`` epochs) or ``launch.SKIP``
    (``message`` says why). ``leader``: this process is global rank 0, the only one that
    writes; it holds the directory's ``lease`` until :meth:`release`."""

    run_dir: Path
    action: str
    message: str | None = None
    ckpt_path: str | None = None
    epochs_done: int = 0
    leader: bool = True
    lease: Lease | None = None

    @property
    def skipped(self) -> bool:
        return self.action == launch.SKIP

    def check_owner(self) -> None:
        """Raise if the lease no longer names this launch: another launch took the run
        over (its heartbeat looked stale, see :mod:`poolbench.lease`)."""
        if self.lease is not None and not self.lease.still_mine():
            raise RuntimeError(f"{self.run_dir} is no longer owned by this launch (its lease "
                               f"was {self.lease.lost or 'taken over'}): results not written")

    def release(self) -> None:
        """The owner lets the run go: lease and decision file deleted (idempotent)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None
            launch.withdraw(self.run_dir)


def claim(run_dir: str | Path, force: bool = False, wait_for_owner: bool = False) -> Claim:
    """Decide whether this launch skips or trains the run in ``run_dir``.

    On global rank 0: a finished run is skipped (``force``: retrained); otherwise the run's
    lease is taken, and a run that a live launch owns is skipped with a line naming that
    owner (``wait_for_owner``: waited for, until it ends or dies); the new owner removes
    leftovers (``force``: everything an earlier attempt left, :func:`clear`) and finds the
    resume point. The decision goes to the launch's other ranks (:func:`launch.hand_off`);
    on those, it is received (:func:`launch.receive`): they read and write nothing here.
    """
    run_dir = Path(run_dir)
    if not launch.is_rank_zero():
        d = launch.receive(run_dir)
        return Claim(run_dir, d["action"], d["message"], d["ckpt_path"], d["epochs_done"],
                     leader=False)
    decided = _decide(run_dir, force, wait_for_owner)
    launch.hand_off(launch.decision(run_dir, decided.action, decided.message,
                                    decided.ckpt_path, decided.epochs_done))
    return decided


def _decide(run_dir: Path, force: bool, wait: bool) -> Claim:
    waiting = False
    while True:
        status = None if force else finished_status(run_dir)
        if status:
            return Claim(run_dir, launch.SKIP, f"{SKIP_NOTICE} ({status}): {run_dir}  "
                                               "(force=true retrains)")
        try:
            lease = Lease.acquire(run_dir, launch.launch_id())
        except OwnedError as e:
            line = f"{OWNED_NOTICE}: {run_dir} is owned by {describe(e.owner)} ({e.why})"
            if not wait:
                return Claim(run_dir, launch.SKIP, f"{line}  (wait_for_owner=true waits for it)")
            if not waiting:
                print(f"[poolbench] waiting for the owner: {line}", flush=True)
                waiting = True
            launch.hand_off(launch.decision(run_dir, launch.WAIT))  # the other ranks wait on
            time.sleep(WAIT_POLL_S)
            continue
        if not force and finished_status(run_dir):  # it finished while we looked: go again
            lease.release()
            continue
        if force:
            clear(run_dir)
        _remove_leftovers(run_dir)
        launch.tidy(run_dir)
        ckpt_path, done = resume_point(run_dir)
        return Claim(run_dir, launch.TRAIN, None, ckpt_path, done, leader=True, lease=lease)
