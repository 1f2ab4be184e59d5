"""The window statistics pooling methods are built from, as functions of (tensor, Geometry).

Native max and average pooling, the pooling windows as a view (:func:`windows`), the mean
of the top K values, SoftPool, and the fused max and mean that the max/average blends use.
This is the one place that picks, per call, a tile kernel (:mod:`~poolbench.pooling.tiles`,
where the windows tile the input: :func:`can_tile`) or the generic path (native kernels or
``unfold``); both compute the same values and gradients. Methods call these functions and
never choose a path themselves.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .geometry import Geometry
from .tiles import max_avg_tiles, soft_pool_tiles, topk_mean_tiles


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least fp32: fp16/bf16 become fp32, fp32 and fp64 are kept as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def max_pool(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """Native max pooling (padding never wins)."""
    return F.max_pool2d(x, g.kernel, g.stride, g.padding, ceil_mode=g.ceil_mode)


def avg_pool(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """Native average pooling over the valid cells of each window only."""
    return F.avg_pool2d(
        x, g.kernel, g.stride, g.padding, ceil_mode=g.ceil_mode, count_include_pad=False
    )


def can_tile(x: torch.Tensor, g: Geometry) -> bool:
    """True when the tile kernels apply: 4-d floating input, stride == kernel, no padding."""
    return (
        x.dim() == 4 and x.is_floating_point() and g.tiles
        and not g.needs_padding(x.shape[-2], x.shape[-1])
        and x.shape[-2] >= g.kernel[0] and x.shape[-1] >= g.kernel[1]
    )


def windows(x: torch.Tensor, g: Geometry, fill: float = 0.0):
    """Return ``(win, valid)``: the pooling windows of ``x`` and where they hold real cells.

    ``win`` has shape ``(N, C, Ho, Wo, kh, kw)``; it is a view of ``x`` (no copy) when the
    geometry needs no padding for this input, and a view of a padded copy otherwise, with the
    padded cells set to ``fill``. ``valid`` is ``None`` when every cell is real, else a bool
    tensor of shape ``(Ho, Wo, kh, kw)`` that is False on padded cells.
    """
    h, w = x.shape[-2:]
    ho, wo = g.output_size(h, w)
    (kh, kw), (sh, sw), (ph, pw) = g.kernel, g.stride, g.padding
    valid = None
    if g.needs_padding(h, w):
        extra_h = max(0, (ho - 1) * sh + kh - (h + 2 * ph))
        extra_w = max(0, (wo - 1) * sw + kw - (w + 2 * pw))
        pad = (pw, pw + extra_w, ph, ph + extra_h)
        x = F.pad(x, pad, value=fill)
        ones = torch.ones((h, w), dtype=torch.bool, device=x.device)
        valid = F.pad(ones, pad, value=False)
        valid = valid.unfold(0, kh, sh).unfold(1, kw, sw)[:ho, :wo]
    win = x.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :ho, :wo]
    return win, valid


def pad_to_output(x, out_hw, kernel, stride, padding, mode="constant"):
    """Pad the bottom/right of ``x`` so a (kernel, stride, padding) op yields ``out_hw``."""
    extra = []
    for dim, (out, k, s, p) in enumerate(zip(out_hw, kernel, stride, padding)):
        size = x.shape[-2 + dim]
        extra.append(max(0, (out - 1) * s + k - (size + 2 * p)))
    if any(extra):
        x = F.pad(x, (0, extra[1], 0, extra[0]), mode=mode)
    return x


def topk_mean(x: torch.Tensor, g: Geometry, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest real values of each window (fewer where padding cuts in)."""
    if k == 1:
        return max_pool(x, g)
    if k == g.window_size and not g.needs_padding(*x.shape[-2:]):
        return avg_pool(x, g)
    if can_tile(x, g):  # windows tile the input: sorting network + mask backward
        return topk_mean_tiles(x, g, k)
    win, valid = windows(x, g, fill=-math.inf)
    flat = win.flatten(-2)
    vals = flat.topk(k, dim=-1, sorted=True).values
    if valid is None:
        return vals.mean(dim=-1)
    # Windows cut by padding hold fewer than k real values: average the real ones only.
    n_real = valid.flatten(-2).sum(-1, keepdim=True).clamp(max=k)  # (Ho, Wo, 1)
    rank = torch.arange(k, device=x.device)
    keep = rank < n_real
    vals = vals.masked_fill(~keep, 0.0)
    return vals.sum(dim=-1) / n_real.squeeze(-1).to(vals.dtype)


def soft_pool2d(x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
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
    temporaries (:func:`poolbench.pooling.tiles.soft_pool_tiles`).
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


def max_avg(x: torch.Tensor, g: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max_pool(x, g), avg_pool(x, g))``: one fused pass where the windows tile the input
    (:func:`poolbench.pooling.tiles.max_avg_tiles`), else the two native kernels."""
    if can_tile(x, g):
        return max_avg_tiles(x, g)
    return max_pool(x, g), avg_pool(x, g)
