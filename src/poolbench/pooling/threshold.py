"""The T-Max-Avg family: max pooling that falls back to a top-K mean below a threshold."""

from __future__ import annotations

import torch
from torch import nn

from .base import PoolBase, check_range
from .functional import max_pool, topk_mean, upcast


class _TopKBase(PoolBase):
    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 topk: int = 3, threshold: float = 0.5):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        n = self.geometry.window_size
        check_range("topk", topk, 1, n, integer=True)
        check_range("threshold", threshold)
        self.topk = int(topk)
        self.threshold = float(threshold)

    def _max_and_topk(self, x: torch.Tensor):
        return max_pool(x, self.geometry), topk_mean(x, self.geometry, self.topk)


class TMaxAvgPool2d(_TopKBase):
    r"""T-Max-Avg pooling (Zhao & Zhang, Sci. Rep. 14:1589, 2024).

    With :math:`X` the values of one window, :math:`m = \max(X)` and
    :math:`t_K = \mathrm{mean}(\mathrm{top}_K(X))`:

    .. math:: Y = m \text{ if } m \ge T \text{ else } t_K

    ``topk`` (K, 1 <= K <= window size) and ``threshold`` (T) are fixed hyperparameters.
    The switch is hard, so T receives no gradient (see ``learnable_t`` for a learnable T).
    Where padding cuts a window to fewer than K real values, those values are averaged.
    """

    name = "tmaxavg"
    paper = True
    citation = "Zhao & Zhang 2024, Sci. Rep. 14:1589"

    def forward(self, x):
        m, t = self._max_and_topk(x)
        return torch.where(m >= self.threshold, m, t)

    def hparams_repr(self):
        return f"topk={self.topk}, threshold={self.threshold}"


class SoftTMaxAvgPool2d(_TopKBase):
    r"""Soft T-Max-Avg pooling: a smooth, differentiable version of T-Max-Avg.

    .. math::
        a = \sigma\big((m - T)/\tau\big), \qquad Y = a\,m + (1 - a)\,t_K

    with :math:`m = \max(X)`, :math:`t_K` the mean of the K largest values of the window,
    threshold T and temperature :math:`\tau > 0` fixed. As :math:`\tau \to 0` this becomes
    ``tmaxavg``. (The paper's released code had no learnable parameter here either; the
    learnable-threshold variant is ``learnable_t``.)
    """

    name = "soft_tmaxavg"
    paper = True
    citation = "Adaptive Pooling Innovations for Efficient Deep Learning (soft T-Max-Avg)"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 topk: int = 3, threshold: float = 0.5, temperature: float = 0.1):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode, topk, threshold)
        check_range("temperature", temperature, 0, None, low_open=True)
        self.temperature = float(temperature)

    def _threshold(self, x):
        return self.threshold

    def forward(self, x):
        m, t = self._max_and_topk(x)
        # The gate is computed in fp32: (m - T) / tau overflows fp16 for large activations.
        a = torch.sigmoid((upcast(m) - self._threshold(x)) / self.temperature).to(m.dtype)
        return t + a * (m - t)

    def hparams_repr(self):
        return f"topk={self.topk}, threshold={self.threshold}, temperature={self.temperature}"


class LearnableTPool2d(SoftTMaxAvgPool2d):
    r"""Soft T-Max-Avg with a learnable per-channel threshold :math:`T_c`.

    .. math:: a_c = \sigma\big((m - T_c)/\tau\big), \qquad Y = a_c\,m + (1 - a_c)\,t_K

    :math:`T_c` is initialised to ``threshold``. Because the switch is a sigmoid, not a hard
    comparison, :math:`\partial Y/\partial T_c = -(m - t_K)\,a_c(1-a_c)/\tau \ne 0` and the
    threshold really learns (the paper's released code used a hard switch, so its T never
    received a gradient).
    """

    name = "learnable_t"
    paper = True
    citation = "Adaptive Pooling Innovations for Efficient Deep Learning (learnable T)"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 topk: int = 3, threshold: float = 0.5, temperature: float = 0.1):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode,
                         topk, threshold, temperature)
        self.t = nn.Parameter(torch.full((channels,), float(threshold)))

    def _threshold(self, x):
        return upcast(self.t).view(1, -1, 1, 1)

    def learned_summary(self):
        t = self.t.detach()
        return {"threshold_mean": t.mean(), "threshold_std": t.std(unbiased=False)}
