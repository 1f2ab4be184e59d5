"""requirements.lock: every dependency pinned exactly, installed by scripts/venv-run by default
(its stamp follows the lock), POOLBENCH_UNLOCKED=1 for pyproject.toml's ranges; slow: a fresh
virtualenv built from it has exactly its versions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=<>!~,]+)$")


def lock_pins(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} of a lock; every non-comment line must be ``name==version``."""
    pins = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{path.name}: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def declared() -> list[Requirement]:
    """pyproject.toml's dependencies and those of every extra (dev)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra_lines in project.get("optional-dependencies", {}).values():
        lines += extra_lines
    return [Requirement(line) for line in lines]


def test_lock_pins_every_declared_dependency_within_its_range():
    pins = lock_pins()
    reqs = declared()
    assert {"torch", "lightning", "wandb", "pytest", "hypothesis"} <= \
        {canonicalize_name(r.name) for r in reqs}
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock has no pin for {req} (scripts/lock-refresh)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {req}"


def test_lock_pins_what_the_declared_dependencies_need():
    """The lock is closed in this environment: each locked package's own requirements (from
    its installed metadata, when the installed version is the locked one) are locked too."""
    from importlib import metadata

    pins = lock_pins()
    checked = 0
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in pins, f"{name} needs {req}: not locked"
    if checked < len(pins) // 2:
        pytest.skip(f"this environment differs from the lock ({checked}/{len(pins)} match)")


def test_lock_pin_check_rejects_ranges_and_duplicates(tmp_path):
    bad = tmp_path / "bad.lock"
    bad.write_text("# header\ntorch>=2.2\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_pins(bad)
    bad.write_text("Torch==2.14.1\ntorch==2.14.1\n")
    with pytest.raises(AssertionError, match="pinned twice"):
        lock_pins(bad)


# ---------------------------------------------------------------------------------------------
# scripts/venv-run with a stand-in virtualenv whose python only records how it is called


@pytest.fixture
def fake_checkout(tmp_path):
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "venv-run", root / "scripts" / "venv-run")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "requirements.lock").write_text("torch==2.14.1\n")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/usr/bin/env bash\necho "$*" >> "$(dirname "$0")/../calls.log"\n')
    python.chmod(0o755)
    return root, tmp_path / "venv"


def venv_run(root, venv, **env):
    base = {k: v for k, v in os.environ.items() if k != "POOLBENCH_UNLOCKED"}
    proc = subprocess.run([str(root / "scripts" / "venv-run"), "true"], capture_output=True,
                          text=True, env={**base, "POOLBENCH_VENV": str(venv), **env})
    calls = (venv / "calls.log").read_text().splitlines() if (venv / "calls.log").exists() \
        else []
    return proc, [c for c in calls if "-e " in c]  # the poolbench installs


def test_venv_run_installs_from_the_lock_and_again_when_it_changes(fake_checkout):
    root, venv = fake_checkout
    proc, installs = venv_run(root, venv)
    assert proc.returncode == 0, proc.stderr
    assert installs == [f"-m pip install --quiet -c {root}/requirements.lock -e {root}[dev]"]
    _, installs = venv_run(root, venv)
    assert len(installs) == 1  # nothing changed: no reinstall
    (root / "requirements.lock").write_text("torch==2.14.0\n")
    _, installs = venv_run(root, venv)
    assert len(installs) == 2 and "-c " in installs[-1]
    _, installs = venv_run(root, venv, POOLBENCH_UNLOCKED="1")
    assert len(installs) == 3 and installs[-1] == f"-m pip install --quiet -e {root}[dev]"
    _, installs = venv_run(root, venv, POOLBENCH_UNLOCKED="0")  # 0: locked again
    assert len(installs) == 4 and "-c " in installs[-1]


def test_venv_run_without_a_lock_says_what_to_do(fake_checkout):
    root, venv = fake_checkout
    (root / "requirements.lock").unlink()
    proc, installs = venv_run(root, venv)
    assert proc.returncode == 2 and not installs
    assert "requirements.lock is missing" in proc.stderr and "POOLBENCH_UNLOCKED=1" in proc.stderr
    proc, installs = venv_run(root, venv, POOLBENCH_UNLOCKED="1")
    assert proc.returncode == 0 and len(installs) == 1


@pytest.mark.slow
def test_fresh_virtualenv_gets_exactly_the_locked_versions(tmp_path):
    """The real thing (minutes; needs the package index): scripts/venv-run builds a new
    virtualenv, whose every package is at the locked version."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("POOLBENCH_UNLOCKED", "PYTHONPATH")}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "venv-run"), "python", "-m", "pip", "freeze", "--all",
         "--exclude-editable"], capture_output=True, text=True, timeout=1800,
        env={**env, "POOLBENCH_VENV": str(venv)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    installed = {canonicalize_name(n): v for n, v in
                 (line.split("==") for line in proc.stdout.split() if "==" in line)}
    installed.pop("pip", None)
    assert installed == lock_pins()
