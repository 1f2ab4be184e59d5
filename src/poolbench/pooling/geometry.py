"""Where a pooling layer's cells are: window geometry and memory layout.

The bottom of the pooling package (it imports nothing from it): :class:`Geometry` holds a
layer's windows with ``nn.MaxPool2d``'s semantics (``kernel_size``, ``stride``,
``padding``, ``ceil_mode``; dilation 1) and answers questions about them (output size,
whether a map needs padding, whether the windows tile it); :func:`pair` reads a size
argument the way ``nn.MaxPool2d`` does; :func:`memory_format` and :func:`in_format` keep a
result in its input's memory format (contiguous or channels_last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def pair(value, name: str) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, as ``nn.MaxPool2d`` takes) as a pair of ints;
    ``ValueError`` naming ``name`` and the value otherwise (bools are not ints here)."""
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
        kernel = pair(kernel_size, "kernel_size")
        if isinstance(stride, (list, tuple)) and len(stride) == 0:
            stride = None  # F.max_pool2d's (and so nn.MaxPool2d's) stride=[] means the kernel
        stride = kernel if stride is None else pair(stride, "stride")
        padding = pair(padding, "padding")
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


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a channels_last tensor (that is not also plainly
    contiguous), else ``torch.contiguous_format``."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def in_format(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``t`` in memory format ``fmt`` (itself, no copy, when it already is)."""
    return t if t.is_contiguous(memory_format=fmt) else t.contiguous(memory_format=fmt)
