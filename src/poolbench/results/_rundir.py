"""The run-directory rules that results relies on, in one place: a STAND-IN for poolbench.rundir.

``poolbench.rundir`` (being written on its own branch) will own every rule about run
directories. Until it is merged, these are the results package's copies, gathered here from
``collect.py`` so that nothing else in ``results/`` knows them. Once it is merged, the body
of this module becomes one line::

    from ..rundir import (CONFIG, DONE, IGNORED_CONFIG_KEYS, INCOMPLETE, INTERRUPTED, LAST_CKPT,
                          METRICS, PREDICTIONS, RESULTS, RUN_DIR_NAME, STATUSES,
                          identity_from_config, identity_from_path, read_json, run_status)

(the names and meanings below are rundir's; ``run_status(run_dir, results={})`` there gives
the status of a directory without a readable results.json, as here).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..utils import read_json

# ---- files of a run directory ------------------------------------------------------------

RESULTS = "results.json"             # written last, atomically: the unit of truth
CONFIG = "config.json"               # the resolved config, written when the run starts
METRICS = "metrics.csv"              # per-epoch metrics (Lightning's CSVLogger)
LAST_CKPT = "last.ckpt"              # the resume point, every epoch
PREDICTIONS = "test_predictions.npz"  # per test image: predicted class, label

# ---- statuses ----------------------------------------------------------------------------

DONE, DIVERGED, FAILED = "done", "diverged", "failed"    # what results.json records
INTERRUPTED, INCOMPLETE = "interrupted", "incomplete"    # read off a directory without one
#: Every status a collected run can have: results.json's three, plus the two of a run
#: without one (:func:`run_status`).
STATUSES = (DONE, DIVERGED, FAILED, INTERRUPTED, INCOMPLETE)


def run_status(run_dir: str | Path, results: dict | None = None) -> str:
    """The status of the run in ``run_dir``: its results.json's, else ``interrupted`` (a
    checkpoint is there) or ``incomplete`` (started, or killed before its first checkpoint).
    ``results``: the already-read results.json ({} when there is none), to read it once."""
    results = read_json(Path(run_dir) / RESULTS) if results is None else results
    if results and results.get("status"):
        return results["status"]
    return INTERRUPTED if (Path(run_dir) / LAST_CKPT).exists() else INCOMPLETE


# ---- layout and identity -----------------------------------------------------------------

#: The name of a run directory: ``seed=<seed>`` plus ``-<8 hex digits>`` (a hash of the other
#: overrides) when it has any; its parents are ``<experiment>/<data>/<model>/<pool>``.
RUN_DIR_NAME = re.compile(r"^seed=(-?\d+)(?:-[0-9a-f]{8})?$")


def identity_from_path(run_dir: str | Path) -> dict:
    """experiment/data/model/pool/seed from ``.../<exp>/<data>/<model>/<pool>/seed=<s>[-h]``,
    or {} when ``run_dir`` is not named like a run directory."""
    run_dir = Path(run_dir)
    m = RUN_DIR_NAME.match(run_dir.name)
    parts = run_dir.parts
    if not m or len(parts) < 5:
        return {}
    return {"experiment": parts[-5], "data": parts[-4], "model": parts[-3], "pool": parts[-2],
            "seed": int(m.group(1))}


def identity_from_config(cfg) -> dict:
    """experiment/data/model/pool/seed of a resolved run config, or {} when ``cfg`` is not one."""
    try:
        return {"experiment": cfg["experiment_name"], "data": cfg["data"]["name"],
                "model": cfg["model"]["name"], "pool": cfg["pool"]["name"],
                "seed": int(cfg["seed"])}
    except (TypeError, KeyError, ValueError):
        return {}


# ---- config keys that do not change a run's result ---------------------------------------

#: Config keys (and key prefixes) that do not change what a run computes (paths, logging, the
#: seed, where the run lives): ignored when checking that the runs of one cell share one
#: config. Mirrors hydra.job.config.override_dirname.exclude_keys in conf/train.yaml (a test
#: checks); rundir reads them from there.
IGNORED_CONFIG_KEYS = (
    "seed", "force", "threads", "run_dir", "run_subdir", "paths", "data.root", "data.download",
    "data.num_workers", "logger", "trainer.accelerator", "trainer.devices",
    "callbacks.progress", "callbacks.progress_every_n_steps", "tags",
)
