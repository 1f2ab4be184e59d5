"""The LightningDataModule of ``data=imagenet``: JPEG folders decoded by DataLoader workers,
normalised on the device (:mod:`poolbench.data.imagenet` has the layout and the recipe)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from .augment import Normalize
from .datasets import split_train_val
from .imagenet import IMAGE_SIZE, MEAN, STD, JpegFolderDataset, make_loader, scan_imagenet
from .loaders import EpochSampler

log = logging.getLogger(__name__)


class ImageNetDataModule(L.LightningDataModule):
    """ImageNet-1k (or any folder dataset in its layout) for Lightning.

    Takes the keys of ``conf/data/imagenet.yaml``. ``batch_size`` is the global batch (as
    for the other datasets; under DDP each rank loads ``batch_size / world_size``).
    ``image_size``: the crop side (224; the evaluation resize is ``image_size * 256/224``).
    ``num_classes``: None takes the number of class folders under ``train/``.
    """

    def __init__(self, name: str, root: str | Path, batch_size: int = 256,
                 eval_batch_size: int | None = None, val_size: int = 10_000,
                 split_seed: int = 0, num_workers: int = 8, image_size: int = IMAGE_SIZE,
                 num_classes: int | None = None, seed: int = 0, drop_last: bool = True):
        super().__init__()
        if name != "imagenet":
            raise ValueError(f"ImageNetDataModule reads data=imagenet, got name={name!r}")
        for arg, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                ("image_size", image_size, 8), ("val_size", val_size, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"data.{arg} must be an integer >= {low}, got {value!r}")
        self.save_hyperparameters()
        self.name, self.root = name, Path(str(root)).expanduser()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_size, self.split_seed = val_size, int(split_seed)
        self.num_workers, self.image_size = num_workers, image_size
        self.seed, self.drop_last = int(seed), bool(drop_last)
        self.mean, self.std = MEAN, STD
        self.normalize = Normalize(MEAN, STD)
        self._files = scan_imagenet(self.root)  # file lists only: quick, and num_classes
        found = len(self._files["classes"])
        if num_classes is not None and num_classes != found:
            raise ValueError(f"data.num_classes={num_classes} but {self.root / 'imagenet/train'} "
                             f"has {found} class folders")
        self.num_classes = found
        self.classes = self._files["classes"]
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        f = self._files
        labels = f["train_labels"]
        if self.val_size >= len(labels):
            raise ValueError(f"data.val_size={self.val_size} must be smaller than the "
                             f"{len(labels)} training images under {self.root}")
        train_idx, val_idx = split_train_val(labels, self.val_size, self.split_seed)
        pick = lambda idx: [f["train_files"][i] for i in idx.tolist()]  # noqa: E731
        self.train_files, self.train_labels = pick(train_idx), labels[train_idx]
        self.val_files, self.val_labels = pick(val_idx), labels[val_idx]
        self.test_files, self.test_labels = f["test_files"], f["test_labels"]
        self._ready = True
        log.info("ImageNet: %d train, %d val (split_seed=%d), %d test images; %d classes at "
                 "%d px", len(self.train_labels), len(self.val_labels), self.split_seed,
                 len(self.test_labels), self.num_classes, self.image_size)

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, files, labels, train: bool):
        rank, world = self._rank_world()
        batch = self.batch_size if train else self.eval_batch_size
        if batch % world:
            raise ValueError(f"data.batch_size={batch} is the global batch and must divide "
                             f"by the {world} processes")
        sampler = EpochSampler(len(files), shuffle=train, seed=self.seed, rank=rank,
                               world_size=world)
        if train and self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
        dataset = JpegFolderDataset(files, labels, self.image_size, train)
        return make_loader(dataset, batch // world, train, self.num_workers, sampler,
                           torch.cuda.is_available(), self.drop_last)

    def train_dataloader(self):
        self.setup()
        return self._loader(self.train_files, self.train_labels, train=True)

    def val_dataloader(self):
        self.setup()
        if self.val_size == 0:
            return []
        return self._loader(self.val_files, self.val_labels, train=False)

    def test_dataloader(self):
        self.setup()
        return self._loader(self.test_files, self.test_labels, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        images = self.normalize(images)  # uint8 -> float, ImageNet mean/std, channels_last
        if self.trainer is not None:
            images = self.trainer.precision_plugin.convert_input(images)
        return images, labels

    def __repr__(self) -> str:
        return (f"ImageNetDataModule(root={str(self.root)!r}, batch_size={self.batch_size}, "
                f"image_size={self.image_size}, val_size={self.val_size})")
