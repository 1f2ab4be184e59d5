"""Data for poolbench: CIFAR-100 and Tiny ImageNet in their official formats, in memory as
uint8 tensors, with batched augmentation on the training device.

>>> from poolbench.data import DATASETS, load_dataset, PoolbenchDataModule
>>> dm = PoolbenchDataModule("cifar100", "data/", download=True)    # doctest: +SKIP
>>> d = load_dataset("tinyimagenet", "data/")                        # doctest: +SKIP
"""

from .augment import DeviceAugment, Normalize, random_crop_flip
from .datasets import DATASETS, DatasetSpec, channel_stats, dataset_spec, load_dataset, split_train_val
from .download import (
    ChecksumError, DatasetFormatError, DatasetNotFoundError, UnsafeArchiveError, safe_extract_zip,
    verify_md5,
)
from .loaders import EpochSampler, FastLoader, TensorImageDataset, torchvision_loader


def datamodule_class(name: str):
    """The LightningDataModule class for dataset ``name``: ImageNetDataModule for
    ``imagenet`` (JPEG folders), PoolbenchDataModule (in memory) for the others."""
    if name == "imagenet":
        from .imagenet_module import ImageNetDataModule
        return ImageNetDataModule
    from .datamodule import PoolbenchDataModule
    return PoolbenchDataModule


def __getattr__(name):  # the data module needs lightning: import it only when asked for
    if name in ("PoolbenchDataModule", "LOADERS"):
        from . import datamodule
        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS", "LOADERS", "ChecksumError", "DatasetFormatError", "DatasetNotFoundError",
    "DatasetSpec", "DeviceAugment", "EpochSampler", "FastLoader", "Normalize",
    "PoolbenchDataModule", "TensorImageDataset", "UnsafeArchiveError", "channel_stats",
    "datamodule_class", "dataset_spec", "load_dataset", "random_crop_flip", "safe_extract_zip", "split_train_val",
    "torchvision_loader", "verify_md5",
]
