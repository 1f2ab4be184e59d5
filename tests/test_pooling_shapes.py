"""Output shapes equal nn.MaxPool2d's for every method and geometry; memory formats."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pooling_contract as contract
from poolbench.pooling import available_pools, create_pool, pool_hparams

METHODS = available_pools()
hparams_for = contract.hparams_for


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


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", METHODS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_output_shape_matches_maxpool(name, train, data):
    geometry = data.draw(geometries(square_stride=(name == "blurpool")))
    hp = hparams_for(name, geometry[0])
    if "topk" in pool_hparams(name):  # any K from 1 to the window size
        hp["topk"] = data.draw(st.integers(1, geometry[0][0] * geometry[0][1]), label="topk")
    elif name == "blurpool":
        hp["filt_size"] = data.draw(st.integers(2, 7), label="filt_size")
    contract.check_shape(name, train, geometry, hparams=hp)


# (the property test above covers both modes of every method; here training mode only
# where it runs different code)
MODES = contract.modes()


@pytest.mark.parametrize("name,train", MODES, ids=[contract.mode_id(m) for m in MODES])
@pytest.mark.parametrize("geometry", contract.FIXED_GEOMETRIES, ids=lambda g: "k{}s{}p{}{}_{}"
                         .format(g[0][0], g[1][0], g[2][0], "c" if g[3] else "",
                                 "x".join(map(str, g[4][1:]))))
def test_output_shape_matches_maxpool_fixed_grid(name, train, geometry):
    contract.check_shape(name, train, geometry)


@pytest.mark.parametrize("name", METHODS)
def test_pool_attributes_mirror_maxpool(name):
    contract.check_attributes_mirror_maxpool(name)


# ---------------------------------------------------------------- channels_last

# Methods built only from the native max/avg pooling kernels and elementwise blends keep
# the channels_last layout, and stochastic and fractional max pooling return it; the others
# (unfold-based window statistics, conv-based ones) are only required to give the same values.
KEEPS_CHANNELS_LAST = ["max", "avg", "channel_adaptive", "gated", "stochastic_mix", "mixed",
                       "stochastic", "fractional_max"]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("geometry", list(contract.CHANNELS_LAST_GEOMETRIES.values()),
                         ids=list(contract.CHANNELS_LAST_GEOMETRIES))
def test_channels_last_gives_the_same_values(name, geometry):
    contract.check_channels_last_values(name, geometry,
                                        keeps_layout=name in KEEPS_CHANNELS_LAST)


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_backward_gives_the_same_gradients(name):
    contract.check_channels_last_backward(name)


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
