"""Helpers shared by the models: argument checks, pool construction, weight initialisation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from torch import nn

from ..pooling import PoolBase, create_pool, find_pooling, pool_class
from ..pooling.base import check_hparams
from ..pooling.registry import probe_forward, zero_input


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_pool_args(pool: str, hparams: Mapping | None) -> dict:
    """Validate the pooling method name and its hyperparameter names before building.

    Returns the hyperparameters as a plain dict (Hydra passes a ``DictConfig``). Values are
    checked by the pool's constructor. Checking here too means a bad name fails even where
    the method would be used nowhere (e.g. ``pool_positions=[]``).
    """
    cls = pool_class(pool)  # ValueError naming the valid methods
    if hparams is None:
        return {}
    if not isinstance(hparams, Mapping):
        raise ValueError(f"pool_hparams must be a mapping (dict), got {hparams!r}")
    return check_hparams(cls, hparams)


def make_pool(use_method: bool, pool: str, hparams: dict, channels: int, **geometry) -> PoolBase:
    """The method's pool at a chosen position, plain max pooling (from the registry) elsewhere."""
    if use_method:
        return create_pool(pool, channels, **geometry, **hparams)
    return create_pool("max", channels, **geometry)


def check_input_size(model: nn.Module, input_size: int) -> None:
    """Raise ``ValueError``, naming the layer, if a pooling layer of ``model`` cannot pool the
    map it receives from ``input_size`` x ``input_size`` images (``PoolBase.check_input_size``).

    The maps' sizes come from one forward pass of a zero image, in eval mode without
    gradients; the model's mode and the random number generator's state are kept.
    """
    check_positive_int("input_size", input_size)
    layers = find_pooling(model)
    if not layers:
        return

    def check(name: str):
        def hook(layer, args):
            h, w = args[0].shape[-2:]
            try:
                layer.check_input_size(h, w)
            except ValueError as e:
                raise ValueError(f"{name}, which gets {h}x{w} maps from {input_size}x"
                                 f"{input_size} images: {e}") from None
        return hook

    probe_forward(model, {layer: check(name) for name, layer in layers},
                  zero_input(model, input_size), keep_rng=True)


def modules_outside_pooling(model: nn.Module) -> Iterator[nn.Module]:
    """Every module of ``model`` except pooling layers and everything inside them."""
    stack = [model]
    while stack:
        module = stack.pop()
        if isinstance(module, PoolBase):
            continue
        yield module
        stack.extend(reversed(list(module.children())))


def cpu_channels_last_hazard(model: nn.Module) -> str | None:
    """Why ``model`` must not run in channels_last format on a CPU, or None when it can.

    torch's oneDNN backward of a 1x1 convolution with stride 2 and fewer than 8 input
    channels, in channels_last format, corrupts the heap and aborts the process on AVX2
    CPUs (seen with torch 2.14.1: ResNet18's first downsample at ``width`` < 8). The same
    model in the contiguous format, or at width >= 8, trains normally.
    """
    for name, m in model.named_modules():
        if (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)
                and max(m.stride) > 1 and m.in_channels < 8):
            return (f"{name} is a 1x1 stride-{max(m.stride)} convolution with {m.in_channels} "
                    "input channels, whose channels_last backward crashes torch's CPU "
                    "(oneDNN) kernels; use a width >= 8 or the contiguous memory format")
    return None


def init_weights(model: nn.Module, linear_std: float | None = None) -> nn.Module:
    """Standard CNN initialisation, leaving pooling layers' own parameters alone.

    Convolutions: Kaiming-normal (``fan_out``, ReLU gain), bias 0. Batch norm: weight 1,
    bias 0. Linear layers: ``N(0, linear_std^2)`` with bias 0 if ``linear_std`` is given,
    else PyTorch's default (as torchvision's ResNet). Modules inside a pooling layer (e.g.
    the 1x1 convolutions of ``gated``, ``attention`` or ``strided_conv``) are skipped:
    their constructors initialise them deliberately (``gated`` starts at a 0.5 gate).
    """
    for m in modules_outside_pooling(model):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
    return model
