"""What a run is called and where it goes: its method label (pool name plus the
hyperparameters that differ from the registry's defaults), whether it is a K x T ablation
run, and the order of methods (registry order), models and datasets (the paper's first)."""

from __future__ import annotations

from typing import Iterable

from ..pooling import POOLS, pool_hparams
from .configs import same

# Pool hyperparameters that the K x T ablation varies. Runs that differ from their method's
# registry defaults only in these are ablation runs: they feed the K x T table and heatmap,
# not the main tables.
KT_KEYS = ("topk", "threshold")

MODEL_ORDER = ("vgg16", "resnet18")
DATA_ORDER = ("cifar100", "tinyimagenet")


def pool_variant(pool: str, pool_cfg: dict | None) -> tuple[dict, str, bool]:
    """(hyperparameters, variant label, is K x T ablation) of a run's ``config["pool"]``.

    The label lists the hyperparameters that differ from the registry's defaults
    (``"topk=2, threshold=0.3"``; ``""`` for the defaults). A run is a K x T ablation run
    when its method has ``topk`` and ``threshold`` and only those differ.
    """
    hp = {k: v for k, v in (pool_cfg or {}).items() if k != "name"}
    if pool not in POOLS:
        return hp, "", False
    defaults = pool_hparams(pool)
    order = list(defaults) + sorted(set(hp) - set(defaults))
    diff = [k for k in order if k in hp and (k not in defaults or not same(hp[k], defaults[k]))]
    label = ", ".join(f"{k}={_fmt_value(hp[k])}" for k in diff)
    kt = bool(diff) and all(k in KT_KEYS for k in diff) and all(k in defaults for k in KT_KEYS)
    return hp, label, kt


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def method_label(pool: str, variant: str) -> str:
    return f"{pool} ({variant})" if variant else pool


def pool_order_key(pool: str) -> tuple:
    names = list(POOLS)
    return (names.index(pool), "") if pool in names else (len(names), pool)


def order_methods(methods: Iterable[str]) -> list[str]:
    """Methods in registry order (the paper's eight first), variants after their method."""
    def key(m: str):
        pool, _, variant = m.partition(" (")
        return (*pool_order_key(pool), variant)
    return sorted(set(methods), key=key)


def order_models(models) -> list[str]:
    """The paper's models first (VGG16, ResNet18), then any other, alphabetically."""
    models = set(models)
    return [m for m in MODEL_ORDER if m in models] + sorted(models - set(MODEL_ORDER))


def order_data(data) -> list[str]:
    """The paper's datasets first (CIFAR-100, Tiny ImageNet), then any other."""
    data = set(data)
    return [d for d in DATA_ORDER if d in data] + sorted(data - set(DATA_ORDER))
