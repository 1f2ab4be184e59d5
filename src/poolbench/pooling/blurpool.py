"""Anti-aliased downsampling: max pooling followed by a fixed low-pass filter (BlurPool)."""

from __future__ import annotations

from torch.nn import functional as F

from .base import PoolBase, check_range
from .functional import max_pool, pad_to_output
from .geometry import Geometry


class MaxBlurPool2d(PoolBase):
    r"""Anti-aliased max pooling, MaxBlurPool (Zhang, ICML 2019).

    .. math:: Y = \mathrm{Subsample}_s\big(\mathrm{Blur}_f(\mathrm{MaxPool}_{k,\,1}(X))\big)

    Dense max pooling (stride 1, same kernel and padding) followed by timm's
    ``BlurPool2d``: a fixed binomial low-pass filter of size ``filt_size`` applied with
    the layer's stride and reflect padding. Where the blurred map would come out smaller
    than ``nn.MaxPool2d``'s output (``ceil_mode``, tiny maps), the dense max map is
    edge-replicated first. No learnable parameters.
    """

    name = "blurpool"
    citation = "Zhang 2019, Making convolutional networks shift-invariant again"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 filt_size: int = 3):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        check_range("filt_size", filt_size, 2, 7, integer=True)
        g = self.geometry
        if g.stride[0] != g.stride[1]:
            raise ValueError(f"blurpool needs a square stride, got {g.stride}")
        # (imported here: timm takes seconds to import, and only this method needs it)
        from timm.layers import BlurPool2d

        self.dense = Geometry.create(g.kernel, 1, g.padding, False)
        self.blur = BlurPool2d(channels, filt_size=int(filt_size), stride=g.stride[0])
        self.filt_size = int(filt_size)

    def forward(self, x):
        g = self.geometry
        out_hw = g.output_size(*x.shape[-2:])
        y = max_pool(x, self.dense)
        pad = self.blur.padding[0]
        f, s = self.filt_size, g.stride[0]
        y = pad_to_output(y, out_hw, (f, f), (s, s), (pad, pad), mode="replicate")
        if min(y.shape[-2:]) <= pad:  # reflect padding needs more cells than it pads
            y = F.pad(y, (0, max(0, pad + 1 - y.shape[-1]), 0, max(0, pad + 1 - y.shape[-2])),
                      mode="replicate")
        return self.blur(y)[..., : out_hw[0], : out_hw[1]]

    def hparams_repr(self):
        return f"filt_size={self.filt_size}"
