"""The contract every registered pooling method keeps, as checks callable for any name.

The parametrized tests in tests/test_pooling_*.py call these functions for every registry
method; tests/test_pooling_new_method.py calls :func:`check_contract` for a method it
registers on the fly. So a new method is held to the whole contract (registry entry,
argument checks, nn.MaxPool2d's shapes and attributes, memory formats, no host-device
sync, torch.compile, finite values and gradients in every precision, fp32 = fp64) without
a test being written for it. Its formula still needs its own test against an independent
reference (tests/conftest.py; docs/adding_a_method.md).

Everything a check needs to know about a method is derived from the registry (its
hyperparameters, whether it has parameters) or from running it (whether training mode
draws at random), except the few facts named in the constants below. :func:`generator`
loads scripts/gen_pool_configs.py, which writes the configs derived from the registry.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from poolbench.pooling import (
    POOLS, PoolBase, available_pools, count_pool_parameters, create_pool, pool_hparams,
    pool_info,
)

# Hyperparameters that give the method learnable parameters where its default has none.
RICH_HPARAMS = {"lp": {"learnable": True}}
# Outputs not bounded by the input's magnitude (learned maps, or |x| for signed inputs).
UNBOUNDED = ("strided_conv", "lp", "gated", "attention")
PRECISIONS = ["fp32", "bf16_autocast", "fp16", "fp16_autocast", "bf16"]

# (kernel, stride, padding, ceil_mode, (N, H, W)): VGG, ResNet, GoogLeNet-style ceil mode
FIXED_GEOMETRIES = [
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
CHANNELS_LAST_GEOMETRIES = {"vgg": ((2, 2), (2, 2), (0, 0), False),
                            "resnet_ceil": ((3, 3), (2, 2), (1, 1), True)}


@functools.cache
def generator():
    """scripts/gen_pool_configs.py as a module (scripts/ is not a package), loaded once."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "gen_pool_configs.py"
    spec = importlib.util.spec_from_file_location("gen_pool_configs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hparams_for(name, kernel):
    """Defaults, except topk, which must fit the window (default 3 > 2 cells of a 1x2)."""
    if "topk" in pool_hparams(name):
        return {"topk": min(3, kernel[0] * kernel[1])}
    return {}


def raises_naming(match_all, fn, *args, **kwargs):
    """``fn`` raises ValueError whose message contains every string in ``match_all``."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for part in match_all:
        assert part in msg, f"{part!r} not in error message {msg!r}"
    return msg


@functools.cache
def random_in_training(name: str) -> bool:
    """Whether training mode draws at random: two of eight seeded forward passes differ.

    Derived by running the method, so a new random method is tested in training mode too.
    (Odd sides: fractional_max refuses even ones.)"""
    layer = create_pool(name, 4, 2, **hparams_for(name, (2, 2))).train()
    x = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(0))
    outputs = []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for seed in range(8):
            torch.manual_seed(seed)
            outputs.append(layer(x))
    return any(not torch.equal(outputs[0], y) for y in outputs[1:])


def modes(names=None) -> list[tuple[str, bool]]:
    """(name, train) pairs: eval mode for every method, training mode where it draws at
    random (elsewhere training mode runs the same code)."""
    names = available_pools() if names is None else names
    return [(n, False) for n in names] + [(n, True) for n in names if random_in_training(n)]


def mode_id(mode) -> str:
    name, train = mode
    return f"{name}-{'train' if train else 'eval'}"


# ---------------------------------------------------------------- registry and arguments


def check_registry_entry(name):
    layer = create_pool(name, 4, kernel_size=3, stride=2, padding=1)
    assert isinstance(layer, PoolBase) and isinstance(layer, POOLS[name])
    assert layer.name == name and layer.channels == 4
    info = pool_info(name)
    assert info["name"] == name and info["summary"] and info["citation"]
    assert info["paper"] is POOLS[name].paper
    assert info["hparams"] == pool_hparams(name)
    assert name in repr(layer) or type(layer).__name__ in repr(layer)
    assert isinstance(layer.learned_summary(), dict)


def check_few_channels(name, channels):
    """Defaults must work for any channel count (attention's bottleneck used to refuse C < 8)."""
    layer = create_pool(name, channels, 3, 2, 1)
    y = layer(torch.randn(2, channels, 7, 7))
    assert y.shape == (2, channels, 4, 4)


def check_learned_summary_is_scalars(name):
    layer = create_pool(name, 6, 3, 2, 1, **RICH_HPARAMS.get(name, {}))
    for key, value in layer.learned_summary().items():
        assert isinstance(key, str)
        assert torch.is_tensor(value) and value.numel() == 1 and torch.isfinite(value)


def check_bad_padding(name):
    raises_naming(["padding", "(2, 2)", "[0, 1]"], create_pool, name, 4, kernel_size=3,
                  stride=2, padding=2)
    raises_naming(["padding", "(2, 2)", "[0, 1]"], create_pool, name, 4, kernel_size=2,
                  padding=2)
    raises_naming(["padding", "-1"], create_pool, name, 4, kernel_size=3, padding=-1)


def check_bad_geometry(name):
    raises_naming(["kernel_size", "0"], create_pool, name, 4, kernel_size=0)
    raises_naming(["stride", "0"], create_pool, name, 4, kernel_size=2, stride=0)
    raises_naming(["kernel_size", "(2, 2, 2)"], create_pool, name, 4, kernel_size=(2, 2, 2))
    raises_naming(["channels", "0"], create_pool, name, 0)
    raises_naming(["channels", "2.0"], create_pool, name, 2.0)


def check_unknown_hparam(name):
    """A misspelt hyperparameter is refused, naming it, the method and the valid ones."""
    valid = sorted(pool_hparams(name))
    raises_naming(["'no_such_hparam'", repr(name), *map(repr, valid)], create_pool, name, 4,
                  no_such_hparam=1)


def check_parameter_count(name):
    layer = create_pool(name, 12, kernel_size=3)
    assert count_pool_parameters(name, 12, kernel_size=3) == sum(
        p.numel() for p in layer.parameters())


def check_input_smaller_than_the_window(name):
    """nn.MaxPool2d raises RuntimeError here; no method may silently return something."""
    with pytest.raises((ValueError, RuntimeError), match="size|smaller"):
        create_pool(name, 2, kernel_size=5)(torch.randn(1, 2, 3, 3))


# ---------------------------------------------------------------- shapes and memory formats


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


def check_attributes_mirror_maxpool(name):
    layer = create_pool(name, 4, kernel_size=3, stride=2, padding=1, ceil_mode=True)
    assert layer.kernel_size == (3, 3) and layer.stride == (2, 2)
    assert layer.padding == (1, 1) and layer.ceil_mode is True
    assert create_pool(name, 4, kernel_size=2, **hparams_for(name, (2, 2))).stride == (2, 2)


def check_channels_last_values(name, geometry, keeps_layout=False):
    """The same values on channels_last input; the output channels_last too if
    ``keeps_layout``."""
    kernel, stride, padding, ceil = geometry
    torch.manual_seed(0)
    layer = create_pool(name, 8, kernel, stride, padding, ceil, **hparams_for(name, kernel))
    layer.eval()
    x = torch.randn(2, 8, 9, 11)  # odd sides: fractional_max's windows are random
    xc = x.to(memory_format=torch.channels_last)
    assert xc.is_contiguous(memory_format=torch.channels_last) and not xc.is_contiguous()
    torch.testing.assert_close(layer(xc), layer(x), rtol=1e-6, atol=1e-6)
    if keeps_layout:
        assert layer(xc).is_contiguous(memory_format=torch.channels_last)


def check_channels_last_backward(name):
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


# ---------------------------------------------------------------- no host sync, torch.compile

aten = torch.ops.aten
SYNC_OPS = {
    aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.equal,  # tensor -> Python
    aten.nonzero, aten.masked_select, aten.unique_dim, aten._unique, aten._unique2,
    aten.unique_consecutive, aten.repeat_interleave,  # output shape depends on the data
}


class SyncRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in SYNC_OPS:
            self.seen.append(str(func))
        elif func.overloadpacket is aten.index and any(  # x[mask]: nonzero inside
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.seen.append(f"{func} with a boolean mask")
        return func(*args, **(kwargs or {}))


def make_layer(name, train, channels=6):
    torch.manual_seed(0)
    return create_pool(name, channels, 3, 2, 1, **RICH_HPARAMS.get(name, {})).train(train)


def check_no_host_sync(name, train):
    layer = make_layer(name, train)
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    with SyncRecorder() as rec:
        y = layer(x)
    assert not rec.seen, f"{name} forward ran sync-forcing ops: {sorted(set(rec.seen))}"
    assert y.shape == (2, 6, 5, 5)


def check_traces_with_fullgraph(name, train):
    """No graph break (no .item(), no data-dependent Python branching) in forward."""
    torch._dynamo.reset()
    layer = make_layer(name, train)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    x = torch.randn(2, 6, 9, 9)
    y = compiled(x)
    assert y.shape == (2, 6, 5, 5)
    if not train:
        torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-5)
    else:  # random draws: same seed, same draws (also checks the RNG calls are traced)
        torch.manual_seed(5)
        y1 = compiled(x)
        torch.manual_seed(5)
        torch.testing.assert_close(compiled(x), y1, rtol=0, atol=0)


def check_aot_eager_matches_eager(name):
    torch._dynamo.reset()
    layer = make_layer(name, False)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 6, 9, 9)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye, yc = layer(xe), compiled(xc)
    torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ye)
    ye.backward(g)
    yc.backward(g)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- numerics


def scaled_inputs(scale, seed=0):
    """Positive, negative and mixed-sign inputs of magnitude up to ``scale``."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(2, 4, 9, 9, generator=g)
    signed = torch.randn(2, 4, 9, 9, generator=g).clamp(-3, 3) / 3
    return {"pos": scale * (0.1 + 0.9 * r), "neg": -scale * (0.1 + 0.9 * r),
            "mixed": scale * signed}


def randomize_gate(layer):
    """``gated`` starts with zero weights (a constant 0.5 gate): give it random ones, so
    that the gate really depends on x."""
    if layer.name == "gated":
        with torch.no_grad():
            layer.weight.normal_(0, 0.5)
    return layer


def precision_setup(name, precision, train):
    """Layer and (input dtype, autocast context) for one precision mode."""
    torch.manual_seed(0)
    layer = randomize_gate(create_pool(name, 4, 3, 2, 1, **RICH_HPARAMS.get(name, {})))
    layer.train(train)
    ctx = contextlib.nullcontext()
    dtype = torch.float32
    if precision == "bf16_autocast":
        ctx = torch.autocast("cpu", dtype=torch.bfloat16)
    elif precision == "fp16_autocast":
        ctx = torch.autocast("cpu", dtype=torch.float16)
    elif precision in ("fp16", "bf16"):  # the whole layer in half precision, as model.half()
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        layer = layer.to(dtype)
    return layer, dtype, ctx


def check_finite_at_scale(name, precision, train):
    """Finite outputs and gradients (input and parameters) at scales 1 and 1e4, within the
    input's range unless the method is :data:`UNBOUNDED`."""
    for scale in (1.0, 1e4):
        for kind, x0 in scaled_inputs(scale).items():
            layer, dtype, ctx = precision_setup(name, precision, train)
            x = x0.to(dtype).requires_grad_()
            try:
                with ctx:
                    y = layer(x)
            except (RuntimeError, NotImplementedError) as e:
                if "not implemented for" in str(e) and ("Half" in str(e) or "BFloat16" in str(e)):
                    pytest.skip(f"{name}: no CPU kernel for {precision}: {e}")
                raise
            where = f"{name} {precision} scale={scale:g} {kind}"
            assert y.shape == (2, 4, 5, 5), where
            if precision == "fp32":
                assert y.dtype == torch.float32, where
            elif precision in ("fp16", "bf16"):
                assert y.dtype == dtype, where
            assert torch.isfinite(y).all(), f"non-finite output: {where}"
            # outputs stay within the input's range (max/mean-like) or near it
            if name not in UNBOUNDED:
                lim = x0.abs().max() * 1.02
                assert y.float().abs().max() <= lim, where
            # a mean-style loss (gradient 1/numel per output), as a real loss would give:
            # a sum over outputs of size 1e4 would overflow an fp16 parameter gradient
            # by itself, whatever the layer does
            w = torch.linspace(-1, 1, y.numel()).view_as(y) / y.numel()
            y.float().mul(w).sum().backward()
            assert torch.isfinite(x.grad).all(), f"non-finite input gradient: {where}"
            for pname, p in layer.named_parameters():
                assert p.grad is None or torch.isfinite(p.grad).all(), \
                    f"non-finite gradient of {pname}: {where}"


def check_fp32_agrees_with_fp64(name, scale):
    """The same layer in fp32 and in fp64 (eval) agree to fp32 precision."""
    torch.manual_seed(0)
    layer = create_pool(name, 3, 3, 2, 1, True, **RICH_HPARAMS.get(name, {})).eval()
    if name == "gated":
        with torch.no_grad():
            layer.weight.normal_()
    g = torch.Generator().manual_seed(30)
    x = torch.randn(2, 3, 8, 9, generator=g, dtype=torch.float64) * scale
    y32 = layer(x.float())
    y64 = layer.double()(x)
    torch.testing.assert_close(y32.double(), y64, rtol=2e-5, atol=2e-5 * scale)


# ---------------------------------------------------------------- all of it, for one method


def check_contract(name):
    """Every check above for method ``name``, once each, in representative settings."""
    check_registry_entry(name)
    check_unknown_hparam(name)
    for channels in (1, 3):
        check_few_channels(name, channels)
    check_learned_summary_is_scalars(name)
    check_bad_padding(name)
    check_bad_geometry(name)
    check_parameter_count(name)
    check_input_smaller_than_the_window(name)
    check_attributes_mirror_maxpool(name)
    check_channels_last_backward(name)
    for geometry in CHANNELS_LAST_GEOMETRIES.values():
        check_channels_last_values(name, geometry)
    check_aot_eager_matches_eager(name)
    for scale in (1.0, 100.0):
        check_fp32_agrees_with_fp64(name, scale)
    for _, train in modes([name]):
        for geometry in FIXED_GEOMETRIES:
            check_shape(name, train, geometry)
        check_no_host_sync(name, train)
        check_traces_with_fullgraph(name, train)
        for precision in PRECISIONS:
            check_finite_at_scale(name, precision, train)
