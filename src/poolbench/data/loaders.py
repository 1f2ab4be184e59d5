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
    """The indices of one epoch for one process: a permutation seeded by ``(seed, epoch)``
    (``shuffle``; else ``0..size-1`` in order) and, with ``world_size > 1``, this rank's part.

    ``set_epoch(e)`` chooses the epoch (Lightning calls it on a loader's ``sampler`` at
    the start of every epoch, also after resuming); otherwise each pass over the sampler
    moves on to the next epoch by itself. The order never depends on the global RNG.

    With ``world_size > 1`` every rank draws the same permutation, and

    * with ``global_batch`` (training): rank ``r`` takes slice ``r`` of every whole global
      batch of ``global_batch`` indices (``global_batch // world_size`` each), so the ranks
      together see exactly the global batches one process sees; the last, partial global
      batch is left out (it could not be split evenly);
    * without (evaluation): rank ``r`` takes the ``r``-th of ``world_size`` contiguous,
      nearly equal shards: every index exactly once over all ranks, nothing padded
      (``DistributedSampler`` pads by repeating indices, which counts images twice).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, global_batch: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if global_batch is not None and (global_batch < 1 or global_batch % world_size):
            raise ValueError(f"global_batch={global_batch} must be a positive multiple of "
                             f"world_size={world_size}")
        self.size, self.shuffle, self.seed = int(size), bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.global_batch = None if global_batch is None else int(global_batch)
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
        if self.world_size == 1:
            return order
        if self.global_batch is None:
            return order.tensor_split(self.world_size)[self.rank]
        n, per_rank = self.size // self.global_batch, self.global_batch // self.world_size
        return order[:n * self.global_batch].view(n, self.world_size, per_rank)[
            :, self.rank].reshape(-1)

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.size
        if self.global_batch is None:
            return self.size // self.world_size + (self.rank < self.size % self.world_size)
        return self.size // self.global_batch * (self.global_batch // self.world_size)

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter(self.indices(epoch).tolist())


def process_sampler(size: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                    rank: int = 0, world_size: int = 1) -> EpochSampler:
    """The :class:`EpochSampler` of process ``rank`` of ``world_size`` for a loader of
    ``batch_size`` (per process): slices of global batches when training (``drop_last``),
    a contiguous shard when evaluating."""
    global_batch = batch_size * world_size if world_size > 1 and drop_last else None
    return EpochSampler(size, shuffle, seed, rank, world_size, global_batch)


class FastLoader:
    """Batches ``(images[idx], labels[idx])`` sliced from in-memory tensors.

    A plain iterable with ``__len__`` that Lightning accepts as a dataloader. Shuffled
    loaders draw each epoch's order from :class:`EpochSampler` (``self.sampler``, on which
    Lightning calls ``set_epoch``); ``set_epoch`` here does the same. Iterating is lazy:
    the order is fixed at the first batch, not at ``iter()``.

    With ``world_size > 1``, ``batch_size`` is this process's share: a training loader
    (``drop_last``) takes its slice of every global batch of ``batch_size * world_size``
    (the ranks together see one process's global batches), an evaluation loader (no
    ``drop_last``) its contiguous shard (every item once over all ranks): see
    :class:`EpochSampler`.

    ``state_dict()``/``load_state_dict()`` record (epoch, batches yielded), so Lightning
    resumes a checkpoint taken mid-epoch with the very next batch of the same order; the
    state names the global batch, so a run may resume on another number of processes.

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
        #: the batch all processes together take per step (``batch_size`` when alone)
        self.global_batch = self.batch_size * int(world_size)
        self.sampler = process_sampler(images.shape[0], self.batch_size, shuffle, drop_last, seed,
                                       rank, world_size)
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
                "size": self.sampler.size, "batch_size": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("size"), state.get("batch_size")) != (self.sampler.size, self.global_batch):
            raise ValueError(
                f"loader state is for {state.get('size')} items in (global) batches of "
                f"{state.get('batch_size')}, this loader has {self.sampler.size} in batches "
                f"of {self.global_batch}")
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
                       pin_memory: bool = False, rank: int = 0,
                       world_size: int = 1) -> DataLoader:
    """A ``DataLoader`` with per-image torchvision transforms in ``num_workers`` processes.

    Training order comes from :class:`EpochSampler` (seeded by ``(seed, epoch)``, like the
    fast path), and so does each process's part under DDP (:func:`process_sampler`: pass
    the trainer ``use_distributed_sampler=False``); the random crops and flips come from
    the workers' own RNGs.
    """
    transform = torchvision_transform(mean, std, images.shape[-1], padding, flip, train)
    sampler = process_sampler(images.shape[0], batch_size, train, drop_last, seed, rank,
                              world_size)
    return DataLoader(
        TensorImageDataset(images, labels, transform), batch_size=batch_size, sampler=sampler,
        num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
        persistent_workers=num_workers > 0)
