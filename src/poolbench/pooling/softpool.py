"""SoftPool (Stergiou, Poppe & Kalliatakis, ICCV 2021), computed stably at any scale."""

from __future__ import annotations

from ._fast import can_tile, soft_pool_tiles
from .base import PoolBase, max_pool, windows


def soft_pool2d(x, geometry):
    r"""Softmax-weighted sum of each window, per channel.

    .. math:: Y = \frac{\sum_i e^{x_i} x_i}{\sum_j e^{x_j}}
              = m + \frac{\sum_i e^{x_i - m}(x_i - m)}{\sum_j e^{x_j - m}}

    with :math:`m` the window maximum. Subtracting :math:`m` makes every exponent
    :math:`\le 0` (no overflow at any input scale or dtype) and keeps the largest term at
    1 (no 0/0); writing the numerator with :math:`x_i - m` keeps it within
    :math:`\pm 0.37` per cell, so it fits fp16 too. :math:`m` is detached: the expression is
    invariant to the shift, so autograd's gradient is the exact one,
    :math:`\partial Y/\partial x_i = w_i (1 + x_i - Y)` with :math:`w` the softmax weights.
    Padded cells get weight 0. Where the windows tile the input (stride == kernel, no
    padding) a custom autograd kernel computes the same thing without input-sized
    temporaries (:func:`poolbench.pooling._fast.soft_pool_tiles`).
    """
    if can_tile(x, geometry):
        return soft_pool_tiles(x, geometry)
    m = max_pool(x.detach(), geometry)
    win, valid = windows(x, geometry, fill=0.0)
    d = win - m[..., None, None]
    if valid is None:
        e = d.exp()
    else:
        d = d.masked_fill(~valid, 0.0)
        e = d.exp().masked_fill(~valid, 0.0)
    return m + (e * d).sum((-2, -1)) / e.sum((-2, -1))


class SoftPool2d(PoolBase):
    __doc__ = soft_pool2d.__doc__.replace(
        "Softmax-weighted sum", "SoftPool (Stergiou et al. 2021): softmax-weighted sum", 1)

    name = "softpool"
    citation = "Stergiou, Poppe & Kalliatakis 2021, Refining activation downsampling with SoftPool"

    def forward(self, x):
        return soft_pool2d(x, self.geometry)
