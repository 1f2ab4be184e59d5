"""Small helpers: atomic file writes and provenance (git commit, versions, device)."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", perms: int | None = None, **open_kwargs):
    """Write ``path`` so readers see the old file or the new one, never half of it.

    ``perms``: the new file's permission bits (default: as ``open()`` would create it).

    Yields a file open on a temporary file beside ``path`` (same directory, so same file
    system); on success it is flushed, fsynced and moved onto ``path`` with ``os.replace``
    (atomic), and the directory is fsynced so the rename survives a crash; on an error it
    is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # as open() would create it, unless told (mkstemp makes it 0600)
        os.fchmod(fd, (0o666 & ~_UMASK) if perms is None else perms)
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: str | Path) -> None:
    """fsync ``directory``, so a rename in it survives a crash (where the system allows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync directories; the rename itself is atomic
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    with atomic_file(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path):
    """The parsed file, or None if it is missing or unreadable (e.g. truncated by a kill)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=None)
def git_commit(root: str | Path) -> str | None:
    """HEAD of the checkout at ``root`` (suffixed '-dirty' with uncommitted changes), when
    this process first asked: the code it runs is what it imported then, and a sweep's later
    runs do not pay for the two git calls again."""
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=None)
def _package_versions() -> tuple[tuple[str, str | None], ...]:
    out = {"python": platform.python_version()}
    for pkg in ("poolbench", "torch", "torchvision", "lightning", "torchmetrics", "hydra-core",
                "omegaconf", "timm", "wandb", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return tuple(out.items())


def package_versions() -> dict[str, str | None]:
    """The versions of Python and the packages a run depends on (looked up once a process)."""
    return dict(_package_versions())


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """When this process started (Unix time): from ``/proc`` on Linux, else when this module
    was first imported (which misses the interpreter's own start-up)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        # Field 22 (starttime, clock ticks after boot), counted after the ")" that ends comm;
        # /proc/uptime (10 ms resolution) gives the same clock now.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORTED_AT
