"""Batched augmentation on the training device: random crop with zero padding, horizontal flip,
uint8 -> float, per-channel normalisation, channels_last.

Every function here works on a whole uint8 batch (N, C, H, W) with a handful of tensor
ops: no Python loop over images, no ``.item()``, no Python branch on tensor values, so
nothing waits for the device. Random draws come from torch's default generator of the
batch's device (``torch.randint(..., device=x.device)``): seed it (``torch.manual_seed``)
to replay them.
"""

from __future__ import annotations

import torch


def crop_flip_indices(n: int, height: int, width: int, padding: int, flip: bool,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (rows (N, H), cols (N, W)) into the padded images, crops and flips in one.

    Image i's output pixel (r, c) is the padded image's pixel (rows[i, r], cols[i, c]):
    rows = dy + r, cols = dx + c with offsets uniform in [0, 2 * padding], and cols
    reversed for the images that are flipped (probability 1/2), which is torchvision's
    RandomCrop followed by RandomHorizontalFlip.
    """
    rows = torch.arange(height, device=device).expand(n, height)
    cols = torch.arange(width, device=device).expand(n, width)
    if padding > 0:
        rows = rows + torch.randint(0, 2 * padding + 1, (n, 1), device=device)
        cols = cols + torch.randint(0, 2 * padding + 1, (n, 1), device=device)
    if flip:
        flipped = torch.randint(0, 2, (n, 1), device=device, dtype=torch.bool)
        cols = torch.where(flipped, cols.flip(1), cols)
    return rows, cols


def random_crop_flip(images: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding ``padding``) and horizontal flip of each image of a batch.

    ``images``: (N, C, H, W) of any dtype, typically uint8; the result has the same shape
    and dtype, in channels_last memory format. Pixels taken from the padding are 0.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = images.shape
    if padding == 0 and not flip:
        return images.contiguous(memory_format=torch.channels_last)
    p = padding
    hp, wp = h + 2 * p, w + 2 * p
    # Pad once, channels last: (N, Hp, Wp, C), each pixel's channels adjacent in memory.
    padded = images.new_zeros((n, hp, wp, c))
    padded[:, p:p + h, p:p + w] = images.permute(0, 2, 3, 1)
    rows, cols = crop_flip_indices(n, h, w, p, flip, images.device)
    # Gather all crops with one indexing op: linear pixel index per (image, r, c).
    pixel = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, h * w, 1).expand(n, h * w, c)
    out = padded.reshape(n, hp * wp, c).gather(1, pixel)
    return out.reshape(n, h, w, c).permute(0, 3, 1, 2)  # NCHW view of NHWC memory


class Normalize:
    """uint8 (N, C, H, W) -> float (x / 255 - mean) / std, channels_last.

    One conversion kernel and one fused multiply-add over the channels_last memory seen
    as rows of W*C values (the per-channel constants tiled along a row), which keeps the
    inner loop long on CPUs. The constants are made once per (device, width): the first
    batch on a new device costs one small host-to-device copy, later ones none.
    """

    def __init__(self, mean, std, dtype: torch.dtype = torch.float32):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(f"need one positive std per mean, got mean={mean} std={std}")
        self.dtype = dtype
        self._rows: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def row_constants(self, device: torch.device, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, -shift), each (width * C,): x_float = x_uint8 * scale - shift."""
        key = (device, width)
        if key not in self._rows:
            mean = torch.tensor(self.mean, dtype=torch.float64)
            std = torch.tensor(self.std, dtype=torch.float64)
            scale = (1.0 / (255.0 * std)).repeat(width).to(self.dtype)
            neg_shift = (-mean / std).repeat(width).to(self.dtype)
            self._rows[key] = (scale.to(device), neg_shift.to(device))
        return self._rows[key]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        if c != len(self.mean):
            raise ValueError(f"{c} channels but {len(self.mean)} means")
        scale, neg_shift = self.row_constants(images.device, w)
        x = images.to(dtype=self.dtype, memory_format=torch.channels_last, copy=True)
        rows = x.permute(0, 2, 3, 1).view(n * h, w * c)  # NHWC memory, one image row a line
        torch.addcmul(neg_shift, rows, scale, out=rows)
        return x


class DeviceAugment:
    """The training and evaluation transforms of the fast path, for batches on any device.

    ``train(x)``: random crop (zero padding ``padding``) + horizontal flip (if ``flip``),
    then normalise; ``eval(x)``: normalise only. Both take uint8 (N, 3, H, W) and return
    float32 channels_last.
    """

    def __init__(self, mean, std, padding: int = 4, flip: bool = True):
        if padding < 0:
            raise ValueError(f"crop padding must be >= 0, got {padding}")
        self.padding, self.flip = int(padding), bool(flip)
        self.normalize = Normalize(mean, std)

    def train(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(random_crop_flip(images, self.padding, self.flip))

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images)

    def __repr__(self) -> str:
        return (f"DeviceAugment(padding={self.padding}, flip={self.flip}, "
                f"mean={self.normalize.mean}, std={self.normalize.std})")
