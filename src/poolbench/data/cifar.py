"""CIFAR-100 in the official ``cifar-100-python`` format, loaded as uint8 tensors.

Layout (as extracted from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz)::

    ROOT/cifar-100-python/train   pickled dict: data uint8 (50000, 3072), fine_labels, ...
    ROOT/cifar-100-python/test    pickled dict: data uint8 (10000, 3072), fine_labels, ...
    ROOT/cifar-100-python/meta    pickled dict: fine_label_names, coarse_label_names

Each row of ``data`` holds the 1024 red, then green, then blue values of one 32x32 image
in row-major order, so ``data.reshape(N, 3, 32, 32)`` is the image batch.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from .download import DatasetFormatError, DatasetNotFoundError

log = logging.getLogger(__name__)

DIRNAME = "cifar-100-python"
FILES = ("train", "test", "meta")
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"


def _how_to_get(root: Path) -> str:
    return (
        "To get it, either set data.download=true (Python: download=True) to fetch "
        f"{URL} (161 MB, md5-checked) into {root} (or run `python -m poolbench.data "
        f"{root} --download` beforehand, e.g. where there is internet), or download that archive yourself and "
        f"extract it there (tar xzf {ARCHIVE} -C {root}), so that the files "
        f"{root / DIRNAME}/{{train,test,meta}} exist.")


def missing_files(root: str | Path) -> list[str]:
    base = Path(root) / DIRNAME
    return [name for name in FILES if not (base / name).is_file()]


def download_cifar100(root: str | Path) -> None:
    """Fetch and extract the official archive into ``root`` (torchvision checks its md5)."""
    from torchvision.datasets.utils import download_and_extract_archive

    root = Path(root)
    log.info("downloading CIFAR-100 into %s", root)
    download_and_extract_archive(URL, str(root), filename=ARCHIVE, md5=ARCHIVE_MD5)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetFormatError(
            f"{path} is not a CIFAR-100 pickle ({type(e).__name__}: {e}); delete "
            f"{path.parent} and download it again") from e
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _need(d: dict, key: str, path: Path):
    if key not in d:
        raise DatasetFormatError(f"{path} has no key {key!r} (keys: {sorted(d)}); "
                                 "it is not an official CIFAR-100 file")
    return d[key]


def read_split(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 3, 32, 32), int64 fine labels (N,)) from one official pickle."""
    path = Path(path)
    d = _unpickle(path)
    data = np.asarray(_need(d, "data", path))
    labels = np.asarray(_need(d, "fine_labels", path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(
            f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(
            f"{path}: {labels.shape[0]} fine_labels for {data.shape[0]} images")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(labels)


def load_cifar100(root: str | Path, download: bool = False) -> dict:
    """CIFAR-100 from ``root/cifar-100-python`` (downloaded first if missing and allowed)."""
    root = Path(root).expanduser().resolve()
    missing = missing_files(root)
    if missing:
        where = (f"CIFAR-100 was not found: expected the directory {root / DIRNAME} with the "
                 f"files {', '.join(FILES)} (missing: {', '.join(missing)}).")
        if not download:
            raise DatasetNotFoundError(f"{where} {_how_to_get(root)}")
        try:
            download_cifar100(root)
        except Exception as e:  # network, disk, checksum: all end in the same advice
            raise DatasetNotFoundError(
                f"{where} Downloading it failed ({type(e).__name__}: {e}). "
                f"{_how_to_get(root)}") from e
        if missing := missing_files(root):
            raise DatasetNotFoundError(
                f"{where} The download finished but {', '.join(missing)} are still missing. "
                f"{_how_to_get(root)}")
    base = root / DIRNAME
    train_images, train_labels = read_split(base / "train")
    test_images, test_labels = read_split(base / "test")
    meta = _unpickle(base / "meta")
    classes = [str(c) for c in _need(meta, "fine_label_names", base / "meta")]
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < len(classes)):
            raise DatasetFormatError(
                f"{base / split}: labels outside [0, {len(classes)}) of the meta file's classes")
    return dict(train_images=train_images, train_labels=train_labels,
                test_images=test_images, test_labels=test_labels, classes=classes)
