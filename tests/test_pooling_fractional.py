"""fractional_max: Graham's pseudo-random windows where they exist, a ValueError where not.

At a ratio of exactly 2 (every 2x2/2 pool on an even size, i.e. every pool of the grid's
models on 32 and 64 px images) PyTorch's window sequence has no freedom left and fractional
max pooling is max pooling. The oracles here are PyTorch's own draws (which window starts
occur over many values of u) and a per-window max computed in Python from PyTorch's
formula for the starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from poolbench.models import build_model
from poolbench.pooling import create_pool
from poolbench.pooling.fractional import fixed_window_starts

ROOT = Path(__file__).resolve().parents[1]
TINY = 8  # model width


def formula_starts(n: int, k: int, m: int, u: float) -> list[int]:
    """PyTorch's window starts along a side (aten's generate_intervals), in float64."""
    if m == 1:
        return [n - k]
    a = (n - k) / (m - 1)
    return [int((i + u) * a) - int(u * a) for i in range(m - 1)] + [n - k]


def drawn_starts(n: int, k: int, m: int, draws: int = 64) -> set[tuple[int, ...]]:
    """The window starts F.fractional_max_pool2d uses along a width of ``n`` cells, over
    ``draws`` values of u spread over [0, 1): on an increasing ramp each output is the last
    cell of its window."""
    ramp = torch.arange(n, dtype=torch.float64).expand(1, draws, k, n)
    u = torch.arange(draws, dtype=torch.float64) / draws
    samples = torch.stack([u, torch.zeros_like(u)], -1)[None]  # [..., 0]: the width's u
    y = F.fractional_max_pool2d(ramp, k, output_size=(1, m), _random_samples=samples)
    return {tuple(int(v) - (k - 1) for v in row) for row in y[0, :, 0]}


def reference(x: torch.Tensor, k: tuple[int, int], starts_h, starts_w) -> torch.Tensor:
    """Max over the windows at the given starts (every plane the same windows)."""
    rows = torch.tensor(starts_h)[:, None] + torch.arange(k[0])  # (Ho, kh)
    cols = torch.tensor(starts_w)[:, None] + torch.arange(k[1])  # (Wo, kw)
    win = x[..., rows, :][..., cols]  # (N, C, Ho, kh, Wo, kw)
    return win.amax(dim=(-3, -1))


# (kernel, stride, padding, ceil_mode, (H, W)) where the windows are random on both sides
WORKING = [
    pytest.param(2, 2, 0, False, (13, 15), id="2x2s2_13x15"),
    pytest.param(2, 2, 0, True, (7, 9), id="2x2s2_ceil_7x9"),
    pytest.param(3, 2, 1, False, (16, 16), id="resnet_imagenet_stem_32px"),
    pytest.param(2, 2, 0, False, (33, 33), id="2x2s2_33"),
    pytest.param(3, 2, 1, False, (32, 32), id="resnet_imagenet_stem_64px"),
    pytest.param(3, 2, 1, False, (112, 112), id="resnet_imagenet_stem_224px"),
]
# (kernel, stride, padding, (H, W), computes max pooling itself)
REFUSED = [
    pytest.param(2, 2, 0, (32, 32), True, id="vgg_pool1_32px"),
    pytest.param(2, 2, 0, (64, 64), True, id="vgg_pool1_64px"),
    pytest.param(2, 2, 0, (4, 4), True, id="vgg_pool4_32px"),
    pytest.param(2, 2, 0, (2, 2), True, id="vgg_pool5_32px_out1"),
    pytest.param(2, 2, 0, (6, 8), True, id="2x2s2_6x8"),
    pytest.param(2, 2, 0, (32, 33), False, id="one_side_fixed"),
    pytest.param(2, 2, 0, (5, 5), False, id="out2_step3"),
    pytest.param(3, 2, 1, (5, 5), False, id="3x3s2p1_5_step1"),
    pytest.param(3, 1, 1, (8, 8), False, id="stride1_too_small"),
]


# ---------------------------------------------------------------- when the windows are random

def test_fixed_window_starts_is_what_pytorch_draws():
    """Over every small side: fixed starts (the layer refuses) exactly where every draw of u
    gives the same windows, and those are the windows drawn."""
    for k in (1, 2, 3):
        for n in range(k, 21):
            for m in range(1, n - k + 2):  # PyTorch needs m + k - 1 <= n
                drawn = drawn_starts(n, k, m)
                fixed = fixed_window_starts(n, k, m)
                if fixed is None:
                    assert len(drawn) > 1, (n, k, m)
                else:
                    assert drawn == {tuple(fixed)}, (n, k, m)


def test_the_formula_is_what_pytorch_draws():
    for n, k, m in ((13, 2, 6), (15, 2, 7), (16, 3, 8), (32, 3, 16)):
        assert drawn_starts(n, k, m) == {tuple(formula_starts(n, k, m, i / 64))
                                         for i in range(64)}


# ---------------------------------------------------------------- refused geometries

@pytest.mark.parametrize("k,s,p,hw,is_max", REFUSED)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_refuses_geometries_without_freedom(k, s, p, hw, is_max, train):
    layer = create_pool("fractional_max", 3, k, s, p).train(train)
    x = torch.randn(2, 3, *hw)
    with pytest.raises(ValueError) as info:
        layer(x)
    msg = str(info.value)
    assert f"cannot pool {hw[0]}x{hw[1]} maps" in msg
    assert "odd sizes >= 7" in msg and "model.stem=imagenet" in msg  # what works instead
    assert ("compute max pooling" in msg) == is_max
    with pytest.raises(ValueError, match="no freedom left"):
        layer.check_input_size(*hw)


@pytest.mark.parametrize("k,s,p,hw,is_max", [g for g in REFUSED if g.values[4]])
def test_the_refused_ratio_2_geometries_are_max_pooling_in_pytorch(k, s, p, hw, is_max):
    """Why they are refused: PyTorch's fractional max pooling there is max pooling, in
    every draw."""
    x = torch.randn(2, 3, *hw)
    out = create_pool("max", 3, k, s, p).geometry.output_size(*hw)
    for u in (0.0, 0.3, 0.99):
        samples = torch.full((2, 3, 2), u)
        y = F.fractional_max_pool2d(x, k, output_size=out, _random_samples=samples)
        assert torch.equal(y, F.max_pool2d(x, k, s, p))


# ---------------------------------------------------------------- working geometries

@pytest.mark.parametrize("k,s,p,ceil,hw", WORKING)
def test_eval_is_the_window_max_at_pytorchs_starts(k, s, p, ceil, hw):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    for u in (0.0, 0.5, 0.9):
        layer = create_pool("fractional_max", 3, k, s, p, ceil, eval_sample=u).double().eval()
        layer.check_input_size(*hw)
        (ho, wo) = layer.geometry.output_size(*hw)
        expected = reference(x, (k, k), formula_starts(hw[0], k, ho, u),
                             formula_starts(hw[1], k, wo, u))
        assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("k,s,p,ceil,hw", WORKING[:3])
def test_train_is_a_window_max_at_some_drawn_starts(k, s, p, ceil, hw):
    """Every plane of a training output is the window max at one of the possible draws."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    layer = create_pool("fractional_max", 3, k, s, p, ceil).double().train()
    ho, wo = layer.geometry.output_size(*hw)
    y = layer(x)
    options_h = {tuple(formula_starts(hw[0], k, ho, i / 256)) for i in range(256)}
    options_w = {tuple(formula_starts(hw[1], k, wo, i / 256)) for i in range(256)}
    candidates = torch.stack([reference(x, (k, k), sh, sw)
                              for sh in options_h for sw in options_w])  # (S, N, C, Ho, Wo)
    matches = (candidates == y).flatten(-2).all(-1)  # (S, N, C)
    assert matches.any(0).all()


@pytest.mark.parametrize("k,s,p,ceil,hw", WORKING)
def test_random_in_training_deterministic_in_eval_and_not_max_pooling(k, s, p, ceil, hw):
    torch.manual_seed(0)
    x = torch.randn(4, 3, *hw)
    a = create_pool("fractional_max", 3, k, s, p, ceil)
    b = create_pool("fractional_max", 3, k, s, p, ceil)
    maxpool = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
    assert not torch.equal(a(x), a(x)), "two training draws gave the same output"
    assert not torch.equal(a(x), maxpool)
    a.eval()
    b.eval()
    assert torch.equal(a(x), a(x)) and torch.equal(a(x), b(x))


# ---------------------------------------------------------------- in the grid's models

@pytest.mark.parametrize("model", ["vgg16", "resnet18"])
def test_grid_models_at_32px_are_not_max_pooling_under_grahams_name(model):
    """The issue's test: at 32 px, fractional_max either differs from max pooling in
    training mode (same weights) or refuses to run."""
    torch.manual_seed(0)
    frac = build_model(model, 10, pool="fractional_max", width=TINY)
    ref = build_model(model, 10, pool="max", width=TINY)
    ref.load_state_dict(frac.state_dict())
    x = torch.randn(4, 3, 32, 32)
    try:
        y = frac.train()(x)
    except ValueError as e:
        assert "fractional_max cannot pool" in str(e)
        return
    assert not torch.equal(y, ref.train()(x))


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("model,layer,kwargs", [
    ("vgg16", "features.pool1", {}),
    ("vgg16", "features.pool5", {"pool_positions": [4]}),
    ("resnet18", "maxpool", {"stem": "paper"}),
])
def test_grid_models_refuse_fractional_max(model, layer, kwargs, size):
    with pytest.raises(ValueError, match=f"^{layer}, which gets .* from {size}x{size} "
                                         "images: fractional_max cannot pool .* max pooling"):
        build_model(model, 10, pool="fractional_max", width=TINY, input_size=size, **kwargs)
    # built without the image size, the first forward pass refuses, in either mode
    net = build_model(model, 10, pool="fractional_max", width=TINY, **kwargs)
    for train in (True, False):
        with pytest.raises(ValueError, match="fractional_max cannot pool"):
            net.train(train)(torch.randn(2, 3, size, size))


@pytest.mark.parametrize("size", [32, 64])
def test_resnet18_imagenet_stem_runs_graham_fractional_max(size):
    torch.manual_seed(0)
    frac = build_model("resnet18", 10, pool="fractional_max", stem="imagenet", width=TINY,
                       input_size=size)
    ref = build_model("resnet18", 10, pool="max", stem="imagenet", width=TINY)
    ref.load_state_dict(frac.state_dict())
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        frac.train(), ref.train()
        first, second = frac(x), frac(x)
        assert not torch.equal(first, second)
        assert not torch.equal(first, ref(x))
        frac.eval()
        assert torch.equal(frac(x), frac(x))


def test_poolbench_train_fails_at_once_and_records_the_failure(tmp_path):
    """At 32 px the run fails at build time (before reading any data: there is none here)
    with the reason, and is recorded as failed, not trained as max pooling."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "poolbench.train", "pool=fractional_max",
         f"data.root={tmp_path / 'no-data'}", f"paths.outputs={out}",
         "logger.wandb.enabled=false", "model.width=8"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    assert proc.returncode != 0
    assert "features.pool1, which gets 32x32 maps from 32x32 images: fractional_max cannot " \
        "pool" in proc.stderr
    (results,) = out.glob("default/cifar100/vgg16/fractional_max/seed=0*/results.json")
    res = json.loads(results.read_text())
    assert res["status"] == "failed" and "compute max pooling" in res["error"]
