"""Pooling methods of poolbench: one registry, one constructor signature, nn.MaxPool2d shapes.

Modules, bottom to top (each imports only modules named before it):
``geometry`` (windows, memory layout) -> ``tiles`` (CPU tile kernels) -> ``functional``
(window statistics; the one place that picks a tile kernel or the generic path) -> ``base``
(``PoolBase``, argument checks) -> one module per family (``classic``, ``threshold``,
``blend``, ``attention``, ``softpool``, ``fractional``, ``strided_conv``, ``blurpool``) ->
``registry`` (the one list of methods; ``create_pool``, ``replace_pooling``).

>>> from poolbench.pooling import available_pools, create_pool, replace_pooling
>>> pool = create_pool("soft_tmaxavg", channels=64, kernel_size=2, topk=2, threshold=0.3)
>>> model = replace_pooling(torchvision.models.resnet50(), "softpool")  # doctest: +SKIP
"""

from .base import PoolBase
from .geometry import Geometry
from .registry import (
    POOLS, available_pools, count_pool_parameters, create_pool, find_pooling, pool_class,
    pool_hparams, pool_info, replace_pooling,
)

__all__ = [
    "POOLS", "Geometry", "PoolBase", "available_pools", "count_pool_parameters", "create_pool",
    "find_pooling", "pool_class", "pool_hparams", "pool_info", "replace_pooling",
]
