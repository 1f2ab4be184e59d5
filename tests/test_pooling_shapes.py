"""Output shapes equal nn.MaxPool2d's for every method and geometry; memory formats."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from poolbench.pooling import available_pools, create_pool

METHODS = available_pools()
TOPK_METHODS = ("tmaxavg", "soft_tmaxavg", "learnable_t")


def hparams_for(name, kernel):
    """Defaults, except topk, which must fit the window (default 3 > 2 cells of a 1x2)."""
    if name in TOPK_METHODS:
        return {"topk": min(3, kernel[0] * kernel[1])}
    return {}


@st.composite
def geometries(draw, square_stride=False):
    kh = draw(st.integers(1, 5))
    kw = draw(st.integers(1, 5))
    sh = draw(st.integers(1, 4))
    sw = sh if square_stride else draw(st.integers(1, 4))
    ph = draw(st.integers(0, kh // 2))
    pw = draw(st.integers(0, kw // 2))
    ceil = draw(st.booleans())
    h = draw(st.integers(max(1, kh - 2 * ph), 13))
    w = draw(st.integers(max(1, kw - 2 * pw), 13))
    n = draw(st.integers(1, 2))
    return (kh, kw), (sh, sw), (ph, pw), ceil, (n, h, w)


FIXED = [  # always run, whatever hypothesis draws: VGG, ResNet, GoogLeNet-style ceil mode
    ((2, 2), (2, 2), (0, 0), False, (2, 32, 32)),
    ((2, 2), (2, 2), (0, 0), False, (1, 112, 112)),
    ((3, 3), (2, 2), (1, 1), False, (1, 56, 56)),
    ((3, 3), (2, 2), (1, 1), False, (1, 7, 7)),
    ((3, 3), (2, 2), (0, 0), True, (1, 111, 111)),
    ((3, 3), (2, 2), (0, 0), True, (1, 28, 28)),
    ((2, 2), (2, 2), (0, 0), True, (1, 7, 5)),
    ((3, 3), (1, 1), (1, 1), True, (1, 4, 4)),
    ((2, 2), (2, 2), (1, 1), True, (1, 1, 1)),
    ((5, 5), (3, 3), (2, 2), True, (1, 2, 3)),
    ((1, 1), (1, 1), (0, 0), False, (1, 3, 3)),
]


def check_shape(name, train, geometry, channels=3, hparams=None):
    kernel, stride, padding, ceil, (n, h, w) = geometry
    x = torch.randn(n, channels, h, w)
    expected = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil)(x).shape
    hp = hparams_for(name, kernel) if hparams is None else hparams
    layer = create_pool(name, channels, kernel, stride, padding, ceil, **hp).train(train)
    try:
        layer.check_input_size(h, w)
    except ValueError:  # fractional_max where its windows are fixed: the forward refuses too
        assert name == "fractional_max", (name, geometry)
        with pytest.raises(ValueError, match="no freedom left"):
            layer(x)
        return
    y = layer(x)
    assert y.shape == expected, (name, geometry)
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", METHODS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_output_shape_matches_maxpool(name, train, data):
    geometry = data.draw(geometries(square_stride=(name == "blurpool")))
    hp = hparams_for(name, geometry[0])
    if name in TOPK_METHODS:  # any K from 1 to the window size
        hp["topk"] = data.draw(st.integers(1, geometry[0][0] * geometry[0][1]), label="topk")
    elif name == "blurpool":
        hp["filt_size"] = data.draw(st.integers(2, 7), label="filt_size")
    check_shape(name, train, geometry, hparams=hp)


# (the property test above covers both modes of every method; here training mode only
# where it runs different code)
RANDOM_IN_TRAINING = ("stochastic", "stochastic_mix", "mixed", "fractional_max")
MODES = [(n, False) for n in METHODS] + [(n, True) for n in RANDOM_IN_TRAINING]


@pytest.mark.parametrize("name,train", MODES,
                         ids=[f"{n}-{'train' if t else 'eval'}" for n, t in MODES])
@pytest.mark.parametrize("geometry", FIXED, ids=lambda g: "k{}s{}p{}{}_{}".format(
    g[0][0], g[1][0], g[2][0], "c" if g[3] else "", "x".join(map(str, g[4][1:]))))
def test_output_shape_matches_maxpool_fixed_grid(name, train, geometry):
    check_shape(name, train, geometry)


@pytest.mark.parametrize("name", METHODS)
def test_pool_attributes_mirror_maxpool(name):
    layer = create_pool(name, 4, kernel_size=3, stride=2, padding=1, ceil_mode=True)
    assert layer.kernel_size == (3, 3) and layer.stride == (2, 2)
    assert layer.padding == (1, 1) and layer.ceil_mode is True
    assert create_pool(name, 4, kernel_size=2, **hparams_for(name, (2, 2))).stride == (2, 2)


# ---------------------------------------------------------------- channels_last

# Methods built only from the native max/avg pooling kernels and elementwise blends keep
# the channels_last layout, and stochastic and fractional max pooling return it; the others
# (unfold-based window statistics, conv-based ones) are only required to give the same values.
KEEPS_CHANNELS_LAST = ["max", "avg", "channel_adaptive", "gated", "stochastic_mix", "mixed",
                       "stochastic", "fractional_max"]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("geometry", [((2, 2), (2, 2), (0, 0), False),
                                      ((3, 3), (2, 2), (1, 1), True)], ids=["vgg", "resnet_ceil"])
def test_channels_last_gives_the_same_values(name, geometry):
    kernel, stride, padding, ceil = geometry
    torch.manual_seed(0)
    layer = create_pool(name, 8, kernel, stride, padding, ceil, **hparams_for(name, kernel))
    layer.eval()
    x = torch.randn(2, 8, 9, 11)  # odd sides: fractional_max's windows are random
    xc = x.to(memory_format=torch.channels_last)
    assert xc.is_contiguous(memory_format=torch.channels_last) and not xc.is_contiguous()
    torch.testing.assert_close(layer(xc), layer(x), rtol=1e-6, atol=1e-6)
    if name in KEEPS_CHANNELS_LAST:
        assert layer(xc).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_backward_gives_the_same_gradients(name):
    torch.manual_seed(1)
    layer = create_pool(name, 4, 3, 2, 1, **hparams_for(name, (3, 3))).eval()
    x = torch.randn(2, 4, 9, 9)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.clone().to(memory_format=fmt).requires_grad_()
        layer.zero_grad()
        layer(xi).pow(2).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_report_which_methods_keep_channels_last(capsys):
    """Not an assertion beyond KEEPS_CHANNELS_LAST: prints the layout each method returns,
    so a change shows up in ``pytest -s`` output, and fails if the list above goes stale
    (a listed method that stopped keeping the layout)."""
    x = torch.randn(2, 8, 9, 9).to(memory_format=torch.channels_last)
    keeps = []
    for name in METHODS:
        y = create_pool(name, 8, 2, **hparams_for(name, (2, 2))).eval()(x)
        if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
            keeps.append(name)
    with capsys.disabled():
        print(f"\nmethods whose output stays channels_last: {keeps}")
    assert set(KEEPS_CHANNELS_LAST) <= set(keeps)


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", ["stochastic", "fractional_max"])
def test_random_methods_return_the_input_memory_format(name, train, fmt):
    """Same values (same draws) in either format, and the output in the input's format."""
    memory_format = getattr(torch, f"{fmt}_format" if fmt == "contiguous" else fmt)
    layer = create_pool(name, 8, 2).train(train)
    x = torch.randn(2, 8, 9, 11)
    xf = x.to(memory_format=memory_format)
    torch.manual_seed(0)
    y = layer(xf)
    torch.manual_seed(0)
    assert torch.equal(y, layer(x))
    assert y.is_contiguous(memory_format=memory_format)
    assert y.is_contiguous() == (fmt == "contiguous")
