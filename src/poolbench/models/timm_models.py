"""Any timm model with its spatial pooling layers taken from the registry (``model=timm``).

``build_timm(arch, num_classes, pool)`` creates ``timm.create_model(arch)`` and swaps its
*spatial* pooling layers for ``pool`` through :func:`~poolbench.pooling.replace_pooling`:

- every ``nn.MaxPool2d`` (the stem pool of ResNets, ResNeXts and Wide-ResNets; DenseNet's
  ``features.pool0``);
- the ``nn.AvgPool2d`` of DenseNet transitions (``features.transition{i}.pool``), as SoftPool
  (Stergiou et al. 2021, Table 2) did;
- never the global pooling (``global_pool``), nor the average pools of ``avg_down``
  shortcuts (ResNet-D/-T ``downsample.0``), which are part of a residual branch.

``pool="max"`` means *the architecture's original pooling*: max pools become the registry's
``max`` and DenseNet's transition average pools the registry's ``avg`` (both compute exactly
what the layers they replace computed), so ``max`` vs ``softpool`` compares the original
network with the SoftPool one. Any other method replaces every spatial pool.

``pretrained``: ``false`` (random initialisation), ``true`` (timm's published weights,
downloaded from the Hugging Face hub: needs internet) or a path to a local checkpoint (a
timm/torch state dict of the original architecture, or a poolbench ``last.ckpt``/
``best.ckpt``, whose ``model.`` weights are loaded after the pools were replaced).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..pooling import replace_pooling
from ._common import check_pool_args, check_positive_int

#: The method that stands for "the original pooling" (see the module docstring).
ORIGINAL = "max"


def check_arch(arch: str) -> str:
    """``arch`` if timm knows it, else ``ValueError`` naming it and the closest timm names."""
    import timm

    names = timm.list_models()
    if isinstance(arch, str) and arch.split(".")[0] in names:
        return arch
    close = difflib.get_close_matches(str(arch), names, n=5, cutoff=0.6)
    hint = f"; close timm names: {close}" if close else ""
    raise ValueError(f"model.arch={arch!r} is not a timm model{hint} "
                     "(timm.list_models() lists them all)")


def spatial_pools(model: nn.Module) -> dict[str, str]:
    """Module name -> ``"max"`` or ``"avg"`` (its original kind) of every spatial pooling
    layer of a timm model that poolbench replaces (module docstring)."""
    from timm.models.densenet import DenseTransition

    pools = {name: "max" for name, m in model.named_modules() if isinstance(m, nn.MaxPool2d)}
    for name, m in model.named_modules():
        if isinstance(m, DenseTransition):
            for child, sub in m.named_children():
                if isinstance(sub, nn.AvgPool2d):
                    pools[f"{name}.{child}"] = "avg"
    return dict(sorted(pools.items(), key=lambda kv: list(dict(model.named_modules())).index(kv[0])))


def _load_checkpoint(path: str) -> tuple[dict, bool]:
    """(state dict, whether it is a poolbench checkpoint of the already replaced model)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"model.pretrained={path!r}: no such checkpoint file")
    obj = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        sd = obj["state_dict"]
        if any(k.startswith("model.") for k in sd):  # a poolbench (Lightning) checkpoint
            return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}, True
        return dict(sd), False
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        return dict(obj["model"]), False  # timm train.py / torchvision reference checkpoints
    if isinstance(obj, Mapping):
        return dict(obj), False
    raise ValueError(f"model.pretrained={path!r} holds a {type(obj).__name__}, not a state "
                     "dict or a poolbench checkpoint")


def _load(model: nn.Module, sd: dict, path: str) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"model.pretrained={path!r} does not fit this model "
                         f"(architecture, number of classes or pooling method differ): {e}") \
            from None


def build_timm(num_classes: int = 1000, pool: str = "max", pool_hparams: Mapping | None = None,
               arch: str = "resnet18", pretrained=False, timm_kwargs: Mapping | None = None,
               input_size: int = 224) -> nn.Module:
    """timm model ``arch`` with its spatial pools replaced by ``pool`` (module docstring).

    ``timm_kwargs``: more keyword arguments of ``timm.create_model`` (tests build tiny
    DenseNets with ``growth_rate``, ``block_config``, ``num_init_features``).
    Raises ``ValueError`` for an unknown ``arch`` (naming close timm names) or an
    architecture without a spatial pooling layer to replace.
    """
    import timm

    check_positive_int("num_classes", num_classes)
    hparams = check_pool_args(pool, pool_hparams)
    check_arch(arch)
    use_hub = pretrained is True or str(pretrained).lower() == "true"
    model = timm.create_model(arch, pretrained=use_hub, num_classes=num_classes,
                              **dict(timm_kwargs or {}))
    pools = spatial_pools(model)
    if not pools:
        raise ValueError(f"model.arch={arch!r} has no spatial pooling layer (nn.MaxPool2d, or "
                         "a DenseNet transition's nn.AvgPool2d) to replace, so pool="
                         f"{pool!r} would be used nowhere; choose an architecture with one "
                         "(resnet*, resnext*, wide_resnet*, densenet*)")
    local = None if (pretrained in (False, None) or use_hub
                     or str(pretrained).lower() == "false") else str(pretrained)
    state, replaced = _load_checkpoint(local) if local else (None, False)
    if state is not None and not replaced:
        _load(model, state, local)
    for kind in ("max", "avg"):
        names = [n for n, k in pools.items() if k == kind]
        method = kind if pool == ORIGINAL else pool
        if names:
            replace_pooling(model, method, input_size=input_size, layers=names,
                            **(hparams if method == pool else {}))
    if state is not None and replaced:
        _load(model, state, local)
    return model
