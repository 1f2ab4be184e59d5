"""The LightningDataModule: in-memory uint8 data, held-out validation, on-device augmentation."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from ..seeding import step_seed
from .augment import DeviceAugment
from .datasets import dataset_spec, load_dataset, split_train_val
from .loaders import FastLoader, torchvision_loader

log = logging.getLogger(__name__)

LOADERS = ("fast", "torchvision")


def per_device_batch(global_batch: int, world_size: int) -> int:
    """``data.batch_size`` (the global batch) split evenly over ``world_size`` processes;
    a ValueError naming both, and the nearest batches that split, when it does not."""
    if global_batch % world_size == 0:
        return global_batch // world_size
    low = global_batch // world_size * world_size
    choices = " or ".join(str(b) for b in (low, low + world_size) if b > 0)
    raise ValueError(
        f"data.batch_size={global_batch} is the global batch, split evenly over the "
        f"{world_size} processes of this run (trainer.devices x trainer.num_nodes), and "
        f"{global_batch} is not a multiple of {world_size}: use data.batch_size={choices}")


class PoolbenchDataModule(L.LightningDataModule):
    """CIFAR-100 or Tiny ImageNet for Lightning.

    The whole dataset lives in host memory as uint8 tensors (N, 3, H, W). ``setup`` holds
    out a seeded, class-stratified validation split of ``val_size`` training images (the
    dataset's default when None; 0: no validation) for model selection; the test set is
    separate (for Tiny ImageNet, the official val set).

    ``loader="fast"`` (default): :class:`FastLoader` yields uint8 batches in a per-epoch
    order seeded by ``(seed, epoch)``; Lightning moves them to the device and
    :meth:`on_after_batch_transfer` augments them there with batched tensor ops (random
    crop with zero padding ``crop_padding``, horizontal flip if ``flip``), converts to
    float, normalises with the dataset's mean/std and makes them channels_last.
    Evaluation batches are only converted and normalised. Before augmenting a training
    batch, torch's global RNG is seeded from ``step_seed(seed, batch, stream=1, rank)``
    (batch = the fit loop's batch count, rank = the process's global rank), so the draws
    are a pure function of the run's seed, the batch and the rank, whether or not the run
    was interrupted and resumed.

    ``loader="torchvision"``: the standard ``DataLoader`` with per-image
    ``torchvision.transforms.v2`` in ``num_workers`` processes, for comparison;
    :meth:`on_after_batch_transfer` then only makes batches channels_last.

    Under DDP (``world_size`` processes) ``batch_size`` stays the global batch: each
    process takes ``batch_size / world_size`` images of every global batch (a clear error
    when it does not divide; :func:`per_device_batch`), so 1 and N processes take the same
    optimiser steps over the same global batches; ``eval_batch_size`` is split likewise
    (rounded up), and evaluation shards the images without repeating any. Augmentation
    draws are seeded per (step, rank). Both loaders need the trainer's
    ``use_distributed_sampler=False`` (:mod:`poolbench.trainer` sets it).
    """

    def __init__(self, name: str, root: str | Path, batch_size: int = 128,
                 eval_batch_size: int | None = None, val_size: int | None = None,
                 split_seed: int = 0, loader: str = "fast", num_workers: int = 2,
                 download: bool = False, crop_padding: int | None = None, flip: bool = True,
                 seed: int = 0, drop_last: bool = True):
        super().__init__()
        spec = dataset_spec(name)
        if loader not in LOADERS:
            raise ValueError(f"unknown loader {loader!r}; choose one of {list(LOADERS)}")
        for arg, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size < 1):
            raise ValueError(f"eval_batch_size must be None or an integer >= 1, got {eval_batch_size!r}")
        val_size = spec.val_size if val_size is None else val_size
        if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
            raise ValueError(f"val_size must be an integer >= 0 (0 disables validation), "
                             f"got {val_size!r}")
        crop_padding = spec.crop_padding if crop_padding is None else crop_padding
        if not isinstance(crop_padding, int) or crop_padding < 0:
            raise ValueError(f"crop_padding must be an integer >= 0, got {crop_padding!r}")
        root = str(root)  # plain types only: checkpoints must load with weights_only=True
        self.save_hyperparameters()
        self.spec = spec
        self.name, self.root, self.download = name, Path(root).expanduser(), bool(download)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size, self.split_seed = val_size, int(split_seed)
        self.loader, self.num_workers = loader, num_workers
        self.crop_padding, self.flip = crop_padding, bool(flip)
        self.seed, self.drop_last = int(seed), bool(drop_last)
        self.num_classes, self.image_size = spec.num_classes, spec.image_size
        self.mean, self.std = spec.mean, spec.std
        self.augment = DeviceAugment(self.mean, self.std, crop_padding, flip)
        self.classes: list[str] | None = None
        self._raw: dict | None = None
        self._ready = False

    # ---- data ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Lightning runs this once per node before `setup`: download (if allowed) and, for
        # Tiny ImageNet, build the decoded cache, so the other ranks only read it.
        if not self._ready:  # fit, then test: prepare_data runs again; the data is here
            self._raw = load_dataset(self.name, self.root, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        self.batch_size_per_device()  # a global batch that does not split fails here, early
        if self._ready:
            return
        raw = self._raw if self._raw is not None else load_dataset(self.name, self.root, self.download)
        self._raw = None
        n = raw["train_labels"].shape[0]
        if self.val_size >= n:
            raise ValueError(
                f"val_size={self.val_size} must be smaller than the {self.spec.title} training "
                f"set under {self.root} ({n} images); set data.val_size to a smaller value "
                "(0 disables the validation split)")
        train_idx, val_idx = split_train_val(raw["train_labels"], self.val_size, self.split_seed)
        # channels_last storage: a batch slice is then already in the layout the model uses
        as_nhwc = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
        self.train_images = as_nhwc(raw["train_images"][train_idx])
        self.train_labels = raw["train_labels"][train_idx]
        self.val_images = as_nhwc(raw["train_images"][val_idx])
        self.val_labels = raw["train_labels"][val_idx]
        self.test_images = as_nhwc(raw["test_images"])
        self.test_labels = raw["test_labels"]
        self.classes = list(raw["classes"])
        self._ready = True
        log.info("%s: %d train, %d val (split_seed=%d), %d test images; loader=%s",
                 self.spec.title, len(self.train_labels), len(self.val_labels),
                 self.split_seed, len(self.test_labels), self.loader)

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def batch_size_per_device(self) -> int:
        """This process's share of the global ``batch_size`` (:func:`per_device_batch`)."""
        world = self._rank_world()[1]
        if world > 1 and not self.drop_last:
            raise ValueError(
                f"data.drop_last=false does not work with {world} processes: the last, partial "
                "batch of an epoch cannot be split evenly across them (the gradient would no "
                "longer be the global batch's mean); use data.drop_last=true")
        return per_device_batch(self.batch_size, world)

    def _pin_memory(self) -> bool:
        t = self.trainer
        device = t.strategy.root_device if t is not None else None
        return torch.cuda.is_available() and (device is None or device.type == "cuda")

    def _make_loader(self, images, labels, train: bool):
        rank, world = self._rank_world()
        batch_size = self.batch_size_per_device() if train else -(-self.eval_batch_size // world)
        common = dict(drop_last=self.drop_last and train, seed=self.seed, rank=rank,
                      world_size=world, pin_memory=self._pin_memory())
        if self.loader == "torchvision":
            return torchvision_loader(
                images, labels, batch_size, mean=self.mean, std=self.std, train=train,
                padding=self.crop_padding, flip=self.flip, num_workers=self.num_workers,
                **common)
        return FastLoader(images, labels, batch_size, shuffle=train, **common)

    def train_dataloader(self):
        self._check_setup()
        loader = self._make_loader(self.train_images, self.train_labels, train=True)
        if self.trainer is not None:  # start at the trainer's epoch (it may have resumed)
            loader.sampler.set_epoch(self.trainer.current_epoch)
        return loader

    def val_dataloader(self):
        self._check_setup()
        if self.val_size == 0:
            return []  # Lightning runs no validation for an empty list of loaders
        return self._make_loader(self.val_images, self.val_labels, train=False)

    def test_dataloader(self):
        self._check_setup()
        return self._make_loader(self.test_images, self.test_labels, train=False)

    def predict_dataloader(self):
        return self.test_dataloader()

    def _check_setup(self) -> None:
        if not self._ready:
            raise RuntimeError("call setup() first (Lightning does this for you)")

    # ---- on-device transforms ----------------------------------------------------------
    def train_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop + flip + normalise a uint8 batch, on its device (default RNG)."""
        return self.augment.train(images)

    def eval_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise a uint8 batch (float32, channels_last), on its device."""
        return self.augment.eval(images)

    def _augmentation_seed(self) -> int:
        trainer = self.trainer
        batch = trainer.fit_loop.total_batch_idx + 1  # batches fetched before this one
        return step_seed(self.seed, batch, stream=1, rank=trainer.global_rank)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        trainer = self.trainer
        if self.loader == "torchvision":
            images = images.contiguous(memory_format=torch.channels_last)
        elif trainer is not None and trainer.training:
            torch.manual_seed(self._augmentation_seed())
            images = self.train_transform(images)
        else:
            images = self.eval_transform(images)
        if trainer is not None:
            # Lightning converted the (then uint8) batch before transfer; the float batch
            # follows the "-true" precisions here (bf16-true: bf16). Mixed: stays float32.
            images = trainer.precision_plugin.convert_input(images)
        return images, labels

    def __repr__(self) -> str:
        return (f"PoolbenchDataModule({self.name!r}, root={str(self.root)!r}, "
                f"batch_size={self.batch_size}, val_size={self.val_size}, loader={self.loader!r})")
