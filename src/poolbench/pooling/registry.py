"""The one list of pooling methods, and what is built from it: names, construction,
hyperparameters, parameter counts, swapping the pools of any model.

Adding a method is its class (in its family's module) and one line in :data:`_CLASSES`;
configs, grids and the generic tests derive everything else from :data:`POOLS`
(docs/adding_a_method.md).
"""

from __future__ import annotations

import inspect
import logging
import warnings

import torch
from torch import nn

from .attention import AttentionPool2d
from .base import PoolBase, check_hparams
from .blend import ChannelAdaptivePool2d, GatedPool2d, MixedPool2d, StochasticMixPool2d
from .blurpool import MaxBlurPool2d
from .classic import AvgPool2d, LpPool2d, MaxPool2d, StochasticPool2d
from .fractional import FractionalMaxPool2d
from .softpool import SoftPool2d
from .strided_conv import StridedConvPool2d
from .threshold import LearnableTPool2d, SoftTMaxAvgPool2d, TMaxAvgPool2d

log = logging.getLogger(__name__)

# Every method (imported above), one line each: the paper's eight first, in the paper's
# order (their classes say ``paper = True``), then the comparators. This order is the order
# of every list, grid and table built from the registry.
_CLASSES: tuple[type[PoolBase], ...] = (
    MaxPool2d,
    TMaxAvgPool2d,
    SoftTMaxAvgPool2d,
    ChannelAdaptivePool2d,
    LearnableTPool2d,
    GatedPool2d,
    AttentionPool2d,
    StochasticMixPool2d,
    AvgPool2d,
    SoftPool2d,
    LpPool2d,
    StochasticPool2d,
    MixedPool2d,
    FractionalMaxPool2d,
    StridedConvPool2d,
    MaxBlurPool2d,
)
POOLS: dict[str, type[PoolBase]] = {cls.name: cls for cls in _CLASSES}


def available_pools(paper_only: bool = False) -> list[str]:
    """Registry names, the paper's eight first. ``paper_only`` keeps just those eight."""
    return [name for name, cls in POOLS.items() if cls.paper or not paper_only]


def pool_class(name: str) -> type[PoolBase]:
    try:
        return POOLS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown pooling method {name!r}; choose one of {available_pools()}"
        ) from None


def pool_hparams(name: str) -> dict:
    """The method's hyperparameters and their defaults (beyond the geometry arguments)."""
    return pool_class(name).hparam_defaults()


def create_pool(name: str, channels: int, kernel_size=2, stride=None, padding=0,
                ceil_mode: bool = False, **hparams) -> nn.Module:
    """Build pooling method ``name`` for ``channels`` input channels.

    Geometry follows ``nn.MaxPool2d`` (``stride=None`` means ``stride = kernel_size``) and
    the output shape is always the one ``nn.MaxPool2d`` would give. ``hparams`` are the
    method's own hyperparameters (see :func:`pool_hparams`); an unknown name, an unknown
    hyperparameter or an out-of-range value raises ``ValueError`` that says what is valid.
    """
    cls = pool_class(name)
    return cls(channels, kernel_size=kernel_size, stride=stride, padding=padding,
               ceil_mode=ceil_mode, **check_hparams(cls, hparams))


def count_pool_parameters(name: str, channels: int, kernel_size=2, **hparams) -> int:
    """Number of learnable parameters one layer of method ``name`` has for ``channels``."""
    layer = create_pool(name, channels, kernel_size=kernel_size, **hparams)
    return sum(p.numel() for p in layer.parameters() if p.requires_grad)


def pool_info(name: str) -> dict:
    """Name, first docstring line, citation, paper membership and hyperparameter defaults."""
    cls = pool_class(name)
    doc = inspect.getdoc(cls) or ""
    return {
        "name": name, "summary": doc.splitlines()[0] if doc else "",
        "citation": cls.citation, "paper": cls.paper, "hparams": pool_hparams(name),
    }


def probe_forward(model: nn.Module, pre_hooks: dict, x: torch.Tensor,
                  keep_rng: bool = False) -> None:
    """One eval-mode, no-grad forward of ``x`` with ``pre_hooks`` (module -> forward pre-hook)
    in place; the hooks are removed and the model's train/eval mode restored afterwards,
    whatever happens. ``keep_rng``: leave the CPU random state as it was."""
    import contextlib

    handles = [module.register_forward_pre_hook(hook) for module, hook in pre_hooks.items()]
    was_training = model.training
    try:
        model.eval()
        rng = torch.random.fork_rng(devices=[]) if keep_rng else contextlib.nullcontext()
        with torch.no_grad(), rng:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def zero_input(model: nn.Module, input_size: int) -> torch.Tensor:
    """A zero image batch ``(1, C_in, input_size, input_size)`` for one probing forward pass
    of ``model``: ``C_in`` from its first convolution (else 3), on its device, in its
    floating-point dtype."""
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    in_ch = first_conv.in_channels if first_conv is not None else 3
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(1, in_ch, input_size, input_size, device=device, dtype=dtype)


def replace_pooling(model: nn.Module, name: str, example_input: torch.Tensor | None = None,
                    input_size: int = 224, layers=None, **hparams) -> nn.Module:
    """Replace every ``nn.MaxPool2d`` in ``model`` with pooling method ``name``, in place.

    ``layers``: the module names to replace instead (each an ``nn.MaxPool2d`` or an
    ``nn.AvgPool2d``, e.g. a DenseNet's transition pools); a name that is neither raises
    ``ValueError`` naming the layer and its type.

    Each replacement keeps the layer's kernel size, stride, padding and ceil_mode; its
    channel count is read off one forward pass (``example_input``, or zeros of shape
    ``(1, C_in, input_size, input_size)`` with ``C_in`` from the first convolution), so
    it works for any model: torchvision, timm or ours. The model's train/eval mode is
    restored afterwards and the new layers are placed on the model's device and given its
    floating-point dtype.
    Returns the model; the number of replaced layers is logged (and is
    ``len(find_pooling(model, name))``). Raises ``ValueError`` for a dilated pool or one
    that returns indices, which no method here can stand in for.
    """
    pool_class(name)  # fail on a bad name before running anything
    targets = _replace_targets(model, layers)
    if not targets:
        warnings.warn(f"replace_pooling: {type(model).__name__} has no nn.MaxPool2d to replace",
                      stacklevel=2)
        return model
    for mod_name, mod in targets.items():
        dilation = getattr(mod, "dilation", 1)  # nn.AvgPool2d has none
        dilation = dilation if isinstance(dilation, tuple) else (dilation,) * 2
        if dilation != (1, 1) or getattr(mod, "return_indices", False):
            raise ValueError(
                f"cannot replace {mod_name} ({mod}): dilation != 1 and return_indices=True "
                "are not supported"
            )

    channels = _channels_seen(model, targets, example_input, input_size)
    new_layers = {}
    for mod_name, mod in targets.items():
        counts = list(dict.fromkeys(channels[mod_name]))  # distinct, in call order
        new = create_pool(name, counts[0], kernel_size=mod.kernel_size,
                          stride=mod.stride, padding=mod.padding, ceil_mode=mod.ceil_mode,
                          **hparams)
        if len(counts) > 1 and (any(True for _ in new.parameters())
                                or any(True for _ in new.buffers())):
            raise ValueError(
                f"{mod_name} is one nn.MaxPool2d called on {counts} channels; {name!r} "
                "has per-channel parameters or buffers, so one layer cannot stand in for "
                "all those calls: give each call its own nn.MaxPool2d")
        ref = next(model.parameters(), None)
        if ref is not None:  # the model's device, and its dtype (a .double() model stays so)
            new = new.to(device=ref.device)
            if ref.is_floating_point():
                new = new.to(dtype=ref.dtype)
        new.train(mod.training)
        new_layers[mod_name] = new
    # Swap only once every layer could be built: hyperparameters valid for some windows
    # but not others (topk=5 with 3x3 and 2x2 pools) must not leave a half-replaced model.
    for mod_name, new in new_layers.items():
        parent_name, _, attr = mod_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    log.info("replace_pooling: replaced %d nn.MaxPool2d layer(s) with %r", len(targets), name)
    return model


def _channels_seen(model: nn.Module, targets: dict[str, nn.Module],
                   example_input: torch.Tensor | None, input_size: int) -> dict[str, list[int]]:
    """Every channel count each of ``targets`` is called with in one eval-mode forward pass
    of ``model`` (its train/eval mode restored); a target the pass never reaches is an error."""
    channels: dict[str, list[int]] = {}

    def record(key):
        def hook(module, args):  # must return None: a returned value replaces the input
            channels.setdefault(key, []).append(args[0].shape[1])
        return hook

    probe_forward(model, {mod: record(mod_name) for mod_name, mod in targets.items()},
                  example_input if example_input is not None else zero_input(model, input_size))
    unused = sorted(set(targets) - set(channels))
    if unused:
        raise ValueError(f"these MaxPool2d layers were not reached by the forward pass, so "
                         f"their channel count is unknown: {unused}")
    return channels


def _replace_targets(model: nn.Module, layers) -> dict[str, nn.Module]:
    """The layers :func:`replace_pooling` swaps: ``layers`` by name, else every MaxPool2d."""
    if layers is None:
        return {n: m for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)}
    modules = dict(model.named_modules())
    targets = {}
    for layer in layers:
        mod = modules.get(layer)
        if not isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            what = "no such module" if mod is None else type(mod).__name__
            raise ValueError(f"cannot replace layer {layer!r} ({what}): only nn.MaxPool2d and "
                             "nn.AvgPool2d layers can be replaced")
        targets[layer] = mod
    return targets


def find_pooling(model: nn.Module, name: str | None = None) -> list[tuple[str, PoolBase]]:
    """All poolbench pooling layers in ``model`` (of method ``name`` if given)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, PoolBase) and (name is None or m.name == name)]
