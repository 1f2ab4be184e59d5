"""Model factory (``build_model``) and the parameter summary written into results.json."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from torch import nn

from ..pooling import find_pooling
from ..pooling.base import check_known_keys
from ._common import check_input_size
from .resnet import resnet18
from .vgg import vgg16

MODELS: dict[str, Callable[..., nn.Module]] = {"vgg16": vgg16, "resnet18": resnet18}
_COMMON_ARGS = ("num_classes", "pool", "pool_hparams")


def _constructor(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODELS)}") from None


def model_options(name: str) -> dict:
    """The model's own keyword arguments and their defaults (beyond num_classes and pool)."""
    sig = inspect.signature(_constructor(name))
    return {p.name: p.default for p in sig.parameters.values() if p.name not in _COMMON_ARGS}


def build_model(name: str, num_classes: int, pool: str = "max",
                pool_hparams: Mapping | None = None, input_size: int | None = None,
                **kwargs) -> nn.Module:
    """Build model ``name`` (a key of :data:`MODELS`) with pooling method ``pool``.

    ``kwargs`` are the model's own options (see :func:`model_options`), e.g.
    ``pool_positions`` and ``width`` for ``vgg16``, ``stem`` and ``width`` for
    ``resnet18``. An unknown model, option, pooling method or pool hyperparameter raises
    ``ValueError`` naming the bad value and the valid choices. ``input_size``: the side of
    the (square) images the model will see; when given, every pooling layer is checked
    against the map it gets from them (:func:`check_input_size`), so a method that cannot
    run there (``fractional_max`` on the 2x2/2 pools of 32 and 64 px images) fails here,
    with a ``ValueError`` that names the layer, not at the first training step.
    """
    ctor = _constructor(name)
    check_known_keys(kwargs, model_options(name), "argument", f"model {name!r}")
    model = ctor(num_classes=num_classes, pool=pool, pool_hparams=pool_hparams, **kwargs)
    if input_size is not None:
        check_input_size(model, input_size)
    return model


def model_summary(model: nn.Module) -> dict:
    """Parameter counts of ``model`` and its pooling layers (JSON-serialisable).

    ``params_total``: all parameters; ``params_trainable``: those with ``requires_grad``;
    ``params_pooling``: parameters inside poolbench pooling layers (found with
    :func:`~poolbench.pooling.find_pooling`); ``pooling_layers``: module name -> method.
    """
    pools = find_pooling(model)
    in_pools = {id(p) for _, layer in pools for p in layer.parameters()}
    params = list(model.parameters())
    return {
        "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
        "params_pooling": sum(p.numel() for p in params if id(p) in in_pools),
        "pooling_layers": {name: layer.name for name, layer in pools},
    }
