"""Attention-weighted average pooling: a learned weight for every cell of every window."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import PoolBase, check_range
from .functional import avg_pool, upcast


class AttentionPool2d(PoolBase):
    r"""Attention-weighted average pooling (adaptive-pooling paper).

    .. math::
        A = \sigma\big(\mathrm{Conv}_{1\times1}(\mathrm{ReLU}(\mathrm{Conv}_{1\times1}(X)))\big),
        \qquad Y = \frac{\mathrm{AvgPool}(X \odot A)}{\mathrm{AvgPool}(A) + \epsilon}

    The bottleneck has ``max(1, channels // reduction)`` channels. Y is the A-weighted mean
    of each window (weights A in (0, 1)) times :math:`\bar A / (\bar A + \epsilon)`, with
    :math:`\bar A` the window's mean attention: it lies between the window's min and max
    up to that factor, which shrinks Y towards 0 where all of a window's attention is
    comparable to ``eps``. Computed in at least fp32 (the convolutions overflow fp16 for
    large activations).
    """

    name = "attention"
    paper = True
    citation = "adaptive-pooling paper (attention-weighted pooling)"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 reduction: int = 8, eps: float = 1e-6):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        check_range("reduction", reduction, 1, None, integer=True)
        check_range("eps", eps, 0, None, low_open=True)
        self.reduction, self.eps = int(reduction), float(eps)
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def attention(self, x):
        with torch.autocast(x.device.type, enabled=False):
            xf = upcast(x)
            r, e = self.reduce, self.expand
            h = F.relu(F.conv2d(xf, r.weight.to(xf.dtype), r.bias.to(xf.dtype)))
            return torch.sigmoid(F.conv2d(h, e.weight.to(xf.dtype), e.bias.to(xf.dtype))), xf

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            att, xf = self.attention(x)
            g = self.geometry
            y = avg_pool(xf * att, g) / (avg_pool(att, g) + self.eps)
        return y.to(x.dtype)

    def hparams_repr(self):
        return f"reduction={self.reduction}"
