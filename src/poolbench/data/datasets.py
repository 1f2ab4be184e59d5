"""The dataset registry, loading into memory, the held-out validation split, channel statistics."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .cifar import load_cifar100
from .tinyimagenet import load_tinyimagenet


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of poolbench needs to know about a dataset, before loading it."""

    name: str
    title: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]   # per channel, of the uint8 training images / 255
    std: tuple[float, float, float]
    val_size: int                      # default size of the validation split held out of train
    crop_padding: int                  # default zero padding of the random crop
    train_size: int                    # official sizes, for messages and sanity checks
    test_size: int
    loader: Callable[..., dict]


DATASETS: dict[str, DatasetSpec] = {
    "cifar100": DatasetSpec(
        name="cifar100", title="CIFAR-100", num_classes=100, image_size=32,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        val_size=5_000, crop_padding=4, train_size=50_000, test_size=10_000,
        loader=load_cifar100),
    "tinyimagenet": DatasetSpec(
        name="tinyimagenet", title="Tiny ImageNet", num_classes=200, image_size=64,
        mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
        val_size=10_000, crop_padding=8, train_size=100_000, test_size=10_000,
        loader=load_tinyimagenet),
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def load_dataset(name: str, root: str | Path, download: bool = False) -> dict:
    """The whole dataset in memory.

    Returns ``train_images``/``test_images`` (uint8, (N, 3, H, W)), ``train_labels``/
    ``test_labels`` (int64, (N,)) and ``classes`` (class names, index = label). For Tiny
    ImageNet the test set is the official val set. Missing data is downloaded when
    ``download`` is true; otherwise :class:`DatasetNotFoundError` says what to put where.
    """
    spec = dataset_spec(name)
    d = spec.loader(root, download=download)
    size = spec.image_size
    for split in ("train", "test"):
        images, labels = d[f"{split}_images"], d[f"{split}_labels"]
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, size, size), images.shape
        assert labels.dtype == torch.int64 and labels.shape == (images.shape[0],)
    if len(d["classes"]) != spec.num_classes:
        from .download import DatasetFormatError
        raise DatasetFormatError(
            f"{spec.title} under {root} has {len(d['classes'])} classes, expected {spec.num_classes}")
    return d


def channel_stats(images: torch.Tensor, chunk_size: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 images (N, C, H, W), on the [0, 1] scale.

    Accumulated in float64 over chunks, so it works on the whole Tiny ImageNet training
    set without a float copy of it. ``std`` is the population standard deviation over all
    pixels, the convention of the published constants in :data:`DATASETS`.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk_size):
        x = images[start:start + chunk_size].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def split_train_val(labels: torch.Tensor, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) of a seeded, class-stratified hold-out of ``val_size`` items.

    Each class gives ``val_size`` in proportion to its size (largest remainders get the
    rounding), chosen uniformly at random with a generator seeded by ``seed`` alone, so
    every run with the same ``split_seed`` uses the same validation images whatever its
    training seed. Both index tensors are sorted.
    """
    n = labels.shape[0]
    given = val_size
    val_size = _as_int(val_size)
    if val_size is None or not 0 <= val_size < n:
        raise ValueError(
            f"val_size={given!r} is invalid: it must be an integer with 0 <= val_size < {n} "
            f"(the training set's size); 0 disables the validation split")
    if val_size == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.int64)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1).to(torch.float64)
    exact = counts * (val_size / n)
    quota = exact.floor().to(torch.int64)
    remainder = val_size - int(quota.sum())
    if remainder:
        g = torch.Generator().manual_seed(seed)
        # largest fractional parts first; ties broken at random but reproducibly
        frac = exact - quota + torch.rand(len(counts), generator=g, dtype=torch.float64) * 1e-9
        quota[torch.argsort(frac, descending=True)[:remainder]] += 1
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    # rank of each item within its class, in permutation order
    by_class = perm[torch.argsort(labels[perm], stable=True)]
    sorted_labels = labels[by_class]
    starts = torch.cumsum(counts.to(torch.int64), 0) - counts.to(torch.int64)
    rank = torch.arange(n) - starts[sorted_labels]
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[by_class[rank < quota[sorted_labels]]] = True
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def _as_int(value) -> int | None:
    """``value`` as an int if it is integral (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return operator.index(value)
    except TypeError:
        return None
