"""Classic window statistics: max, average, Lp and stochastic pooling."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import PoolBase, check_range
from .functional import avg_pool, max_pool, upcast, windows
from .geometry import in_format, memory_format


class MaxPool2d(PoolBase):
    r"""Max pooling, the baseline: :math:`Y = \max(X)` (native kernel)."""

    name = "max"
    paper = True
    citation = "Ranzato et al. 2007; baseline of every study here"

    def forward(self, x):
        return max_pool(x, self.geometry)


class AvgPool2d(PoolBase):
    r"""Average pooling: :math:`Y = \mathrm{mean}(X)` over the window's real cells.

    Padded cells never dilute the mean (``count_include_pad=False``).
    """

    name = "avg"
    citation = "LeCun et al. 1989 (subsampling)"

    def forward(self, x):
        return avg_pool(x, self.geometry)


class LpPool2d(PoolBase):
    r"""Lp pooling (Sermanet, Chintala & LeCun, ICPR 2012).

    .. math:: Y = \Big(\frac{1}{|X|}\sum_{x \in X} |x|^p\Big)^{1/p}

    p = 1 is the mean of magnitudes, p -> inf tends to max |x|. Taking |x| makes it safe
    for signed inputs. ``learnable=True`` learns one p_c >= 1 per channel
    (:math:`p_c = 1 + \mathrm{softplus}(\rho_c)`, initialised at ``p``).

    Numerics: computed in fp32 after dividing by the largest magnitude in each channel
    plane (a constant that the p-norm is homogeneous in, so the result and its gradient
    are exact); windows whose values are all below about :math:`10^{-38/p}` of that
    largest magnitude underflow to 0. An all-zero window gives 0 with zero gradient.
    """

    name = "lp"
    citation = "Sermanet, Chintala & LeCun 2012"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 p: float = 3.0, learnable: bool = False):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        check_range("p", p, 1, 32)
        self.p_init, self.learnable = float(p), bool(learnable)
        if self.learnable:
            # softplus^-1(p - 1); p = 1 exactly would need -inf, so start just above it.
            rho = torch.tensor(max(self.p_init - 1.0, 1e-4)).expm1().log()
            self.rho = nn.Parameter(rho.repeat(channels))

    def p(self) -> torch.Tensor | float:
        if self.learnable:
            return 1.0 + F.softplus(self.rho).view(1, -1, 1, 1)
        return self.p_init

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            a = upcast(x).abs()
            tiny = torch.finfo(a.dtype).tiny
            scale = a.detach().amax(dim=(-2, -1), keepdim=True).clamp_min(tiny)
            r = a / scale
            p = self.p()
            if self.learnable:  # r ** p with a gradient for p that stays finite at r = 0
                rp = torch.exp(p * torch.log(r.clamp_min(1e-30)))
            else:
                rp = r.pow(p)
            mean = avg_pool(rp, self.geometry)
            nonzero = mean >= tiny  # below tiny r ** p has underflowed: 0, not tiny ** (1/p)
            root = torch.where(nonzero, mean.clamp_min(tiny).pow(1.0 / p), 0.0)
            y = root * scale  # (N, C, 1, 1) broadcasts over the pooled map
        return y.to(x.dtype)

    def learned_summary(self):
        if not self.learnable:
            return {}
        p = self.p().detach()
        return {"p_mean": p.mean(), "p_std": p.std(unbiased=False)}

    def hparams_repr(self):
        return f"p={self.p_init}, learnable={self.learnable}"


class StochasticPool2d(PoolBase):
    r"""Stochastic pooling (Zeiler & Fergus, ICLR 2013).

    With :math:`p_i = a_i / \sum_j a_j` and :math:`a = \max(x, 0)` over a window:
    training samples one cell with probability :math:`p_i` and outputs its value;
    evaluation outputs the probability-weighted average :math:`\sum_i p_i x_i`.
    A window with no positive value is sampled (or averaged) uniformly over its real cells.
    Sampling is inverse-CDF on the input's device (no host-device synchronisation). The
    output keeps the input's memory format (channels_last or contiguous).
    """

    name = "stochastic"
    citation = "Zeiler & Fergus 2013"

    def forward(self, x):
        win, valid = windows(x, self.geometry, fill=0.0)
        flat = win.flatten(-2)  # (N, C, Ho, Wo, n)
        weight = flat.detach().clamp_min(0)
        uniform = torch.ones_like(weight) if valid is None else \
            valid.flatten(-2).to(weight.dtype).expand_as(weight)
        if valid is not None:
            weight = weight * uniform
        total = weight.sum(-1, keepdim=True)
        has_pos = total > 0
        weight = torch.where(has_pos, weight, uniform)
        total = weight.sum(-1, keepdim=True)
        if self.training:
            u = torch.rand(total.shape, device=x.device, dtype=torch.float32)
            cdf = weight.float().cumsum(-1)
            idx = (cdf <= u * cdf[..., -1:]).sum(-1, keepdim=True)
            idx = idx.clamp_max(flat.shape[-1] - 1)
            return in_format(flat.gather(-1, idx).squeeze(-1), memory_format(x))
        # Expectation over the sampling distribution. The probabilities depend on x, so
        # they carry gradient here (unlike the detached weights used for sampling).
        # In at least fp32: a * x overflows fp16 as soon as |x| > 256.
        f = upcast(flat)
        a = f.clamp_min(0)
        if valid is not None:
            a = a * uniform
        a = torch.where(has_pos, a, uniform)
        return in_format(((a * f).sum(-1) / a.sum(-1)).to(x.dtype), memory_format(x))
