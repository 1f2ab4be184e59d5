"""Tests of poolbench.models: architectures, pool placement, every method in both models."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from poolbench.models import (
    MODELS, ResNet, VGG, build_model, check_input_size, init_weights, model_options,
    model_summary,
)
from poolbench.pooling import (
    PoolBase, available_pools, count_pool_parameters, create_pool, find_pooling,
)

ALL_POOLS = available_pools()
TINY = 8  # base width of the tiny CPU models (attention's reduction=8 needs >= 8 channels)
CONFIGS = [("vgg16", {}), ("resnet18", {"stem": "paper"}), ("resnet18", {"stem": "imagenet"})]
CONFIG_IDS = ["vgg16", "resnet18-paper", "resnet18-imagenet"]
# Methods whose default hyperparameters give learnable parameters (lp only with learnable=True).
LEARNABLE = {p: {} for p in ALL_POOLS if count_pool_parameters(p, TINY) > 0}
LEARNABLE["lp"] = {"learnable": True}


# (config id, method) that refuse the grid's 32 and 64 px images: fractional_max's windows
# have no freedom on 2x2/2 pools of even sizes (tests/test_pooling_fractional.py).
REFUSED = {("vgg16", "fractional_max"), ("resnet18-paper", "fractional_max")}
RUNS = [pytest.param(name, kwargs, pool, id=f"{cid}-{pool}")
        for (name, kwargs), cid in zip(CONFIGS, CONFIG_IDS) for pool in ALL_POOLS
        if (cid, pool) not in REFUSED]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(name, pool="max", num_classes=10, **kwargs):
    return build_model(name, num_classes, pool=pool, width=TINY, **kwargs)


# --- default architectures ---------------------------------------------------------------

def test_vgg16_bn_parameter_count():
    model = build_model("vgg16", 100)
    # By hand, 13 convs (3x3 weights + bias), 13 BNs (weight + bias), linear 512 -> 100:
    #   conv weights 9 * (3*64 + 64*64 + 64*128 + 128*128 + 128*256 + 2*256*256
    #                     + 256*512 + 5*512*512)            = 14,710,464
    #   conv biases  64*2 + 128*2 + 256*3 + 512*6          =      4,224
    #   BN           2 * 4,224                              =      8,448
    #   linear       512*100 + 100                          =     51,300
    #   total                                               = 14,774,436
    assert n_params(model) == 14_774_436
    assert round(n_params(model) / 1e6, 1) == 14.8  # the paper's 14.8M (3 significant figures)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) for c in convs)
    assert len(find_pooling(model)) == 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    # The conv/BN stack is torchvision's VGG16-BN feature extractor, layer for layer.
    reference = make_layers(cfgs["D"], batch_norm=True)
    ours = [p.shape for p in model.features.parameters()]
    assert ours == [p.shape for p in reference.parameters()]


@pytest.mark.parametrize("stem, expected", [("paper", 11_220_132), ("imagenet", 11_227_812)])
def test_resnet18_parameter_count(stem, expected):
    model = build_model("resnet18", 100, stem=stem)
    # torchvision's resnet18 at 100 classes has 11,227,812; the paper stem's 3x3 conv has
    # 3*64*9 = 1,728 weights instead of the 7x7 conv's 3*64*49 = 9,408: 11,220,132.
    assert n_params(model) == expected
    assert round(n_params(model) / 1e6, 1) == 11.2


def test_resnet18_imagenet_stem_is_torchvision_resnet18():
    reference = torchvision.models.resnet18(num_classes=100)
    model = build_model("resnet18", 100, stem="imagenet")
    model.load_state_dict(reference.state_dict(), strict=True)  # same names and shapes
    x = torch.randn(2, 3, 64, 64)
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize("width", [8, 16, 32])
def test_width_scales_every_layer(width):
    vgg = build_model("vgg16", 100, width=width)
    assert [c.out_channels for c in vgg.modules() if isinstance(c, nn.Conv2d)] == [
        v * width // 64 for v in cfgs["D"] if v != "M"]
    resnet = build_model("resnet18", 100, width=width)
    assert resnet.conv1.out_channels == width
    assert [resnet.get_submodule(f"layer{i}")[-1].conv2.out_channels for i in (1, 2, 3, 4)] == [
        width, 2 * width, 4 * width, 8 * width]
    assert resnet.fc.in_features == vgg.classifier.in_features == 8 * width


# --- shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("num_classes", [100, 200])
@pytest.mark.parametrize("name, kwargs", CONFIGS + [("resnet18", {"stem": "cifar"})],
                         ids=CONFIG_IDS + ["resnet18-cifar"])
def test_output_shape(name, kwargs, size, num_classes):
    model = tiny(name, num_classes=num_classes, **kwargs)
    assert model(torch.randn(2, 3, size, size)).shape == (2, num_classes)


def test_feature_map_sizes():
    x32, x64 = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 64, 64)
    vgg = tiny("vgg16")
    assert vgg.features(x32).shape[-2:] == (1, 1) and vgg.features(x64).shape[-2:] == (2, 2)
    for stem, after_stem in [("paper", 16), ("imagenet", 8), ("cifar", 32)]:
        m = tiny("resnet18", stem=stem)
        y = m.maxpool(m.relu(m.bn1(m.conv1(x32))))
        assert y.shape[-2:] == (after_stem, after_stem), stem


# --- pool placement -------------------------------------------------------------------

@pytest.mark.parametrize("positions, chosen", [
    ("all", [1, 2, 3, 4, 5]), ("last2", [4, 5]), ("none", []), ([0, 2], [1, 3]),
    ((4, 3), [4, 5]), ([], []),
])
def test_vgg_pool_positions(positions, chosen):
    model = tiny("vgg16", pool="softpool", pool_positions=positions)
    layers = dict(find_pooling(model))
    assert list(layers) == [f"features.pool{i}" for i in range(1, 6)]
    for i in range(1, 6):
        layer = layers[f"features.pool{i}"]
        assert layer.name == ("softpool" if i in chosen else "max")
        assert layer.kernel_size == (2, 2) and layer.stride == (2, 2)
        assert layer.padding == (0, 0) and not layer.ceil_mode
    # No stray pooling layers (torch's or ours) anywhere else.
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    assert model.pool_positions == tuple(sorted(p - 1 for p in chosen))


def test_vgg_default_uses_method_everywhere():
    assert model_options("vgg16")["pool_positions"] == "all"
    model = tiny("vgg16", pool="gated")
    assert [layer.name for _, layer in find_pooling(model)] == ["gated"] * 5


def test_pools_get_the_right_channel_counts():
    vgg = build_model("vgg16", 100, pool="channel_adaptive", width=16)
    channels = [layer.channels for _, layer in find_pooling(vgg)]
    assert channels == [16, 32, 64, 128, 128]
    assert [layer.logit.numel() for _, layer in find_pooling(vgg)] == channels
    resnet = build_model("resnet18", 100, pool="channel_adaptive", width=16)
    assert [layer.channels for _, layer in find_pooling(resnet)] == [16]


@pytest.mark.parametrize("stem, conv, pool", [
    ("paper", ((3, 3), (1, 1), (1, 1)), ((2, 2), (2, 2), (0, 0))),
    ("imagenet", ((7, 7), (2, 2), (3, 3)), ((3, 3), (2, 2), (1, 1))),
])
def test_resnet_stem_geometry(stem, conv, pool):
    model = tiny("resnet18", pool="tmaxavg", stem=stem)
    c = model.conv1
    assert (c.in_channels, c.out_channels) == (3, TINY)
    assert (c.kernel_size, c.stride, c.padding) == conv
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.relu, nn.ReLU)
    [(name, layer)] = find_pooling(model)  # the stem pool is the only pool
    assert name == "maxpool" and layer.name == "tmaxavg" and layer.channels == TINY
    assert (layer.kernel_size, layer.stride, layer.padding) == pool
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet_cifar_stem_has_no_pool():
    model = tiny("resnet18", stem="cifar")
    assert find_pooling(model) == [] and isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    with pytest.raises(ValueError, match="no pooling layer.*'softpool'"):
        tiny("resnet18", pool="softpool", stem="cifar")
    tiny("resnet18", pool="max", pool_hparams={}, stem="cifar")  # empty hparams are fine
    with pytest.raises(ValueError, match="unknown hyperparameter"):  # max has none
        tiny("resnet18", pool="max", pool_hparams={"kernel": 3}, stem="cifar")


# --- every method in both models ------------------------------------------------------

@pytest.mark.parametrize("size", [32, 64])
def test_only_the_refused_methods_refuse_the_grid_resolutions(size):
    refused = set()
    for (name, kwargs), cid in zip(CONFIGS, CONFIG_IDS):
        for pool in ALL_POOLS:
            try:
                tiny(name, pool=pool, input_size=size, **kwargs)
            except ValueError:
                refused.add((cid, pool))
    assert refused == REFUSED


class _DrawsInForward(nn.Module):
    def forward(self, x):
        return x + 0 * torch.rand(())


def test_input_size_check_keeps_mode_and_random_state():
    model = nn.Sequential(_DrawsInForward(), create_pool("max", 3))
    for training in (True, False):
        model.train(training)
        state = torch.get_rng_state()
        check_input_size(model, 8)
        assert torch.equal(torch.get_rng_state(), state)
        assert all(m.training is training for m in model.modules())


@pytest.mark.parametrize("name, kwargs, pool", RUNS)
def test_every_method_trains_and_runs_channels_last(name, kwargs, pool):
    torch.manual_seed(0)
    model = tiny(name, pool=pool, **kwargs)
    assert {layer.name for _, layer in find_pooling(model)} == {pool}
    x = torch.randn(4, 3, 32, 32)
    y = model(x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    y.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # channels_last gives the same function (eval mode: deterministic for every method).
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pool", sorted(LEARNABLE))
@pytest.mark.parametrize("name, kwargs", CONFIGS[:2], ids=CONFIG_IDS[:2])
def test_learnable_pool_parameters_are_model_parameters(name, kwargs, pool):
    torch.manual_seed(0)
    model = tiny(name, pool=pool, pool_hparams=LEARNABLE[pool], **kwargs)
    pool_params = [p for _, layer in find_pooling(model) for p in layer.parameters()]
    assert pool_params, f"{pool} has no parameters"
    model_param_ids = {id(p) for p in model.parameters()}
    assert all(id(p) in model_param_ids for p in pool_params)
    summary = model_summary(model)
    assert summary["params_pooling"] == sum(p.numel() for p in pool_params) > 0
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    for p in pool_params:
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0, f"a {pool} parameter of shape {tuple(p.shape)} gets no gradient"


def test_pool_hparams_reach_the_pools():
    model = tiny("vgg16", pool="soft_tmaxavg", pool_positions="last2",
                 pool_hparams={"topk": 2, "threshold": 0.1, "temperature": 0.5})
    for _, layer in find_pooling(model, "soft_tmaxavg"):
        assert (layer.topk, layer.threshold, layer.temperature) == (2, 0.1, 0.5)
    resnet = tiny("resnet18", pool="gated", pool_hparams={"gate": "depthwise"})
    assert resnet.maxpool.gate == "depthwise"


def test_hydra_containers_are_accepted():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"positions": [3, 4], "hparams": {"init": 0.7}})
    model = tiny("vgg16", pool="channel_adaptive", pool_positions=cfg.positions,
                 pool_hparams=cfg.hparams)
    assert [n for n, _ in find_pooling(model, "channel_adaptive")] == [
        "features.pool4", "features.pool5"]


# --- initialisation -------------------------------------------------------------------

def test_init_skips_pooling_layers():
    torch.manual_seed(0)
    model = tiny("vgg16", pool="gated")
    for _, layer in find_pooling(model):  # the gate starts at 0.5: zero weights and bias
        assert torch.equal(layer.weight, torch.zeros_like(layer.weight))
    for pool in ("attention", "strided_conv"):
        for name in ("vgg16", "resnet18"):
            model = tiny(name, pool=pool)
            before = {n: t.clone() for n, t in model.state_dict().items()}
            init_weights(model)
            after = model.state_dict()
            pooled = {f"{n}.{k}" for n, layer in find_pooling(model)
                      for k in layer.state_dict()}
            assert pooled
            for key in before:  # pool tensors untouched; convolutions drawn afresh
                if key in pooled:
                    assert torch.equal(before[key], after[key]), key
                elif key.endswith("conv1.weight") or key.endswith("conv1_1.weight"):
                    assert not torch.equal(before[key], after[key]), key


def test_init_values():
    model = build_model("vgg16", 100, width=32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, nn.Conv2d):
            assert torch.all(m.bias == 0)
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            std = (2.0 / fan_out) ** 0.5  # Kaiming normal, fan_out, ReLU gain
            assert abs(m.weight.std().item() / std - 1) < 0.2
    assert torch.all(model.classifier.bias == 0)
    assert abs(model.classifier.weight.std().item() - 0.01) < 0.002


# --- compile --------------------------------------------------------------------------

def _compile_matches_eager(name, pool, backend, fullgraph=False, **kwargs):
    torch.manual_seed(0)
    model = tiny(name, pool=pool, **kwargs).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad():
        compiled = torch.compile(model, backend=backend, fullgraph=fullgraph)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    if pool in ("stochastic_mix", "mixed", "stochastic", "fractional_max"):
        return  # random in training mode: eager and compiled draws differ
    # Training mode: BN with batch statistics, gradients of the learnable pool parameters.
    model.train()
    compiled = torch.compile(model, backend=backend, fullgraph=fullgraph)
    compiled(x).sum().backward()
    grad_compiled = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for got, want in zip(grad_compiled, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_compile_matches_eager():
    # The models add no graph break (fullgraph) and compile to the same function, forward
    # and backward. channel_adaptive: learnable per-channel weights, quick to trace.
    _compile_matches_eager("vgg16", "channel_adaptive", "aot_eager", fullgraph=True)


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs, pool", RUNS)
def test_compile_every_method(name, kwargs, pool):
    _compile_matches_eager(name, pool, "aot_eager", **kwargs)


@pytest.mark.slow
def test_compile_inductor_matches_eager():
    _compile_matches_eager("resnet18", "learnable_t", "inductor", stem="paper")


# --- summary and errors ---------------------------------------------------------------

def test_model_summary():
    model = tiny("vgg16", pool="channel_adaptive", pool_positions="last2", num_classes=100)
    summary = model_summary(model)
    json.dumps(summary)
    assert summary["params_total"] == summary["params_trainable"] == n_params(model)
    assert summary["params_pooling"] == 2 * 8 * TINY  # two layers, one logit per channel
    assert summary["pooling_layers"] == {
        "features.pool1": "max", "features.pool2": "max", "features.pool3": "max",
        "features.pool4": "channel_adaptive", "features.pool5": "channel_adaptive"}
    assert model_summary(tiny("resnet18", pool="max"))["params_pooling"] == 0


def test_registry_of_models():
    assert set(MODELS) == {"vgg16", "resnet18"}
    assert isinstance(build_model("vgg16", 10, width=TINY), VGG)
    assert isinstance(build_model("resnet18", 10, width=TINY), ResNet)
    assert tiny("vgg16", pool="avg").pool_name == tiny("resnet18", pool="avg").pool_name == "avg"
    assert model_options("resnet18") == {"stem": "paper", "width": 64}
    assert model_options("vgg16") == {"pool_positions": "all", "width": 64}


@pytest.mark.parametrize("call, match", [
    (lambda: build_model("vgg19", 10), r"unknown model 'vgg19'.*'vgg16', 'resnet18'"),
    (lambda: build_model("resnet18", 10, pool_positions="last2"),
     r"unknown argument\(s\) \['pool_positions'\] for model 'resnet18'.*'stem'"),
    (lambda: build_model("vgg16", 10, stem="paper"),
     r"unknown argument\(s\) \['stem'\] for model 'vgg16'.*'pool_positions'"),
    (lambda: tiny("vgg16", pool="maxx"), r"unknown pooling method 'maxx'.*'softpool'"),
    (lambda: tiny("vgg16", pool="maxx", pool_positions=[]), r"unknown pooling method 'maxx'"),
    (lambda: tiny("vgg16", pool="softpool", pool_hparams={"p": 2}),
     r"unknown hyperparameter\(s\) \['p'\] for pooling method 'softpool'"),
    (lambda: tiny("resnet18", pool="lp", pool_hparams={"q": 2}),
     r"\['q'\].*valid: \['learnable', 'p'\]"),
    (lambda: tiny("vgg16", pool="lp", pool_hparams={"p": 0.5}), r"p=0.5 is out of range"),
    (lambda: tiny("vgg16", pool="lp", pool_hparams=[("p", 2)]), r"pool_hparams must be a mapping"),
    (lambda: tiny("vgg16", pool_positions="first2"),
     r"pool_positions='first2'.*\['all', 'last2', 'none'\]"),
    (lambda: tiny("vgg16", pool_positions=[3, 5]), r"invalid entries \[5\].*0\.\.4"),
    (lambda: tiny("vgg16", pool_positions=[True]), r"invalid entries \[True\]"),
    (lambda: tiny("vgg16", pool_positions=[4, 4]), r"duplicate"),
    (lambda: tiny("vgg16", pool_positions=4), r"pool_positions must be one of"),
    (lambda: tiny("resnet18", stem="deep"), r"stem='deep'.*\['paper', 'imagenet', 'cifar'\]"),
    (lambda: build_model("vgg16", 10, width=0), r"width must be a positive int, got 0"),
    (lambda: build_model("resnet18", 10, width=8.0), r"width must be a positive int"),
    (lambda: build_model("resnet18", 0), r"num_classes must be a positive int, got 0"),
    (lambda: tiny("vgg16", input_size=0), r"input_size must be a positive int, got 0"),
    (lambda: tiny("vgg16", input_size=16),  # pool5 would get 1x1 maps
     r"^features\.pool5, which gets 1x1 maps from 16x16 images: input size 1 is smaller "
     r"than the pooling window 2"),
])
def test_bad_arguments_raise_helpful_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pools_are_registry_layers():
    # Every pooling layer is a registry layer (PoolBase), the one create_pool would build.
    for name, kwargs in CONFIGS:
        model = tiny(name, pool="mixed", **kwargs)
        for _, layer in find_pooling(model):
            assert isinstance(layer, PoolBase)
            ref = create_pool(layer.name, layer.channels, layer.kernel_size, layer.stride,
                              layer.padding, layer.ceil_mode)
            assert type(ref) is type(layer) and repr(ref) == repr(layer)
