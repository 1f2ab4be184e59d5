"""Shared helpers for the pooling tests: naive, independent reference computations.

Nothing here calls poolbench: the references enumerate pooling windows in plain Python from
``nn.MaxPool2d``'s output shape and its windowing rule (window ``i`` starts at
``i * stride - padding``; only the cells inside the input are real), so that the library's
own geometry, padding and unfold code can be checked against them.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch.nn import functional as F


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def maxpool_out_hw(h, w, kernel, stride=None, padding=0, ceil_mode=False):
    """Spatial output size of ``nn.MaxPool2d`` (taken from PyTorch itself)."""
    stride = kernel if stride is None else stride
    y = F.max_pool2d(torch.zeros(1, 1, h, w), kernel, stride, padding, ceil_mode=ceil_mode)
    return tuple(y.shape[-2:])


def window_slices(h, w, kernel, stride=None, padding=0, ceil_mode=False):
    """Yield ``(i, j, rows, cols)``: the real (non-padding) cells of each output's window."""
    k, s, p = pair(kernel), pair(kernel if stride is None else stride), pair(padding)
    ho, wo = maxpool_out_hw(h, w, kernel, stride, padding, ceil_mode)
    for i in range(ho):
        r0 = i * s[0] - p[0]
        rows = slice(max(r0, 0), min(r0 + k[0], h))
        assert rows.stop > rows.start, "a window without real cells"
        for j in range(wo):
            c0 = j * s[1] - p[1]
            cols = slice(max(c0, 0), min(c0 + k[1], w))
            assert cols.stop > cols.start, "a window without real cells"
            yield i, j, rows, cols


def window_reduce(x, fn, kernel, stride=None, padding=0, ceil_mode=False):
    """Apply ``fn`` to the real cells of every window.

    ``fn`` maps a ``(N, C, n)`` tensor of the ``n`` real cells of one window position to an
    ``(N, C)`` tensor. Returns ``(N, C, Ho, Wo)`` with ``nn.MaxPool2d``'s output size.
    """
    n, c, h, w = x.shape
    ho, wo = maxpool_out_hw(h, w, kernel, stride, padding, ceil_mode)
    out = x.new_empty(n, c, ho, wo)
    for i, j, rows, cols in window_slices(h, w, kernel, stride, padding, ceil_mode):
        out[:, :, i, j] = fn(x[:, :, rows, cols].reshape(n, c, -1))
    return out


def ref_max(v):
    return v.max(-1).values


def ref_mean(v):
    return v.mean(-1)


def ref_min(v):
    return v.min(-1).values


def ref_topk_mean(k):
    """Mean of the k largest values (of all of them where the window has fewer than k)."""
    def fn(v):
        return v.sort(-1, descending=True).values[..., :k].mean(-1)
    return fn


def ref_softpool(v):
    """SoftPool, written naively (fine for moderate inputs in float64)."""
    e = v.exp()
    return (e * v).sum(-1) / e.sum(-1)


def ref_softpool_stable(v):
    """SoftPool via a stable softmax, usable at any scale."""
    return (torch.softmax(v, -1) * v).sum(-1)


def ref_lp(p):
    """(mean |x|^p)^(1/p); ``p`` a float or a (1, C) tensor."""
    def fn(v):
        if isinstance(p, torch.Tensor):
            pp = p.reshape(1, -1, 1).to(v.dtype)
            return (v.abs() ** pp).mean(-1) ** (1.0 / pp[..., 0])
        return (v.abs() ** p).mean(-1) ** (1.0 / p)
    return fn


def ref_stochastic_expectation(v):
    """Zeiler & Fergus at test time: sum p_i x_i, p = relu(x) / sum relu(x); uniform if 0."""
    a = v.clamp_min(0)
    s = a.sum(-1, keepdim=True)
    prob = torch.where(s > 0, a / torch.where(s > 0, s, 1), 1.0 / v.shape[-1])
    return (prob * v).sum(-1)


def conv1x1(x, weight, bias):
    """Dense 1x1 convolution written as an einsum. ``weight``: (Cout, Cin, 1, 1)."""
    return torch.einsum("oc,nchw->nohw", weight[:, :, 0, 0], x) + bias.view(1, -1, 1, 1)


def values_in_window(y, x, kernel, stride=None, padding=0, ceil_mode=False, atol=0.0):
    """True where each output equals some real cell of its own window (per sample/channel)."""
    n, c, h, w = x.shape
    ok = torch.zeros(y.shape, dtype=torch.bool)
    for i, j, rows, cols in window_slices(h, w, kernel, stride, padding, ceil_mode):
        v = x[:, :, rows, cols].reshape(n, c, -1)
        ok[:, :, i, j] = ((v - y[:, :, i, j, None]).abs() <= atol).any(-1)
    return ok


@pytest.fixture(scope="session")
def ref():
    """The reference helpers of this module (``ref.window_reduce(...)`` etc.)."""
    return sys.modules[__name__]
