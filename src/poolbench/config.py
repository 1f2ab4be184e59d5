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


def override_suffix(override_dirname: str) -> str:
    """'' when no other overrides were given, else '-' + 8 hex digits of their hash.

    ``override_dirname`` is Hydra's sorted, comma-joined list of the overrides that are not
    part of the run's identity path (see hydra.job.config.override_dirname.exclude_keys).
    """
    if not override_dirname:
        return ""
    return "-" + hashlib.sha1(override_dirname.encode()).hexdigest()[:8]


def register_resolvers() -> None:
    for name, fn in (("poolbench_root", project_root), ("poolbench_suffix", override_suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
