"""Fractional max pooling (Graham 2014), and where it refuses to run: the sizes at which its
pseudo-random windows have no freedom left (:func:`fixed_window_starts`)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import PoolBase, check_range
from .geometry import in_format, memory_format


def fixed_window_starts(size: int, kernel: int, out: int) -> list[int] | None:
    """Where PyTorch's fractional max pooling puts its windows along one side of ``size``
    cells pooled to ``out`` cells by ``kernel``-cell windows, when that does not depend on
    the random draw u; None when it does.

    Window i < out - 1 starts at floor((i + u) a) - floor(u a), a = (size - kernel) /
    (out - 1), and the last at size - kernel: fixed when a is a whole number (at i a; so
    always when out = 2: at 0 and size - kernel), or when out = 1 (at size - kernel). A side
    too short for ``out`` windows at distinct places is taken as edge-padded to
    ``out + kernel - 1`` cells (a = 1: fixed too).
    """
    size = max(size, out + kernel - 1)
    if out == 1:
        return [size - kernel]
    step, rest = divmod(size - kernel, out - 1)
    return None if rest else [i * step for i in range(out)]


def _starts_text(starts: list[int]) -> str:
    shown = starts if len(starts) <= 4 else [*starts[:3], "...", starts[-1]]
    return ", ".join(map(str, shown))


def _pair_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


class FractionalMaxPool2d(PoolBase):
    r"""Fractional max pooling (Graham 2014), refusing sizes where its random windows are fixed.

    Via PyTorch's ``fractional_max_pool2d``: pseudo-random pooling regions whose output size
    equals that of the ``nn.MaxPool2d`` it replaces (so the network's shapes do not change).
    Along a side of n cells pooled to m by k-cell windows, window i < m - 1 starts at
    :math:`\lfloor (i + u) a \rfloor - \lfloor u a \rfloor` with
    :math:`a = (n - k) / (m - 1)`, the last at n - k; u ~ U[0, 1) per sample, channel and
    side. Training draws u afresh every forward pass (on the device); evaluation uses
    u = ``eval_sample``, so evaluation is deterministic. The output keeps the input's memory
    format (channels_last or contiguous).

    **Refused geometries.** Where a is a whole number, or m <= 2, the windows do not depend
    on u: the layer would compute a fixed pooling under Graham's name. At a ratio of exactly
    2 (every 2x2/2 pool on an even size: all five pools of VGG16 and ResNet18's paper stem,
    on 32 and 64 px images) it is max pooling itself, and no faithful form with
    ``nn.MaxPool2d``'s output shape exists: Graham's regions at ratio 2 are all 2 x 2. So the
    layer raises ``ValueError`` there (:meth:`check_input_size`: in every forward pass, and at
    build time through ``build_model(..., input_size=)``). It works where a is fractional on
    both sides, e.g. 2x2/2 pools on odd sizes >= 7 and 3x3/2 pools with padding 1 on sizes
    >= 6 (ResNet18's ``stem=imagenet``: 16 -> 8 and 32 -> 16 on 32 and 64 px images).
    """

    name = "fractional_max"
    citation = "Graham 2014, Fractional max-pooling"

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 eval_sample: float = 0.5):
        super().__init__(channels, kernel_size, stride, padding, ceil_mode)
        self.eval_sample = float(check_range("eval_sample", eval_sample, 0, 1, high_open=True))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` where the pseudo-random windows would be fixed (see the class)."""
        out = self.geometry.output_size(height, width)
        fixed = self._fixed_sides((height, width), out)
        if fixed:
            raise ValueError(self._refusal((height, width), out, fixed))

    def _fixed_sides(self, size: tuple[int, int], out: tuple[int, int]) -> dict[str, str]:
        """Side -> its fixed window starts (as text), for the sides whose windows are fixed."""
        g = self.geometry
        fixed = {}
        for side, n, k, m, s, p in zip(("height", "width"), size, g.kernel, out, g.stride,
                                       g.padding):
            starts = fixed_window_starts(n, k, m)
            if starts is not None:
                maxpool = p == 0 and starts == [i * s for i in range(m)]
                fixed[side] = _starts_text(starts) + (", max pooling's own" if maxpool else "")
        return fixed

    def _refusal(self, size: tuple[int, int], out: tuple[int, int], fixed: dict[str, str]
                 ) -> str:
        g = self.geometry
        texts = list(fixed.values())
        maxpool_only = len(texts) == 2 and all(t.endswith("own") for t in texts)
        if len(texts) == 2 and texts[0] == texts[1]:
            where = f"height and width: {texts[0]}"
        else:
            where = "; ".join(f"{side}: {text}" for side, text in fixed.items())
        return (
            f"fractional_max cannot pool {size[0]}x{size[1]} maps to nn.MaxPool2d's "
            f"{out[0]}x{out[1]} ({g.kernel[0]}x{g.kernel[1]} windows, stride "
            f"{_pair_text(g.stride)}, padding {_pair_text(g.padding)}): Graham's pseudo-random "
            f"windows would have no freedom left, every draw placing them at the same starts "
            f"({where}), so the layer would compute "
            f"{'max pooling' if maxpool_only else 'a fixed pooling'} under Graham's name. A "
            "side of n cells pooled to m by k-cell windows is random only if m >= 3 and "
            "(n - k) / (m - 1) is not a whole number: e.g. 2x2/2 pools on odd sizes >= 7, 3x3/2 "
            "pools with padding 1 on sizes >= 6 (resnet18 with model.stem=imagenet on 32 and "
            "64 px images); never 2x2/2 pools on even sizes (every pool of vgg16 and of "
            "resnet18's stem=paper)")

    def forward(self, x):
        h, w = x.shape[-2:]
        self.check_input_size(h, w)  # Python ints: no host-device synchronisation
        n, c = x.shape[:2]
        if self.training:
            samples = torch.rand(n, c, 2, device=x.device, dtype=x.dtype)
        else:
            samples = torch.full((n, c, 2), self.eval_sample, device=x.device, dtype=x.dtype)
        y = F.fractional_max_pool2d(x, self.geometry.kernel,
                                    output_size=self.geometry.output_size(h, w),
                                    _random_samples=samples)
        return in_format(y, memory_format(x))

    def hparams_repr(self):
        return f"eval_sample={self.eval_sample}"
