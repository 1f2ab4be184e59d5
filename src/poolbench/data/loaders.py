"""Batch loaders over in-memory uint8 tensors.

:class:`FastLoader` (the default) slices batches straight out of the tensors, in an order
that is a pure function of ``(seed, epoch)``; augmentation happens later, on the device
(:mod:`poolbench.data.augment`). :func:`torchvision_loader` is the standard
``DataLoader`` + per-image ``torchvision.transforms.v2`` pipeline over the same tensors,
kept for comparison.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for epoch ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 0x0DA7A]).generate_state(
        1, dtype=np.uint64)[0]) >> 1


class EpochSampler:
    """The indices ``0..size-1`` of one epoch: a permutation seeded by ``(seed, epoch)``.

    ``set_epoch(e)`` chooses the epoch (Lightning calls it on a loader's ``sampler`` at
    the start of every epoch, also after resuming); otherwise each pass over the sampler
    moves on to the next epoch by itself. The order never depends on the global RNG.
    With ``world_size > 1`` each rank takes every ``world_size``-th index of the shared
    permutation (padded by wrapping around, as ``DistributedSampler`` does, so that
    all ranks get the same number).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.size, self.shuffle, self.seed = int(size), bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch`` (int64)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        if self.world_size > 1:
            total = math.ceil(self.size / self.world_size) * self.world_size
            if total > self.size:
                order = torch.cat([order, order[: total - self.size]]) if self.size else order
            order = order[self.rank::self.world_size]
        return order

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size) if self.world_size > 1 else self.size

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter(self.indices(epoch).tolist())


class FastLoader:
    """Batches ``(images[idx], labels[idx])`` sliced from in-memory tensors.

    A plain iterable with ``__len__`` that Lightning accepts as a dataloader. Shuffled
    loaders draw each epoch's order from :class:`EpochSampler` (``self.sampler``, on which
    Lightning calls ``set_epoch``); ``set_epoch`` here does the same. Iterating is lazy:
    the order is fixed at the first batch, not at ``iter()``.

    ``state_dict()``/``load_state_dict()`` record (epoch, batches yielded), so Lightning
    resumes a checkpoint taken mid-epoch with the very next batch of the same order.

    ``pin_memory``: put each batch in page-locked memory (as ``DataLoader`` does), so its
    copy to a GPU is asynchronous and never waits for the GPU's queue.
    """

    batch_sampler = None  # DataLoader's attribute, which Lightning reads next to ``sampler``

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.drop_last = int(batch_size), bool(drop_last)
        self.pin_memory = bool(pin_memory)
        self.sampler = EpochSampler(images.shape[0], shuffle, seed, rank, world_size)
        self._resume: tuple[int, int] | None = None   # (epoch, batches to skip)
        self._progress: tuple[int, int] | None = None  # (epoch, batches yielded)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will produce."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.sampler.epoch
        self.sampler.epoch = epoch + 1
        skip = 0
        if self._resume is not None:
            if self._resume[0] == epoch:
                skip = self._resume[1]
            self._resume = None
        order = self.sampler.indices(epoch)
        bs = self.batch_size
        for i in range(skip, len(self)):
            idx = order[i * bs:(i + 1) * bs]
            self._progress = (epoch, i + 1)
            x, y = self.images[idx], self.labels[idx]
            if self.pin_memory:
                x, y = x.pin_memory(), y.pin_memory()
            yield x, y

    def state_dict(self) -> dict:
        epoch, done = self._progress if self._progress is not None else (self.epoch, 0)
        return {"epoch": epoch, "batches": done, "seed": self.sampler.seed,
                "size": self.sampler.size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("size"), state.get("batch_size")) != (self.sampler.size, self.batch_size):
            raise ValueError(
                f"loader state is for {state.get('size')} items in batches of "
                f"{state.get('batch_size')}, this loader has {self.sampler.size} in batches "
                f"of {self.batch_size}")
        self.sampler.seed = int(state["seed"])
        self.sampler.set_epoch(int(state["epoch"]))
        self._resume = (int(state["epoch"]), int(state["batches"]))
        self._progress = None


# ---- the standard torchvision path ---------------------------------------------------------
class TensorImageDataset(Dataset):
    """``(transform(images[i]), labels[i])`` over in-memory uint8 images (N, C, H, W)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i]


def torchvision_transform(mean, std, image_size: int, padding: int = 4, flip: bool = True,
                          train: bool = True):
    """The standard per-image pipeline: RandomCrop(padding) + RandomHorizontalFlip (train),
    then ToDtype(float32, scale=True) + Normalize."""
    from torchvision.transforms import v2

    steps = []
    if train:
        if padding > 0:
            steps.append(v2.RandomCrop(image_size, padding=padding, fill=0))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def torchvision_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                       mean, std, train: bool, padding: int = 4, flip: bool = True,
                       num_workers: int = 2, drop_last: bool = False, seed: int = 0,
                       pin_memory: bool = False) -> DataLoader:
    """A ``DataLoader`` with per-image torchvision transforms in ``num_workers`` processes.

    Training order comes from :class:`EpochSampler` (seeded by ``(seed, epoch)``, like the
    fast path); the random crops and flips come from the workers' own RNGs.
    """
    transform = torchvision_transform(mean, std, images.shape[-1], padding, flip, train)
    sampler = EpochSampler(images.shape[0], shuffle=train, seed=seed)
    return DataLoader(
        TensorImageDataset(images, labels, transform), batch_size=batch_size, sampler=sampler,
        num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
        persistent_workers=num_workers > 0)
