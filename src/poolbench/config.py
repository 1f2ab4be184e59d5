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


def from_section(factory, section, name: str, *args, **extra):
    """``factory(*args, **section, **extra)``: a config section (``data``, ``optim``) passed
    as keyword arguments, so a new option is a YAML key and a constructor argument, nothing
    in between. A key that ``factory`` does not take is an error naming the keys it does."""
    import inspect

    kwargs = OmegaConf.to_container(section, resolve=True)
    params = [p for p in inspect.signature(factory).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    valid = sorted(p.name for p in params[len(args):] if p.name not in extra)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"{name}.{unknown[0]} is not an option of "
                         f"{getattr(factory, '__qualname__', factory)}; valid: {valid}")
    return factory(*args, **kwargs, **extra)


def register_resolvers() -> None:
    """``${poolbench_root:}`` (:func:`project_root`) and ``${poolbench_run_subdir:...}``
    (:func:`poolbench.rundir.run_subdir`, the run directory's layout)."""
    from .rundir import run_subdir

    for name, fn in (("poolbench_root", project_root), ("poolbench_run_subdir", run_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
