"""Every pooling method against a naive per-window reference of its formula.

The references (tests/conftest.py) enumerate each window's real cells in Python and reduce
them in float64, so they share no code with the library's unfold/padding machinery.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from timm.layers import BlurPool2d
from torch.nn import functional as F

import pooling_contract as contract
from poolbench.pooling import available_pools, create_pool

# (kernel, stride, padding, ceil_mode, (H, W)): VGG, ResNet, ceil mode, odd and
# rectangular windows, overlapping stride-1 windows, padding on a 2x2 window.
GEOMETRIES = [
    pytest.param(2, 2, 0, False, (6, 8), id="vgg_2x2s2"),
    pytest.param(2, 2, 0, True, (7, 9), id="2x2s2_ceil_odd"),
    pytest.param(3, 2, 1, False, (7, 8), id="resnet_3x3s2p1"),
    pytest.param(3, 2, 1, True, (8, 7), id="3x3s2p1_ceil"),
    pytest.param(3, 3, 0, True, (7, 8), id="3x3s3_ceil"),
    pytest.param((2, 3), (1, 2), (1, 1), False, (5, 7), id="rect_2x3s12p1"),
    pytest.param(3, 1, 1, False, (5, 6), id="3x3s1p1"),
    pytest.param(2, 2, 1, True, (5, 5), id="2x2s2p1_ceil"),
]


def window(kernel):
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    return k[0] * k[1]


def make_x(shape=(2, 3), hw=(7, 8), scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, *hw, generator=g, dtype=torch.float64) * scale


def build(name, k, s, pad, ceil, channels=3, **hp):
    return create_pool(name, channels, k, s, pad, ceil, **hp).double().eval()


def assert_close(y, r, **tol):
    assert y.shape == r.shape
    torch.testing.assert_close(y, r.to(y.dtype), **tol)


# ---------------------------------------------------------------- window statistics


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_max_and_avg(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw)
    for name, fn in (("max", ref.ref_max), ("avg", ref.ref_mean)):
        y = build(name, k, s, p, ceil)(x)
        assert_close(y, ref.window_reduce(x, fn, k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
@pytest.mark.parametrize("topk", [1, 2, 3])
def test_tmaxavg(ref, k, s, p, ceil, hw, topk):
    x = make_x(hw=hw, seed=topk)
    T = 0.8  # about half of the windows' maxima are below it
    y = build("tmaxavg", k, s, p, ceil, topk=topk, threshold=T)(x)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    t = ref.window_reduce(x, ref.ref_topk_mean(topk), k, s, p, ceil)
    expected = torch.where(m >= T, m, t)
    assert (m >= T).any() and (m < T).any(), "both branches must be exercised"
    assert_close(y, expected)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_topk_full_window_with_padding_is_the_real_cell_mean(ref, k, s, p, ceil, hw):
    """K = window size and T = +inf: the mean of the real cells, also where padding cuts in."""
    x = make_x(hw=hw, seed=5) - 3.0  # negative: zeros leaking from padding would show
    y = build("tmaxavg", k, s, p, ceil, topk=window(k), threshold=math.inf)(x)
    assert_close(y, ref.window_reduce(x, ref.ref_mean, k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
@pytest.mark.parametrize("name", ["soft_tmaxavg", "learnable_t"])
def test_soft_tmaxavg_and_learnable_t(ref, k, s, p, ceil, hw, name):
    x = make_x(hw=hw, seed=1)
    topk, tau = 2, 0.3
    layer = build(name, k, s, p, ceil, topk=topk, threshold=0.4, temperature=tau)
    T = torch.full((1, 3, 1, 1), 0.4, dtype=torch.float64)
    if name == "learnable_t":
        with torch.no_grad():
            layer.t.copy_(torch.tensor([-0.5, 0.4, 1.2]))
        T = torch.tensor([-0.5, 0.4, 1.2], dtype=torch.float64).view(1, 3, 1, 1)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    t = ref.window_reduce(x, ref.ref_topk_mean(topk), k, s, p, ceil)
    a = torch.sigmoid((m - T) / tau)
    assert_close(layer(x), a * m + (1 - a) * t)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_channel_adaptive(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=2)
    layer = build("channel_adaptive", k, s, p, ceil)
    logit = torch.tensor([-1.5, 0.3, 2.0], dtype=torch.float64)
    with torch.no_grad():
        layer.logit.copy_(logit)
    lam = torch.sigmoid(logit).view(1, 3, 1, 1)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    a = ref.window_reduce(x, ref.ref_mean, k, s, p, ceil)
    assert_close(layer(x), lam * m + (1 - lam) * a)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
@pytest.mark.parametrize("gate", ["dense", "depthwise"])
def test_gated(ref, k, s, p, ceil, hw, gate):
    x = make_x(hw=hw, seed=3)
    layer = build("gated", k, s, p, ceil, gate=gate)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    w, b = layer.weight.detach(), layer.bias.detach()
    if gate == "dense":
        z = ref.conv1x1(x, w, b)
    else:
        z = w.view(1, 3, 1, 1) * x + b.view(1, 3, 1, 1)
    G = ref.window_reduce(torch.sigmoid(z), ref.ref_mean, k, s, p, ceil)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    a = ref.window_reduce(x, ref.ref_mean, k, s, p, ceil)
    assert_close(layer(x), G * m + (1 - G) * a)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_attention(ref, k, s, p, ceil, hw):
    x = make_x(shape=(2, 4), hw=hw, seed=4)
    layer = build("attention", k, s, p, ceil, channels=4, reduction=2)
    r, e = layer.reduce, layer.expand
    assert r.out_channels == 2 and e.in_channels == 2
    A = torch.sigmoid(ref.conv1x1(F.relu(ref.conv1x1(x, r.weight, r.bias)), e.weight, e.bias))
    num = ref.window_reduce(x * A, ref.ref_mean, k, s, p, ceil)
    den = ref.window_reduce(A, ref.ref_mean, k, s, p, ceil) + layer.eps
    assert_close(layer(x).detach(), (num / den).detach())


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_stochastic_mix_eval(ref, k, s, p, ceil, hw, per_channel):
    x = make_x(hw=hw, seed=5)
    layer = build("stochastic_mix", k, s, p, ceil, per_channel=per_channel)
    theta = torch.tensor([0.7, -1.1, 2.5] if per_channel else [0.7], dtype=torch.float64)
    with torch.no_grad():
        layer.theta.copy_(theta)
    lam = torch.sigmoid(theta).view(1, -1, 1, 1)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    a = ref.window_reduce(x, ref.ref_mean, k, s, p, ceil)
    assert_close(layer(x), lam * m + (1 - lam) * a)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
@pytest.mark.parametrize("p_max", [0.0, 0.3, 1.0])
def test_mixed_eval_is_the_expectation(ref, k, s, p, ceil, hw, p_max):
    x = make_x(hw=hw, seed=6)
    y = build("mixed", k, s, p, ceil, p_max=p_max)(x)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    a = ref.window_reduce(x, ref.ref_mean, k, s, p, ceil)
    assert_close(y, p_max * m + (1 - p_max) * a)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_softpool(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, scale=3.0, seed=7)
    y = build("softpool", k, s, p, ceil)(x)
    assert_close(y, ref.window_reduce(x, ref.ref_softpool, k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
@pytest.mark.parametrize("pw", [1.0, 2.0, 3.5])
def test_lp(ref, k, s, p, ceil, hw, pw):
    x = make_x(hw=hw, seed=8)
    y = build("lp", k, s, p, ceil, p=pw)(x)
    assert_close(y, ref.window_reduce(x, ref.ref_lp(pw), k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES[:4])
def test_lp_learnable_per_channel_p(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=9)
    layer = build("lp", k, s, p, ceil, p=2.0, learnable=True)
    pc = layer.p().detach().view(-1)
    torch.testing.assert_close(pc, torch.full((3,), 2.0, dtype=torch.float64))
    rho = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    with torch.no_grad():
        layer.rho.copy_(rho)
    p_ref = 1.0 + F.softplus(rho)
    assert_close(layer(x), ref.window_reduce(x, ref.ref_lp(p_ref), k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_stochastic_eval_is_the_expectation(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=10)
    x[0, 0] = -x[0, 0].abs() - 0.1  # a plane of all-negative windows: uniform weights there
    y = build("stochastic", k, s, p, ceil)(x)
    assert_close(y, ref.window_reduce(x, ref.ref_stochastic_expectation, k, s, p, ceil))


# ---------------------------------------------------------------- learned downsampling


@pytest.mark.parametrize("k,s,p,ceil,hw", [g for g in GEOMETRIES if not g.values[3]])
def test_strided_conv_equals_conv2d(k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=11)
    layer = build("strided_conv", k, s, p, ceil)
    c = layer.conv
    expected = F.conv2d(x, c.weight, c.bias, stride=s, padding=p)
    assert_close(layer(x).detach(), expected.detach())


@pytest.mark.parametrize("k,s,p,ceil,hw", [g for g in GEOMETRIES if g.values[3]])
def test_strided_conv_ceil_mode_zero_pads_bottom_right(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=12)
    layer = build("strided_conv", k, s, p, ceil)
    c = layer.conv
    ho, wo = ref.maxpool_out_hw(*hw, k, s, p, ceil)
    pp = ref.pair(p)
    big = F.pad(x, (pp[1], pp[1] + 8, pp[0], pp[0] + 8))  # zeros far past the overhang
    expected = F.conv2d(big, c.weight, c.bias, stride=s)[..., :ho, :wo]
    assert_close(layer(x).detach(), expected.detach())


BLUR_CASES = [
    pytest.param(2, 2, 0, (8, 8), 3, id="2x2s2_f3"),
    pytest.param(3, 2, 1, (8, 10), 3, id="3x3s2p1_f3"),
    pytest.param(3, 2, 1, (9, 7), 3, id="3x3s2p1_odd_f3"),
    pytest.param(2, 2, 0, (12, 12), 5, id="2x2s2_f5"),
    pytest.param(3, 2, 1, (12, 14), 4, id="3x3s2p1_f4"),
]


@pytest.mark.parametrize("k,s,p,hw,f", BLUR_CASES)
def test_blurpool_is_dense_max_then_timm_blurpool(ref, k, s, p, hw, f):
    x = make_x(hw=hw, seed=13)
    y = build("blurpool", k, s, p, False, filt_size=f)(x)
    expected = BlurPool2d(3, filt_size=f, stride=s).double()(F.max_pool2d(x, k, 1, p))
    # Shapes allow: timm's output is at least nn.MaxPool2d's (no edge replication needed);
    # an even filter gives one extra row/column, which the layer crops.
    ho, wo = ref.maxpool_out_hw(*hw, k, s, p)
    assert expected.shape[-2] >= ho and expected.shape[-1] >= wo
    assert_close(y, expected[..., :ho, :wo])


# fractional_max: tests/test_pooling_fractional.py (exact references at PyTorch's window
# starts; most GEOMETRIES above leave its windows no freedom, so it refuses them).


# ---------------------------------------------------------------- degenerate identities


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_tmaxavg_threshold_minus_inf_is_max(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=17) - 2.0
    y = build("tmaxavg", k, s, p, ceil, topk=2, threshold=-math.inf)(x)
    assert_close(y, ref.window_reduce(x, ref.ref_max, k, s, p, ceil), rtol=0, atol=0)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_tmaxavg_threshold_inf_full_k_is_avg(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=18) + 2.0
    y = build("tmaxavg", k, s, p, ceil, topk=window(k), threshold=math.inf)(x)
    assert_close(y, build("avg", k, s, p, ceil)(x))
    assert_close(y, ref.window_reduce(x, ref.ref_mean, k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_soft_tmaxavg_small_temperature_is_tmaxavg(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=31)
    T = 0.5
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    assert ((m - T).abs() > 1e-3).all()  # no window max within 1000 tau of T
    soft = build("soft_tmaxavg", k, s, p, ceil, topk=2, threshold=T, temperature=1e-6)
    hard = build("tmaxavg", k, s, p, ceil, topk=2, threshold=T)
    assert_close(soft(x), hard(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_channel_adaptive_extremes(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=19)
    layer = build("channel_adaptive", k, s, p, ceil)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    a = ref.window_reduce(x, ref.ref_mean, k, s, p, ceil)
    for logit, expected in ((60.0, m), (-60.0, a)):
        with torch.no_grad():
            layer.logit.fill_(logit)
        assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_softpool_of_constant_windows_is_the_constant(ref, k, s, p, ceil, hw):
    layer = build("softpool", k, s, p, ceil)
    for c in (-7.25, 0.0, 3.5, 250.0):
        x = torch.full((1, 3, *hw), c, dtype=torch.float64)
        assert_close(layer(x), torch.full_like(layer(x), c), rtol=1e-12, atol=1e-12)


def test_softpool_of_blockwise_constant_input():
    g = torch.Generator().manual_seed(20)
    small = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) * 10
    x = small.repeat_interleave(2, -2).repeat_interleave(2, -1)
    y = build("softpool", 2, 2, 0, False)(x)
    torch.testing.assert_close(y, small)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_softpool_tends_to_max_when_scaled_up(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=21)
    layer = build("softpool", k, s, p, ceil)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    # at scale 1 it is clearly not max (so the check below can fail)...
    assert (m - layer(x)).max() > 0.05
    # ... at scale 1000, m - Y <= (n - 1) * max_g g e^-g / 1000 < 3e-3 for n <= 9 cells
    y = layer(x * 1000) / 1000
    assert (y <= m + 1e-12).all()
    assert_close(y, m, rtol=0, atol=3e-3)


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES)
def test_lp_large_p_tends_to_max_abs(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=22)
    mabs = ref.window_reduce(x.abs(), ref.ref_max, k, s, p, ceil)
    counts = ref.window_reduce(torch.ones_like(x), lambda v: v.sum(-1), k, s, p, ceil)
    y = build("lp", k, s, p, ceil, p=32.0)(x)
    # (mean |x|^p)^(1/p) lies in [n^(-1/p) max|x|, max|x|]
    assert (y <= mabs * (1 + 1e-12)).all()
    assert (y >= mabs * counts ** (-1 / 32) * (1 - 1e-12)).all()
    assert_close(y, mabs, rtol=0.07, atol=0)
    y1 = build("lp", k, s, p, ceil, p=1.0)(x)
    assert_close(y1, ref.window_reduce(x.abs(), ref.ref_mean, k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", GEOMETRIES[:4])
def test_mixed_training_extremes(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=23)
    m = ref.window_reduce(x, ref.ref_max, k, s, p, ceil)
    a = ref.window_reduce(x, ref.ref_mean, k, s, p, ceil)
    for per in ("batch", "sample_channel"):
        for p_max, expected in ((1.0, m), (0.0, a)):
            layer = build("mixed", k, s, p, ceil, p_max=p_max, sample_per=per).train()
            for _ in range(3):
                assert_close(layer(x), expected)


# ---------------------------------------------------------------- padding never leaks


LEAK_METHODS = [
    "max", "avg", "tmaxavg", "soft_tmaxavg", "channel_adaptive", "learnable_t", "gated",
    "attention", "stochastic_mix", "softpool", "stochastic", "mixed",
]
PADDED = [g for g in GEOMETRIES if g.values[2] != 0 or g.values[3]]


LEAK_MODES = [(n, False) for n in LEAK_METHODS] + [
    (n, True) for n in ("stochastic", "stochastic_mix", "mixed")]  # train differs only here


@functools.lru_cache(maxsize=None)
def negative_input_and_bounds(ref, k, s, p, ceil, hw):
    x = -(make_x(hw=hw, seed=24).abs() + 0.5)
    return (x, ref.window_reduce(x, ref.ref_min, k, s, p, ceil),
            ref.window_reduce(x, ref.ref_max, k, s, p, ceil))


@pytest.mark.parametrize("k,s,p,ceil,hw", PADDED)
@pytest.mark.parametrize("name,train", LEAK_MODES,
                         ids=[f"{n}-{'train' if t else 'eval'}" for n, t in LEAK_MODES])
def test_padding_never_leaks_into_a_window_average(ref, name, train, k, s, p, ceil, hw):
    """Each of these is a weighted mean or a selection of the window's real cells, so on an
    all-negative input it must stay within [min, max] of the real cells: a padded 0 (or a
    padded -inf) taking part would push it above the max (or to -inf/NaN)."""
    x, lo, hi = negative_input_and_bounds(ref, k, s, p, ceil, hw)
    hp = contract.hparams_for(name, (k, k) if isinstance(k, int) else k)
    if name == "attention":
        # Y = avg(xA) / (avg(A) + eps) is a weighted mean only up to the factor
        # avg(A) / (avg(A) + eps); make that factor 1 to within 1e-12 here.
        hp = {"eps": 1e-12}
    layer = build(name, k, s, p, ceil, **hp).train(train)
    if name == "gated":
        with torch.no_grad():
            layer.weight.normal_()
    y = layer(x).detach()
    assert torch.isfinite(y).all()
    assert (y <= hi + 1e-9).all() and (y >= lo - 1e-9).all()


@pytest.mark.parametrize("k,s,p,ceil,hw", PADDED)
def test_padding_max_and_softpool_all_negative_exact(ref, k, s, p, ceil, hw):
    x = -(make_x(hw=hw, seed=25).abs() + 0.5)
    for name, fn in (("max", ref.ref_max), ("softpool", ref.ref_softpool),
                     ("avg", ref.ref_mean)):
        assert_close(build(name, k, s, p, ceil)(x), ref.window_reduce(x, fn, k, s, p, ceil))
    for topk in (2, 3):
        y = build("tmaxavg", k, s, p, ceil, topk=min(topk, window(k)), threshold=0.0)(x)
        expected = ref.window_reduce(x, ref.ref_topk_mean(min(topk, window(k))), k, s, p, ceil)
        assert_close(y, expected)


@pytest.mark.parametrize("k,s,p,ceil,hw", PADDED)
def test_avg_of_a_constant_map_is_constant_at_borders(k, s, p, ceil, hw):
    x = torch.full((1, 2, *hw), -3.25, dtype=torch.float64)
    for name in ("avg", "lp", "softpool", "channel_adaptive", "gated", "attention",
                 "stochastic", "stochastic_mix", "mixed"):
        hp = {"reduction": 1, "eps": 1e-12} if name == "attention" else {}
        y = build(name, k, s, p, ceil, channels=2, **hp)(x)
        expected = 3.25 if name == "lp" else -3.25
        assert_close(y.detach(), torch.full_like(y, expected), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k,s,p,ceil,hw", PADDED)
def test_lp_padding_does_not_dilute(ref, k, s, p, ceil, hw):
    x = make_x(hw=hw, seed=26)
    y = build("lp", k, s, p, ceil, p=2.0)(x)
    assert_close(y, ref.window_reduce(x, ref.ref_lp(2.0), k, s, p, ceil))


def test_lp_never_exceeds_the_window_max_abs_in_fp32():
    """Windows far below their plane's max: (|x| / max)^p lands in fp32's subnormal range,
    where clamping the mean to fp32's tiny used to return tiny^(1/p) * max > max|x|."""
    x = torch.full((1, 1, 4, 4), 0.06)
    x[0, 0, 0, 0] = 1.0
    y = create_pool("lp", 1, 2, p=32.0)(x)
    mabs = F.max_pool2d(x.abs(), 2)
    assert (y <= mabs * (1 + 1e-6)).all(), (y, mabs)


@pytest.mark.parametrize("name", available_pools())
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_fp32_agrees_with_fp64(name, scale):
    contract.check_fp32_agrees_with_fp64(name, scale)
