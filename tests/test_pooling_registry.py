"""Registry API, hyperparameter validation messages and parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pooling_contract as contract
from poolbench.pooling import (
    POOLS, available_pools, count_pool_parameters, create_pool, pool_hparams, pool_info,
)
from poolbench.pooling.registry import _CLASSES

# The adaptive-pooling paper's eight methods, in the paper's order: a fact about the paper,
# so written out here, and checked against the registry's ``paper`` flags.
PAPER_EIGHT = ["max", "tmaxavg", "soft_tmaxavg", "channel_adaptive", "learnable_t", "gated",
               "attention", "stochastic_mix"]
METHODS = available_pools()
raises_naming = contract.raises_naming


def test_available_pools_lists_every_class_paper_eight_first():
    assert available_pools(paper_only=True) == PAPER_EIGHT
    assert METHODS == [cls.name for cls in _CLASSES]
    assert METHODS[:8] == PAPER_EIGHT
    assert len(set(METHODS)) == len(_CLASSES), "two registry classes share a name"
    assert all(METHODS) and set(POOLS) == set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_create_pool_builds_the_registered_class(name):
    contract.check_registry_entry(name)
    assert pool_info(name)["paper"] is (name in PAPER_EIGHT)


def test_pool_hparams_defaults():
    assert pool_hparams("max") == {}
    assert pool_hparams("tmaxavg") == {"topk": 3, "threshold": 0.5}
    assert pool_hparams("soft_tmaxavg") == {"topk": 3, "threshold": 0.5, "temperature": 0.1}
    assert pool_hparams("gated") == {"gate": "dense"}
    assert set(pool_hparams("stochastic_mix")) == {"concentration", "per_channel", "sample_per"}
    assert pool_hparams("stochastic_mix")["sample_per"] == "sample_channel"
    assert pool_hparams("mixed")["sample_per"] == "batch"


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("channels", [1, 2, 3, 7])
def test_every_method_builds_and_runs_for_few_channels(name, channels):
    contract.check_few_channels(name, channels)


@pytest.mark.parametrize("name", ["max", "avg", "softpool", "stochastic"])
def test_parameter_free_methods_have_no_hparams_and_no_parameters(name):
    assert pool_hparams(name) == {}
    assert list(create_pool(name, 5).parameters()) == []


@pytest.mark.parametrize("name", METHODS)
def test_learned_summary_is_scalars(name):
    contract.check_learned_summary_is_scalars(name)


def test_learned_summary_values():
    ca = create_pool("channel_adaptive", 3, init=0.25)
    s = ca.learned_summary()
    torch.testing.assert_close(s["lambda_mean"], torch.tensor(0.25))
    lt = create_pool("learnable_t", 3, threshold=0.7)
    torch.testing.assert_close(lt.learned_summary()["threshold_mean"], torch.tensor(0.7))
    lp = create_pool("lp", 3, p=4.0, learnable=True)
    torch.testing.assert_close(lp.learned_summary()["p_mean"], torch.tensor(4.0))
    sm = create_pool("stochastic_mix", 3)
    torch.testing.assert_close(sm.learned_summary()["lambda_mean"], torch.tensor(0.5))


# ---------------------------------------------------------------- validation


def test_unknown_method_names_the_choices():
    msg = raises_naming(["'maxx'"], create_pool, "maxx", 4)
    for name in METHODS:
        assert repr(name) in msg
    raises_naming(["'nope'", "'softpool'"], pool_hparams, "nope")
    raises_naming(["'nope'", "'softpool'"], pool_info, "nope")
    raises_naming(["'nope'", "'softpool'"], count_pool_parameters, "nope", 4)
    raises_naming(["None", "'max'"], create_pool, None, 4)


def test_unknown_hparam_names_it_and_the_valid_ones():
    raises_naming(["'topK'", "'topk'", "'threshold'", "'tmaxavg'"],
                  create_pool, "tmaxavg", 4, topK=2)
    raises_naming(["'threshold'", "'max'", "no hyperparameters"],
                  create_pool, "max", 4, threshold=0.1)
    raises_naming(["'temperature'", "'topk'"], create_pool, "tmaxavg", 4, temperature=1.0)


@pytest.mark.parametrize("name", METHODS)
def test_unknown_hparam_of_every_method(name):
    contract.check_unknown_hparam(name)


@pytest.mark.parametrize("name", ["tmaxavg", "soft_tmaxavg", "learnable_t"])
def test_topk_out_of_window(name):
    raises_naming(["topk=5", "[1, 4]"], create_pool, name, 4, kernel_size=2, topk=5)
    raises_naming(["topk=10", "[1, 9]"], create_pool, name, 4, kernel_size=3, topk=10)
    raises_naming(["topk=0", "[1, 4]"], create_pool, name, 4, kernel_size=2, topk=0)
    raises_naming(["topk=-1"], create_pool, name, 4, kernel_size=2, topk=-1)
    raises_naming(["topk", "int", "2.0"], create_pool, name, 4, kernel_size=2, topk=2.0)
    raises_naming(["topk", "int", "True"], create_pool, name, 4, kernel_size=2, topk=True)
    create_pool(name, 4, kernel_size=2, topk=4)  # the whole window is fine
    create_pool(name, 4, kernel_size=(2, 3), topk=6)


@pytest.mark.parametrize("name", ["soft_tmaxavg", "learnable_t"])
@pytest.mark.parametrize("tau", [0, 0.0, -0.1])
def test_temperature_must_be_positive(name, tau):
    raises_naming([f"temperature={tau!r}", "(0, inf"], create_pool, name, 4, temperature=tau)


def test_threshold_must_be_a_number():
    raises_naming(["threshold", "NaN"], create_pool, "tmaxavg", 4, threshold=math.nan)
    raises_naming(["threshold", "'0.5'"], create_pool, "tmaxavg", 4, threshold="0.5")


@pytest.mark.parametrize("name", METHODS)
def test_bad_padding_names_value_and_range(name):
    contract.check_bad_padding(name)


@pytest.mark.parametrize("name", METHODS)
def test_bad_geometry(name):
    contract.check_bad_geometry(name)


@pytest.mark.parametrize("name", ["stochastic_mix", "mixed"])
def test_bad_sample_per_names_the_choices(name):
    msg = raises_naming(["sample_per='pixel'"], create_pool, name, 4, sample_per="pixel")
    for choice in ("batch", "sample", "channel", "sample_channel"):
        assert repr(choice) in msg


def test_bad_gate_names_the_choices():
    raises_naming(["gate='conv'", "'dense'", "'depthwise'"], create_pool, "gated", 4,
                  gate="conv")


@pytest.mark.parametrize("p", [0.5, 0, -2.0, 33.0])
def test_lp_p_range(p):
    raises_naming([f"p={p!r}", "[1, 32]"], create_pool, "lp", 4, p=p)


def test_other_ranges():
    raises_naming(["p_max=1.5", "[0, 1]"], create_pool, "mixed", 4, p_max=1.5)
    raises_naming(["p_max=-0.1", "[0, 1]"], create_pool, "mixed", 4, p_max=-0.1)
    raises_naming(["init=0", "(0, 1)"], create_pool, "channel_adaptive", 4, init=0)
    raises_naming(["init=1.0", "(0, 1)"], create_pool, "channel_adaptive", 4, init=1.0)
    raises_naming(["concentration=0", "(0, inf"], create_pool, "stochastic_mix", 4,
                  concentration=0)
    raises_naming(["eval_sample=1.0", "[0, 1)"], create_pool, "fractional_max", 4,
                  eval_sample=1.0)
    raises_naming(["reduction=0"], create_pool, "attention", 4, reduction=0)
    raises_naming(["eps=0"], create_pool, "attention", 4, eps=0)
    raises_naming(["filt_size=1", "[2, 7]"], create_pool, "blurpool", 4, filt_size=1)
    raises_naming(["square stride", "(1, 2)"], create_pool, "blurpool", 4, stride=(1, 2))


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("C", [1, 3, 16, 64])
def test_count_pool_parameters_matches_hand_derived_formulas(C):
    assert count_pool_parameters("channel_adaptive", C) == C
    assert count_pool_parameters("learnable_t", C) == C
    assert count_pool_parameters("gated", C) == C * C + C
    assert count_pool_parameters("gated", C, gate="depthwise") == 2 * C
    for k in (2, 3):
        assert count_pool_parameters("strided_conv", C, kernel_size=k) == C * C * k * k + C
    assert count_pool_parameters("strided_conv", C, kernel_size=3, bias=False) == C * C * 9
    h = max(1, C // 8)
    assert count_pool_parameters("attention", C) == C * h + h + h * C + C
    assert count_pool_parameters("attention", C, reduction=1) == 2 * (C * C + C)
    assert count_pool_parameters("stochastic_mix", C) == 1
    assert count_pool_parameters("stochastic_mix", C, per_channel=True) == C
    assert count_pool_parameters("lp", C) == 0
    assert count_pool_parameters("lp", C, learnable=True) == C
    for name in ("max", "avg", "tmaxavg", "soft_tmaxavg", "softpool", "stochastic", "mixed",
                 "fractional_max", "blurpool"):
        assert count_pool_parameters(name, C) == 0, name


@pytest.mark.parametrize("name", METHODS)
def test_count_pool_parameters_agrees_with_the_layer(name):
    contract.check_parameter_count(name)


def test_blurpool_filter_is_a_buffer_not_a_parameter():
    layer = create_pool("blurpool", 4)
    assert list(layer.parameters()) == []
    assert any(b.numel() == 4 * 9 for b in layer.buffers())


# ---------------------------------------------------------------- geometry arguments


def test_stride_defaults_to_kernel_like_maxpool():
    for name in ("max", "softpool"):
        assert create_pool(name, 2, kernel_size=3).stride == (3, 3)
        assert create_pool(name, 2, kernel_size=(2, 3)).stride == (2, 3)


def test_stride_accepts_what_nn_maxpool2d_accepts():
    """nn.MaxPool2d(k, stride=[]) means stride=k (F.max_pool2d's convention)."""
    mp = nn.MaxPool2d(3, stride=[])
    x = torch.randn(1, 2, 9, 9)
    layer = create_pool("max", 2, kernel_size=mp.kernel_size, stride=mp.stride)
    assert layer.stride == (3, 3)
    torch.testing.assert_close(layer(x), mp(x))


@pytest.mark.parametrize("name", METHODS)
def test_input_smaller_than_the_window_raises_like_maxpool(name):
    contract.check_input_smaller_than_the_window(name)
