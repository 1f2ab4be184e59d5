"""Where the configs live, and the OmegaConf resolvers they use (no heavy imports here)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


def project_root() -> str:
    """The checkout holding conf/ (override with $POOLBENCH_ROOT)."""
    return os.environ.get("POOLBENCH_ROOT", str(PROJECT_ROOT))


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
    :func:`canonical_overrides` with ``exclude_keys`` (the keys of the run's identity path and
    those that do not change its result: hydra.job.config.override_dirname.exclude_keys).
    A string is taken as already reduced.
    """
    text = overrides if isinstance(overrides, str) else canonical_overrides(overrides,
                                                                             exclude_keys)
    if not text:
        return ""
    return "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def model_arguments(cfg) -> tuple[dict, dict]:
    """(pool hyperparameters, other model keyword arguments) of a run config: what
    :func:`poolbench.models.build_model` takes besides the model and pool names."""
    def without_name(node) -> dict:
        return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
                if k != "name"}

    return without_name(cfg.pool), without_name(cfg.model)


def register_resolvers() -> None:
    for name, fn in (("poolbench_root", project_root), ("poolbench_suffix", override_suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
