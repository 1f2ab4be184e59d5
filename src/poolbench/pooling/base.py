"""Shared machinery of every pooling layer: window geometry, argument checks, sampling.

Every pooling layer in poolbench takes the same constructor arguments as ``nn.MaxPool2d``
(``kernel_size``, ``stride``, ``padding``, ``ceil_mode``) plus ``channels`` and its own
hyperparameters, and produces exactly the output shape ``nn.MaxPool2d`` would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


@dataclass(frozen=True)
class Geometry:
    """Pooling-window geometry with ``nn.MaxPool2d`` semantics (dilation 1)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool

    @classmethod
    def create(cls, kernel_size=2, stride=None, padding=0, ceil_mode=False) -> Geometry:
        kernel = _pair(kernel_size, "kernel_size")
        if isinstance(stride, (list, tuple)) and len(stride) == 0:
            stride = None  # F.max_pool2d's (and so nn.MaxPool2d's) stride=[] means the kernel
        stride = kernel if stride is None else _pair(stride, "stride")
        padding = _pair(padding, "padding")
        if min(kernel) < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size!r}")
        if min(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride!r}")
        if min(padding) < 0 or padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            raise ValueError(
                f"padding must be in [0, kernel_size // 2] = [0, {kernel[0] // 2}] x "
                f"[0, {kernel[1] // 2}], got {padding!r}"
            )
        return cls(kernel, stride, padding, bool(ceil_mode))

    @property
    def window_size(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def tiles(self) -> bool:
        """True when windows neither overlap nor leave gaps (stride == kernel)."""
        return self.kernel == self.stride

    def _out1(self, size: int, dim: int) -> int:
        k, s, p = self.kernel[dim], self.stride[dim], self.padding[dim]
        span = size + 2 * p - k
        if span < 0:
            raise ValueError(
                f"input size {size} is smaller than the pooling window {k} (padding {p})"
            )
        out = (-(-span // s) if self.ceil_mode else span // s) + 1
        if self.ceil_mode and (out - 1) * s >= size + p:
            out -= 1  # the last window must start inside the input or the left padding
        return out

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial output size, identical to ``nn.MaxPool2d``'s."""
        return self._out1(height, 0), self._out1(width, 1)

    def needs_padding(self, height: int, width: int) -> bool:
        """True when some window covers padding or the ceil-mode overhang."""
        ho, wo = self.output_size(height, width)
        return any(self.padding) or (
            (ho - 1) * self.stride[0] + self.kernel[0] > height
            or (wo - 1) * self.stride[1] + self.kernel[1] > width
        )

    def pool_args(self) -> dict:
        return dict(
            kernel_size=self.kernel, stride=self.stride, padding=self.padding,
            ceil_mode=self.ceil_mode,
        )


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least fp32: fp16/bf16 become fp32, fp32 and fp64 are kept as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a channels_last tensor (that is not also plainly
    contiguous), else ``torch.contiguous_format``."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def in_format(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``t`` in memory format ``fmt`` (itself, no copy, when it already is)."""
    return t if t.is_contiguous(memory_format=fmt) else t.contiguous(memory_format=fmt)


def max_pool(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """Native max pooling (padding never wins)."""
    return F.max_pool2d(x, g.kernel, g.stride, g.padding, ceil_mode=g.ceil_mode)


def avg_pool(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """Native average pooling over the valid cells of each window only."""
    return F.avg_pool2d(
        x, g.kernel, g.stride, g.padding, ceil_mode=g.ceil_mode, count_include_pad=False
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


def topk_mean(x: torch.Tensor, g: Geometry, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest real values of each window (fewer where padding cuts in)."""
    if k == 1:
        return max_pool(x, g)
    if k == g.window_size and not g.needs_padding(*x.shape[-2:]):
        return avg_pool(x, g)
    from . import _fast  # imported here: _fast imports this module

    if _fast.can_tile(x, g):  # windows tile the input: sorting network + mask backward
        return _fast.topk_mean_tiles(x, g, k)
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


class PoolBase(nn.Module):
    """Base class: stores the geometry and the channel count; subclasses implement forward.

    Class attributes that subclasses set:
      ``name``: registry name; ``paper``: True for the adaptive-pooling paper's eight;
      ``citation``: short reference.
    """

    name: str = ""
    paper: bool = False
    citation: str = ""

    def __init__(self, channels: int, kernel_size=2, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.geometry = Geometry.create(kernel_size, stride, padding, ceil_mode)

    # nn.MaxPool2d-style attributes, so code that inspects pooling layers keeps working.
    @property
    def kernel_size(self):
        return self.geometry.kernel

    @property
    def stride(self):
        return self.geometry.stride

    @property
    def padding(self):
        return self.geometry.padding

    @property
    def ceil_mode(self):
        return self.geometry.ceil_mode

    def extra_repr(self) -> str:
        g = self.geometry
        s = f"channels={self.channels}, kernel_size={g.kernel}, stride={g.stride}"
        if any(g.padding):
            s += f", padding={g.padding}"
        if g.ceil_mode:
            s += ", ceil_mode=True"
        hp = self.hparams_repr()
        return f"{s}, {hp}" if hp else s

    def hparams_repr(self) -> str:
        return ""

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError``, saying why, if this layer cannot pool a ``height`` x ``width``
        map; return None if it can.

        Every method pools any map its window fits (padding included); a method with
        further limits (``fractional_max``) adds them. :func:`poolbench.models.build_model`
        asks every pooling layer at build time when it is given the image size.
        """
        self.geometry.output_size(height, width)

    def learned_summary(self) -> dict[str, torch.Tensor]:
        """Scalar summaries of learned pooling parameters (for per-epoch logging)."""
        return {}


def check_range(name: str, value, low=None, high=None, *, low_open=False, high_open=False,
                integer=False):
    """Raise ``ValueError`` unless ``value`` is a number in the given range."""
    ok_type = (isinstance(value, int) if integer else isinstance(value, (int, float)))
    if isinstance(value, bool) or not ok_type:
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if value != value:  # NaN
        raise ValueError(f"{name} must not be NaN")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(
            f"{name}={value!r} is out of range {lo}{'-inf' if low is None else low}, "
            f"{'inf' if high is None else high}{hi}"
        )
    return value


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")
    return value


SAMPLE_PER = ("batch", "sample", "channel", "sample_channel")


def sample_shape(x: torch.Tensor, per: str) -> tuple[int, ...]:
    """Shape of a random draw shared according to ``per`` (broadcastable to ``x``)."""
    n, c = x.shape[:2]
    return {
        "batch": (1, 1, 1, 1),
        "sample": (n, 1, 1, 1),
        "channel": (1, c, 1, 1),
        "sample_channel": (n, c, 1, 1),
    }[per]
