"""reproduce_results.sh end to end: a two-run slice of the smoke grid, then idempotence,
--dry-run and bad arguments; (slow) the smoke's two side-by-side halves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "reproduce_results.sh"
# Two runs of the smoke grid: max and tmaxavg, one model, one dataset, one seed. Tiny
# ImageNet's smoke runs are the short ones (CIFAR-100's train long enough to learn).
SLICE = ["data=tinyimagenet", "model=resnet18", "seed=0", "pool=max,tmaxavg"]


def reproduce(outputs: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "POOLBENCH_OUTPUTS": str(outputs), "WANDB_MODE": "offline"}
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"reproduce_results.sh {' '.join(args)} failed "
                             f"({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def smoke_slice(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("outputs")
    first = reproduce(outputs, "--smoke", *SLICE)
    return outputs, first


def test_smoke_slice_trains_reports_and_prints_progress(smoke_slice):
    outputs, proc = smoke_slice
    out = proc.stdout + proc.stderr
    assert "== smoke: 2 runs: 2 missing" in out
    assert "[poolbench] run 1/2: " in out and "[poolbench] run 2/2: " in out
    assert "== smoke: 2 runs: 2 done" in out and "== smoke: trained in " in out
    for pool in ("max", "tmaxavg"):
        assert (outputs / "smoke/tinyimagenet/resnet18" / pool / "seed=0/results.json").exists()
    report = outputs / "smoke" / "report"
    assert (report / "report.md").exists()
    assert f"tables and figures are under {outputs}/smoke/report/" in out


def test_rerun_skips_finished_runs(smoke_slice):
    outputs, _ = smoke_slice
    before = {p: p.stat().st_mtime_ns for p in outputs.rglob("results.json")}
    out = reproduce(outputs, "--smoke", *SLICE).stdout
    assert out.count("skipping finished run") == 2
    assert out.count(" is up to date (") == 2  # the fixture datasets are kept, not rewritten
    assert {p: p.stat().st_mtime_ns for p in outputs.rglob("results.json")} == before


def test_dry_run_lists_status_and_trains_nothing(smoke_slice, tmp_path):
    outputs, _ = smoke_slice
    out = reproduce(outputs, "--smoke", "--dry-run", *SLICE).stdout
    lines = [ln for ln in out.splitlines() if "seed=0" in ln and "/smoke/" in ln]
    assert len(lines) == 2 and all(" done " in ln for ln in lines), out
    # A fresh output directory: everything missing, and still nothing trained.
    out = reproduce(tmp_path, "--smoke", "--dry-run", *SLICE).stdout
    assert "2 runs: 2 missing" in out
    assert not list(tmp_path.rglob("results.json"))


def test_bad_arguments_name_the_choices(tmp_path):
    proc = reproduce(tmp_path, "--launcher", "nosuch", check=False)
    assert proc.returncode == 2
    assert "nosuch" in proc.stderr and "slurm" in proc.stderr and "local_cluster" in proc.stderr
    proc = reproduce(tmp_path, "--frobnicate", check=False)
    assert proc.returncode == 2 and "--frobnicate" in proc.stderr
    assert "--smoke" in reproduce(tmp_path, "--help").stdout


@pytest.mark.slow
def test_smoke_without_a_pool_override_trains_two_halves_side_by_side(tmp_path):
    # Every method of the smoke grid, one model, dataset and seed, one short epoch each (the
    # budget overrides change the runs' hash, not which runs there are).
    short = ["data=tinyimagenet", "model=resnet18", "seed=0", "trainer.max_epochs=1",
             "trainer.limit_train_batches=1"]
    out = reproduce(tmp_path, "--smoke", *short).stdout
    assert "== smoke: 8 runs: 8 missing" in out and "== smoke: 8 runs: 8 done" in out, out
    for half in (1, 2):  # each half trains 4 of the 8 methods and numbers its runs i/4
        assert f"[{half}/2] [poolbench] run 4/4: " in out, out
        assert f"[{half}/2] [poolbench] run 5/" not in out, out
    done = {p.parents[1].name for p in (tmp_path / "smoke").rglob("results.json")}
    assert len(done) == 8, done
