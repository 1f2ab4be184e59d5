"""Numerics: finite outputs and gradients in fp32 / bf16 / fp16 at large scales, SoftPool's
accuracy at scale, every learnable parameter learning, and gradcheck in float64."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

import pooling_contract as contract
from poolbench.pooling import available_pools, create_pool

METHODS = available_pools()
# training mode runs different code only for the random methods
MODES = contract.modes()


@pytest.mark.parametrize("precision", contract.PRECISIONS)
@pytest.mark.parametrize("name,train", MODES, ids=[contract.mode_id(m) for m in MODES])
def test_finite_outputs_and_gradients_at_scale(name, precision, train):
    contract.check_finite_at_scale(name, precision, train)


# ---------------------------------------------------------------- softpool accuracy at scale


@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4, 1e6])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_softpool_is_correct_at_scale_fp32(ref, scale, sign):
    """exp(x) overflows fp32 above ~88 (the official implementation returns NaN/inf there).
    When the window max dominates (gaps >> 1), SoftPool equals the max; in general it equals
    a stable-softmax float64 reference."""
    g = torch.Generator().manual_seed(1)
    x = sign * scale * torch.randn(2, 3, 8, 8, generator=g)
    layer = create_pool("softpool", 3, 2)
    y = layer(x)
    assert torch.isfinite(y).all()
    # where the runner-up is > 40 below the max, the other weights are < e^-40: Y == max
    top2 = ref.window_reduce(x, lambda v: v.topk(2, -1).values[..., 0] - v.topk(2, -1).values[
        ..., 1], 2)
    dominant = top2 > 40
    assert dominant.float().mean() > (0.5 if scale >= 1e3 else 0.0)
    torch.testing.assert_close(y[dominant], F.max_pool2d(x, 2)[dominant], rtol=1e-6, atol=0)
    expected = ref.window_reduce(x.double(), ref.ref_softpool_stable, 2)
    torch.testing.assert_close(y.double(), expected, rtol=1e-6, atol=1e-6 * scale)


def test_softpool_at_scale_with_close_values_fp32(ref):
    """Large values whose gaps are O(1): not just the max; compare with float64 softmax."""
    g = torch.Generator().manual_seed(2)
    x = 1e4 + torch.randn(2, 3, 7, 7, generator=g)
    for geometry in ((2, 2, 0, False), (3, 2, 1, True)):
        y = create_pool("softpool", 3, *geometry)(x)
        expected = ref.window_reduce(x.double(), ref.ref_softpool_stable, *geometry)
        torch.testing.assert_close(y.double(), expected, rtol=0, atol=4e-3)  # fp32 ulp(1e4)
    # and the gradient is finite and sums to 1 over each non-overlapping window
    x = (1e4 * torch.randn(1, 2, 6, 6, generator=g)).requires_grad_()
    create_pool("softpool", 2, 2)(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(F.avg_pool2d(x.grad, 2) * 4, torch.ones(1, 2, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_softpool_at_scale_half(dtype):
    g = torch.Generator().manual_seed(3)
    x = (1e4 * torch.randn(2, 3, 8, 8, generator=g)).to(dtype)
    y = create_pool("softpool", 3, 2)(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, F.max_pool2d(x, 2), rtol=1e-2, atol=0)


# ---------------------------------------------------------------- every parameter learns


def learnable_layers():
    torch.manual_seed(0)
    return {
        "channel_adaptive": create_pool("channel_adaptive", 6, 3, 2, 1),
        "learnable_t": create_pool("learnable_t", 6, 3, 2, 1, topk=2, threshold=0.0,
                                   temperature=0.5),
        "gated_dense": create_pool("gated", 6, 3, 2, 1),
        "gated_depthwise": create_pool("gated", 6, 3, 2, 1, gate="depthwise"),
        "attention": create_pool("attention", 6, 3, 2, 1, reduction=2),
        "stochastic_mix": create_pool("stochastic_mix", 6, 3, 2, 1).train(),
        "stochastic_mix_per_channel": create_pool("stochastic_mix", 6, 3, 2, 1,
                                                  per_channel=True).train(),
        "lp": create_pool("lp", 6, 3, 2, 1, learnable=True),
        "strided_conv": create_pool("strided_conv", 6, 3, 2, 1),
    }


@pytest.mark.parametrize("key", list(learnable_layers()))
def test_every_learnable_parameter_gets_a_nonzero_gradient(key):
    layer = learnable_layers()[key]
    params = dict(layer.named_parameters())
    assert params, key
    torch.manual_seed(1)
    x = torch.randn(4, 6, 9, 9)
    y = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in params.items():
        assert p.grad is not None, f"{key}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all()
        # every element of the parameter receives gradient (per-channel ones included)
        assert (p.grad != 0).all(), f"{key}.{pname} has zero-gradient entries: {p.grad}"


def test_attention_both_convolutions_learn():
    layer = learnable_layers()["attention"]
    layer(torch.randn(2, 6, 9, 9)).square().sum().backward()
    for conv in (layer.reduce, layer.expand):
        assert conv.weight.grad.abs().sum() > 0 and conv.bias.grad.abs().sum() > 0


def test_every_method_with_parameters_is_covered_above():
    keys = learnable_layers()
    covered = {layer.name for layer in keys.values()}
    with_params = {n for n in METHODS
                   if list(create_pool(n, 4, **contract.RICH_HPARAMS.get(n, {})).parameters())}
    assert with_params == covered


def test_learnable_t_threshold_gradient_matches_formula():
    """dY/dT_c = -(m - t_K) a (1 - a) / tau, summed over the channel's windows."""
    torch.manual_seed(2)
    layer = create_pool("learnable_t", 2, 2, topk=2, threshold=0.1, temperature=0.5).double()
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    layer(x).sum().backward()
    m = F.max_pool2d(x, 2)
    w = x.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    t = w.topk(2, -1).values.mean(-1)
    a = torch.sigmoid((m - 0.1) / 0.5)
    expected = (-(m - t) * a * (1 - a) / 0.5).sum((0, 2, 3))
    torch.testing.assert_close(layer.t.grad, expected)


# ---------------------------------------------------------------- gradcheck (float64)


def away_from(x, values=(0.0,), gap=0.05):
    """Push entries at least ``gap`` away from each of ``values`` (kinks, thresholds) with a
    strictly increasing map, so that distinct entries stay distinct (no ties for max)."""
    for v in sorted(values, reverse=True):
        x = x + gap * torch.sign(x - v)
    return x


GRADCHECK_CASES = {
    "max": {},
    "avg": {},
    "tmaxavg": {"topk": 3, "threshold": 0.3},
    "soft_tmaxavg": {"topk": 2, "threshold": 0.3, "temperature": 0.5},
    "channel_adaptive": {},
    "learnable_t": {"topk": 2, "threshold": 0.3, "temperature": 0.5},
    "gated": {},
    "gated_depthwise": {"gate": "depthwise"},
    "attention": {"reduction": 2},
    "softpool": {},
    "lp": {"p": 2.5},
    "lp_learnable": {"p": 2.5, "learnable": True},
    "strided_conv": {},
    "blurpool": {},
    "stochastic": {},
    "stochastic_mix": {"per_channel": True},
}


@pytest.mark.parametrize("fast", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["fast", "full"])
@pytest.mark.parametrize("geometry", [(2, 2, 0, False), (3, 2, 1, True)],
                         ids=["2x2s2", "3x3s2p1_ceil"])
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_float64(case, geometry, fast):
    name = case.split("_depthwise")[0].split("_learnable")[0]
    torch.manual_seed(3)
    layer = create_pool(name, 3, *geometry, **GRADCHECK_CASES[case]).double().eval()
    with torch.no_grad():  # move learnable parameters away from their symmetric init
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    # away from kinks: relu/clamp at 0 (stochastic, lp's |x|), the hard threshold of tmaxavg
    x = away_from(x, (0.0, 0.3))
    x.requires_grad_()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]

    def fn(x, *ps):
        return functional_call(layer, dict(zip(names, ps)), (x,))

    # fast mode compares v^T J u for random u, v (one backward) instead of every entry of J
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4,
                                    fast_mode=fast)


def test_gradcheck_is_able_to_fail():
    """A deliberately wrong backward must be caught by the same gradcheck settings."""
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return F.max_pool2d(x, 2)

        @staticmethod
        def backward(ctx, g):
            return F.interpolate(g, scale_factor=2) / 4  # the avg-pool gradient

    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(Wrong.apply, (x,), raise_exception=False,
                                        fast_mode=True)
