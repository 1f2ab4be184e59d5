"""The feature-preservation benchmark (poolbench-bench preserve): metrics on known cases and a
quick run that writes its tables and figure."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from poolbench.bench import cli
from poolbench.bench import preserve as P
from poolbench.pooling import available_pools


# ---- metrics on known cases ----------------------------------------------------------------

def test_psnr_of_an_image_with_itself_is_the_documented_cap():
    img = np.random.default_rng(0).random((20, 30, 3))
    assert P.psnr(img, img) == P.PSNR_CAP_DB == 100.0
    assert P.psnr(img, img, cap_db=math.inf) == math.inf


def test_psnr_matches_a_hand_computed_mse():
    a = np.zeros((10, 10, 3))
    assert P.psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01 -> 10 log10(100)
    b = a.copy()
    b[:5] = 0.2  # half the pixels off by 0.2: MSE = 0.5 * 0.04 = 0.02
    assert P.psnr(a, b) == pytest.approx(10 * math.log10(50), abs=1e-9)
    assert P.psnr(a, b, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.02), abs=1e-9)
    with pytest.raises(ValueError, match="shapes differ"):
        P.psnr(a, a[:5])


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    assert P.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(img + 0.2 * rng.standard_normal(img.shape), 0, 1)
    assert P.ssim(img, noisy) < 0.9


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("resize", P.RESIZE_MODES)
def test_avg_pooling_a_constant_image_loses_nothing(k, resize):
    img = torch.full((3, 30, 60), 0.37)
    _, restored = P.pool_and_restore(img, P.make_layer("avg", 3, k, seed=0), resize)
    assert restored.shape == img.shape
    ref, out = P._hwc(img), P._hwc(restored)
    assert P.psnr(ref, out) == P.PSNR_CAP_DB
    assert P.ssim(ref, out) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_max_and_avg_agree_on_a_constant_image(k):
    img = torch.full((1, 30, 30), 0.8)
    outs = [P.pool_and_restore(img, P.make_layer(m, 1, k, seed=0))[1] for m in ("max", "avg")]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)
    assert P.psnr(P._hwc(outs[0]), P._hwc(outs[1])) == P.PSNR_CAP_DB


def test_every_window_statistic_keeps_a_constant_image():
    """All methods but the (randomly initialised) strided convolution map a constant to itself;
    fractional_max refuses stride k on a multiple of k (its windows would be max pooling's)."""
    img = torch.full((3, 30, 30), 0.6)
    for method in available_pools():
        layer = P.make_layer(method, 3, 3, seed=0)
        if method == "fractional_max":
            with pytest.raises(ValueError, match="compute max pooling"):
                P.pool_and_restore(img, layer)
            continue
        if method == "strided_conv":
            continue
        _, restored = P.pool_and_restore(img, layer)
        assert P.psnr(P._hwc(img), P._hwc(restored)) > 60, method


def test_bilinear_restore_of_a_linear_ramp_is_exact_inside():
    """Pooled cells sit at the window centres (align_corners=False): a ramp comes back exact
    away from the borders, which the half-pixel convention clamps."""
    ramp = torch.arange(30, dtype=torch.float32).div(30).expand(1, 30, 30).contiguous()
    _, restored = P.pool_and_restore(ramp, P.make_layer("avg", 1, 3, seed=0), "bilinear")
    torch.testing.assert_close(restored[..., 2:-2], ramp[..., 2:-2], rtol=0, atol=1e-6)


def test_images_ship_with_the_installed_packages():
    for name in P.IMAGES:
        img = P.load_image(name)
        assert img.dtype == torch.float32 and img.ndim == 3 and img.shape[0] in (1, 3), name
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0, name
        assert min(img.shape[1:]) >= 200, name
    cropped = P.prepare_image("astronaut", (2, 3, 5))
    assert cropped.shape == (3, 510, 510)
    with pytest.raises(ValueError, match="unknown image"):
        P.load_image("lena")


def test_method_kinds():
    assert P.method_kind("max") == "parameter-free"
    assert P.method_kind("channel_adaptive") == "learned (init)"
    assert P.method_kind("mixed") == "parameter-free, stochastic (eval)"
    assert P.method_kind("fractional_max") == "parameter-free, stochastic (eval)"
    assert P.method_kind("stochastic_mix") == "learned (init), stochastic (eval)"


# ---- the command -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("preserve")
    assert cli.main(["preserve", "--quick", "--out", str(out)]) == 0
    with open(out / "preserve.csv") as fh:
        summary = list(csv.DictReader(fh))
    with open(out / "preserve_per_image.csv") as fh:
        per_image = list(csv.DictReader(fh))
    return out, summary, per_image


def test_quick_run_writes_tables_and_figure(quick_run):
    out, summary, per_image = quick_run
    methods = [m for m in available_pools() if m != "fractional_max"]  # refuses: next test
    assert {(r["method"], int(r["k"])) for r in summary} == {(m, k) for m in methods
                                                              for k in (2, 3, 5)}
    assert len(per_image) == len(P.QUICK_IMAGES) * len(methods) * 3
    for r in summary:
        assert int(r["n_images"]) == len(P.QUICK_IMAGES)
        assert -1 <= float(r["ssim_mean"]) <= 1
        assert 0 < float(r["psnr_mean"]) <= P.PSNR_CAP_DB
    png = out / "preserve_crops.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    md = (out / "preserve.md").read_text()
    assert md.startswith("# Feature preservation")
    assert "Command: `poolbench-bench preserve --quick" in md and "Date: " in md
    assert "![zoomed crops](preserve_crops.png)" in md
    for m in methods:
        assert f"| {m} |" in md


def test_fractional_max_is_skipped_with_the_reason(quick_run):
    """Stride k on images cropped to multiples of k: its windows would be max pooling's own,
    so it has no row (it used to score exactly as max), and the report says why."""
    out, summary, per_image = quick_run
    assert not [r for r in summary + per_image if r["method"] == "fractional_max"]
    md = (out / "preserve.md").read_text()
    assert "Skipped: fractional_max at k = 2, 3, 5, which it refuses (first refusal: " \
        "fractional_max cannot pool" in md
    assert "compute max pooling" in md and "| fractional_max |" not in md


def test_quick_run_orders_methods_as_expected(quick_run):
    """Sanity on real pixels: avg beats max (it is the L2-best constant per window), and the
    max/avg blends lie between them; larger windows lose more."""
    _, summary, _ = quick_run
    by = {(r["method"], int(r["k"])): float(r["psnr_mean"]) for r in summary}
    for k in (2, 3, 5):
        assert by[("avg", k)] > by[("mixed", k)] > by[("max", k)]
    for m in ("max", "avg", "softpool"):
        assert by[(m, 2)] > by[(m, 3)] > by[(m, 5)]


def test_methods_that_compute_the_same_function_are_grouped(quick_run):
    """At initialisation / in eval mode every 0.5 max/avg blend is one function, and
    learnable_t is soft_tmaxavg: the report says so instead of listing them as distinct."""
    out, _, per_image = quick_run
    rows = [{**r, "k": int(r["k"]), "ssim": float(r["ssim"]), "psnr": float(r["psnr"])}
            for r in per_image]
    groups = [set(g) for g in P.identical_groups(rows)]
    assert any({"channel_adaptive", "gated", "stochastic_mix", "mixed"} <= g for g in groups)
    assert any({"soft_tmaxavg", "learnable_t"} <= g for g in groups)
    assert not any({"max", "avg"} <= g for g in groups)
    md = (out / "preserve.md").read_text()
    assert "so the same function here: " in md and "learnable_t starts as soft_tmaxavg" in md


def test_no_figure_writes_the_tables_only(tmp_path):
    assert cli.main(["preserve", "--quick", "--methods", "max", "avg", "--kernels", "2",
                     "--no-figure", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "preserve.md").exists() and not (tmp_path / "preserve_crops.png").exists()
