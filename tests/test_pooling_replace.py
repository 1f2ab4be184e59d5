"""replace_pooling on real torchvision and timm models, and find_pooling."""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn

from poolbench.pooling import (
    PoolBase, available_pools, count_pool_parameters, find_pooling, replace_pooling,
)

SIZE = 48  # the smallest round size all five models accept (GoogLeNet's five pools)


def resnet18():
    return torchvision.models.resnet18(weights=None)


def vgg11_bn():
    return torchvision.models.vgg11_bn(weights=None)


def densenet121():
    return torchvision.models.densenet121(weights=None)


def googlenet():
    return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)


def timm_resnet18():
    return timm.create_model("resnet18", pretrained=False)


MODELS = {"resnet18": resnet18, "vgg11_bn": vgg11_bn, "densenet121": densenet121,
          "googlenet": googlenet, "timm_resnet18": timm_resnet18}
# learnable parameters whose count depends on the channel count (C, C*C + C, C*C*k*k + C),
# and hyperparameters passed through replace_pooling
SWAP_METHODS = {"channel_adaptive": {}, "gated": {}, "strided_conv": {"bias": False},
                "tmaxavg": {"topk": 2}}
SWAP_FAST = ["channel_adaptive", "gated", "strided_conv"]


def geometry(mod):
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    stride = mod.stride if mod.stride not in (None, [], ()) else mod.kernel_size
    return pair(mod.kernel_size), pair(stride), pair(mod.padding), bool(mod.ceil_mode)


def maxpools_and_channels(model, x):
    """Names, geometries and input channel counts of every nn.MaxPool2d, seen by hooks."""
    pools = {n: m for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)}
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, inputs[0].shape[1])  # returns None: output unchanged
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in pools.items()]
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return {n: (geometry(m), seen[n]) for n, m in pools.items()}, out


@pytest.fixture(scope="module")
def built():
    """One model of each kind, built once (eval mode), with its MaxPool2d inventory and
    output shape; tests work on deep copies."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, SIZE, SIZE)
    result = {}
    for key, make in MODELS.items():
        model = make().eval()
        inventory, out = maxpools_and_channels(model, x)
        result[key] = (model, inventory, out.shape)
    return x, result


@pytest.mark.parametrize("method", [m if m in SWAP_FAST else pytest.param(
    m, marks=pytest.mark.slow) for m in SWAP_METHODS])
@pytest.mark.parametrize("key", list(MODELS))
def test_replace_pooling_on_real_models(built, key, method):
    x, result = built
    original, inventory, out_shape = result[key]
    assert inventory, f"{key} should have at least one MaxPool2d"
    model = copy.deepcopy(original)
    n_params = sum(p.numel() for p in model.parameters())
    kw = SWAP_METHODS[method]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about here
        returned = replace_pooling(model, method, input_size=SIZE, **kw)
    assert returned is model
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    swapped = dict(find_pooling(model))
    assert set(swapped) == set(inventory)
    assert [n for n, _ in find_pooling(model, method)] == list(swapped)
    expected_params = 0
    for name, (geom, channels) in inventory.items():
        layer = swapped[name]
        assert isinstance(layer, PoolBase) and layer.name == method
        assert (layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode) == geom, name
        assert layer.channels == channels, name
        assert not layer.training  # the replaced layer was in eval mode
        expected_params += count_pool_parameters(method, channels, kernel_size=geom[0], **kw)
    # learnable pools are registered parameters of the model, with the right count
    model_params = dict(model.named_parameters())
    for name, layer in swapped.items():
        for pname, p in layer.named_parameters():
            assert model_params[f"{name}.{pname}"] is p
    assert sum(p.numel() for p in model.parameters()) == n_params + expected_params
    with torch.no_grad():
        assert model(x).shape == out_shape


def _every_method(built, key):
    x, result = built
    original, inventory, out_shape = result[key]
    for method in available_pools():
        model = copy.deepcopy(original)
        replace_pooling(model, method, example_input=x)
        assert len(find_pooling(model, method)) == len(inventory), method
        with torch.no_grad():
            assert model(x).shape == out_shape, method


def test_replace_pooling_every_method_keeps_the_output_shape_resnet18(built):
    _every_method(built, "resnet18")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["vgg11_bn", "densenet121", "googlenet", "timm_resnet18"])
def test_replace_pooling_every_method_keeps_the_output_shape(built, key):
    _every_method(built, key)


def test_replace_pooling_googlenet_geometry_ceil_mode(built):
    """GoogLeNet's pools use ceil_mode=True and 3x3/1 pads: both must survive."""
    _, result = built
    _, inventory, _ = result["googlenet"]
    geoms = {g for g, _ in inventory.values()}
    assert ((3, 3), (2, 2), (0, 0), True) in geoms
    assert ((3, 3), (1, 1), (1, 1), True) in geoms
    model = copy.deepcopy(result["googlenet"][0])
    replace_pooling(model, "softpool", input_size=SIZE)
    for name, layer in find_pooling(model):
        assert (layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode) == \
            inventory[name][0]


def test_replace_pooling_restores_training_mode_and_keeps_layer_modes():
    model = resnet18().train()
    replace_pooling(model, "stochastic_mix", input_size=SIZE)
    assert model.training
    assert all(layer.training for _, layer in find_pooling(model))
    model.eval()
    with pytest.warns(UserWarning, match="no nn.MaxPool2d"):  # nothing left to replace
        replace_pooling(model, "channel_adaptive", input_size=SIZE)
    assert not model.training


def test_replace_pooling_learnable_pool_is_trained_by_an_optimizer():
    torch.manual_seed(1)
    model = resnet18().train()
    replace_pooling(model, "channel_adaptive", input_size=SIZE)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (_, layer), = find_pooling(model)
    before = layer.logit.detach().clone()
    loss = model(torch.randn(2, 3, SIZE, SIZE)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert not torch.equal(layer.logit.detach(), before)


def test_replace_pooling_uses_model_dtype():
    """A float64 model stays usable after the swap (new layers follow the model's dtype)."""
    for method in ("strided_conv", "attention", "gated", "channel_adaptive"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2),
                              nn.Conv2d(4, 4, 3, padding=1)).double()
        replace_pooling(model, method, input_size=8)
        for _, layer in find_pooling(model):
            assert all(p.dtype == torch.float64 for p in layer.parameters()), method
        y = model(torch.randn(1, 3, 8, 8, dtype=torch.float64))
        assert y.dtype == torch.float64 and y.shape == (1, 4, 4, 4)


def test_replace_pooling_with_example_input_and_nonstandard_channels():
    model = nn.Sequential(nn.Conv2d(5, 7, 3, padding=1), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                          nn.Conv2d(7, 11, 1), nn.MaxPool2d((2, 3), (1, 2)))
    x = torch.randn(2, 5, 13, 17)
    expected = model(x).shape
    replace_pooling(model, "gated", example_input=x)
    layers = dict(find_pooling(model))
    assert layers["1"].channels == 7 and layers["3"].channels == 11
    assert layers["3"].kernel_size == (2, 3) and layers["3"].stride == (1, 2)
    assert model(x).shape == expected
    # without example_input, the first conv's in_channels (5) is used for the dummy input
    model2 = nn.Sequential(nn.Conv2d(5, 7, 3, padding=1), nn.MaxPool2d(2))
    replace_pooling(model2, "channel_adaptive", input_size=16)
    assert find_pooling(model2)[0][1].channels == 7


def test_replace_pooling_without_maxpool_warns():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(2))
    with pytest.warns(UserWarning, match="no nn.MaxPool2d"):
        out = replace_pooling(model, "softpool")
    assert out is model and find_pooling(model) == []


def test_replace_pooling_dilated_or_indices_raises():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2, dilation=2))
    with pytest.raises(ValueError, match="dilation"):
        replace_pooling(model, "softpool", input_size=16)
    assert isinstance(model[1], nn.MaxPool2d)  # nothing half-replaced
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(ValueError, match="return_indices"):
        replace_pooling(model, "softpool", input_size=16)


def test_replace_pooling_bad_method_or_hparam_fails_before_touching_the_model():
    model = resnet18()
    with pytest.raises(ValueError, match="unknown pooling method 'nope'"):
        replace_pooling(model, "nope")
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        replace_pooling(model, "tmaxavg", input_size=SIZE, bogus=1)
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_replace_pooling_is_all_or_nothing():
    """topk=5 suits the 3x3 pool but not the 2x2 one: ValueError, and no layer replaced."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match=r"topk=5 is out of range \[1, 4\]"):
        replace_pooling(model, "tmaxavg", input_size=16, topk=5)
    assert isinstance(model[1], nn.MaxPool2d) and isinstance(model[2], nn.MaxPool2d)
    assert find_pooling(model) == []


class TutorialNet(nn.Module):
    """PyTorch's tutorial CNN: one nn.MaxPool2d module called after both convolutions."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)

    def forward(self, x):
        return self.pool(torch.relu(self.conv2(self.pool(torch.relu(self.conv1(x))))))


def test_replace_pooling_shared_maxpool_module():
    x = torch.randn(2, 3, 32, 32)
    for method in ("softpool", "max", "stochastic", "tmaxavg"):  # no per-channel state: fine
        net = TutorialNet()
        replace_pooling(net, method, example_input=x)
        assert net(x).shape == (2, 16, 5, 5)
    for method in ("channel_adaptive", "gated", "blurpool", "strided_conv"):
        net = TutorialNet()
        with pytest.raises(ValueError, match=r"pool.*\[6, 16\] channels"):
            replace_pooling(net, method, example_input=x)
        assert isinstance(net.pool, nn.MaxPool2d)


def test_replace_pooling_unreached_maxpool_raises():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.used = nn.MaxPool2d(2)
            self.unused = nn.MaxPool2d(2)

        def forward(self, x):
            return self.used(self.conv(x))

    with pytest.raises(ValueError, match="unused"):
        replace_pooling(Branchy(), "max", input_size=16)


def test_replace_pooling_stride_list_maxpool():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, stride=[]))
    x = torch.randn(1, 3, 9, 9)
    expected = model(x)
    replace_pooling(model, "max", example_input=x)
    torch.testing.assert_close(model(x), expected)
