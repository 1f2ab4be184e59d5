"""Where the configs live, and the OmegaConf resolvers they use (no heavy imports here)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


def project_root() -> str:
    """The checkout holding conf/ (override with $POOLBENCH_ROOT)."""
    return os.environ.get("POOLBENCH_ROOT", str(PROJECT_ROOT))


def is_config_group(name: str) -> bool:
    """Whether ``name`` (``pool``, ``hydra/launcher``) is a config group, i.e. a directory
    of conf/, rather than a config key (``pool.topk``)."""
    return (CONF_DIR / name).is_dir()


def model_arguments(cfg) -> tuple[dict, dict]:
    """(pool hyperparameters, other model keyword arguments) of a run config: what
    :func:`poolbench.models.build_model` takes besides the model and pool names."""
    def without_name(node) -> dict:
        return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
                if k != "name"}

    return without_name(cfg.pool), without_name(cfg.model)


def register_resolvers() -> None:
    """``${poolbench_root:}`` (:func:`project_root`) and ``${poolbench_run_subdir:...}``
    (:func:`poolbench.rundir.run_subdir`, the run directory's layout)."""
    from .rundir import run_subdir

    for name, fn in (("poolbench_root", project_root), ("poolbench_run_subdir", run_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
