"""The per-run terms of poolbench-bench gpu-hours besides the steps (gpu_hours.extras)."""

from __future__ import annotations

import pytest

from poolbench.bench import cli
from poolbench.bench import gpu_hours as G
from poolbench.bench.gpu_hours.extras import (
    CHECKPOINT_BYTES_PER_PARAM, CHECKPOINTS_PER_EPOCH, RunExtras, extra_seconds,
)

GRID = ["model.width=8", "seed=0", "pool=max", "data=cifar100", "model=vgg16"]
CACHE: dict = {}


def test_extra_seconds_from_its_parts():
    extras = RunExtras(framework_ms=0.5, checkpoint_mb_s=100.0, startup_s=7.0, compile_s=30.0)
    t = extra_seconds(train_steps=2_000, epochs=10, params=3_000_000, compiled=False,
                      extras=extras)
    assert t["framework_s"] == pytest.approx(2_000 * 0.5e-3)
    mb = 3_000_000 * CHECKPOINT_BYTES_PER_PARAM / 1e6
    assert t["checkpoint_s"] == pytest.approx(10 * CHECKPOINTS_PER_EPOCH * mb / 100.0)
    assert t["startup_s"] == 7.0
    compiled = extra_seconds(2_000, 10, 3_000_000, True, extras)
    assert compiled["startup_s"] == 7.0 + 30.0


def test_totals_include_the_extras_and_none_leaves_them_out():
    plain = G.gpu_hours("paper_grid", GRID, cache=CACHE)
    extras = RunExtras(framework_ms=1.0, checkpoint_mb_s=50.0, startup_s=100.0)
    withx = G.gpu_hours("paper_grid", GRID, cache=CACHE, extras=extras)
    (a,), (b,) = plain.rows, withx.rows
    assert "framework_h" not in a and b["steps_h"] == pytest.approx(a["total_h"])
    parts = b["framework_h"] + b["checkpoint_h"] + b["startup_h"]
    assert parts > 0
    for key in ("total_h", "total_h_lo", "total_h_hi", "total_h_gpu_only"):
        assert b[key] == pytest.approx(a[key] + parts)
    assert b["framework_h"] == pytest.approx(b["train_steps"] * 1e-3 / 3600)
    assert b["startup_h"] == pytest.approx(100.0 / 3600)
    compiled = G.gpu_hours("paper_grid", [*GRID, "compile=true"], cache=CACHE, extras=extras)
    assert compiled.rows[0]["startup_h"] == pytest.approx((100.0 + extras.compile_s) / 3600)


@pytest.mark.parametrize("flag, value, needle", [
    ("--framework-ms", "-1", "--framework-ms must be >= 0"),
    ("--checkpoint-mb-s", "0", "--checkpoint-mb-s must be > 0"),
    ("--startup-s", "-5", "--startup-s must be >= 0"),
])
def test_cli_rejects_bad_extras(flag, value, needle, capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["gpu-hours", "paper_grid", *GRID, flag, value, "--out", str(tmp_path)])
    assert needle in capsys.readouterr().err


def test_cli_report_says_which_terms_are_measured_and_assumed(tmp_path, capsys):
    cli.main(["gpu-hours", "paper_grid", *GRID, "--out", str(tmp_path)])
    md = (tmp_path / "gpu_hours.md").read_text()
    assert "Per-run terms besides the steps" in md
    assert "measured on CPU" in md and "assumed" in md
    assert "framework_h" in (tmp_path / "gpu_hours.csv").read_text().splitlines()[0]
