"""Strided convolution in place of pooling: learned downsampling, not a window statistic."""

from __future__ import annotations

from torch import nn

from .base import PoolBase
from .functional import pad_to_output


class StridedConvPool2d(PoolBase):
    r"""Strided convolution in place of pooling (Springenberg et al., ICLR-W 2015).

    .. math:: Y = W * X + b \quad\text{with stride } s,\; W \in \mathbb{R}^{C\times C\times k\times k}

    A learnable C -> C convolution with the pooling layer's kernel, stride and padding (zero
    padding, as any convolution; for ``ceil_mode`` the bottom/right is zero-padded so the
    output size matches). ``C*C*k*k + C`` parameters.
    """

    name = "strided_conv"
    citation = "Springenberg et al. 2015, Striving for simplicity: the all convolutional net"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 bias: bool = True):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        g = self.geometry
        self.conv = nn.Conv2d(channels, channels, g.kernel, g.stride, g.padding, bias=bool(bias))

    def forward(self, x):
        g = self.geometry
        if g.ceil_mode:
            x = pad_to_output(x, g.output_size(*x.shape[-2:]), g.kernel, g.stride, g.padding)
        return self.conv(x)
