"""SoftPool (Stergiou, Poppe & Kalliatakis, ICCV 2021), computed stably at any scale."""

from __future__ import annotations

from .base import PoolBase
from .functional import soft_pool2d


class SoftPool2d(PoolBase):
    __doc__ = soft_pool2d.__doc__.replace(
        "Softmax-weighted sum", "SoftPool (Stergiou et al. 2021): softmax-weighted sum", 1)

    name = "softpool"
    citation = "Stergiou, Poppe & Kalliatakis 2021, Refining activation downsampling with SoftPool"

    def forward(self, x):
        return soft_pool2d(x, self.geometry)
