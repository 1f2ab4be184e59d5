"""Tiny ImageNet in the official ``tiny-imagenet-200`` layout, decoded once and cached.

Layout (as extracted from http://cs231n.stanford.edu/tiny-imagenet-200.zip)::

    ROOT/tiny-imagenet-200/wnids.txt                        200 class ids, one a line
    ROOT/tiny-imagenet-200/words.txt                        wnid <tab> words
    ROOT/tiny-imagenet-200/train/<wnid>/images/*.JPEG       500 64x64 images per class
    ROOT/tiny-imagenet-200/val/images/val_<i>.JPEG          10,000 images
    ROOT/tiny-imagenet-200/val/val_annotations.txt          file <tab> wnid <tab> box
    ROOT/tiny-imagenet-200/test/images/                     unlabelled, not used

The official val set is our test set (the official test set has no labels). Class ``i``
is the i-th line of ``wnids.txt``. The JPEGs are decoded once (a few grayscale ones are
converted to RGB) and kept in ``ROOT/tiny-imagenet-200/poolbench-uint8-v1.npz``, written
atomically and rebuilt if missing, unreadable, or made from a different file list.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..utils import atomic_file
from .download import (
    DatasetFormatError, DatasetNotFoundError, download_file, extract_zip_dir, verify_md5,
)

log = logging.getLogger(__name__)

DIRNAME = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ARCHIVE = "tiny-imagenet-200.zip"
ARCHIVE_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
CACHE_NAME = "poolbench-uint8-v1.npz"
CACHE_VERSION = "poolbench-tinyimagenet-uint8-v1"
REQUIRED = ("wnids.txt", "train", "val/images", "val/val_annotations.txt")
IMAGE_SIZE = 64


def _how_to_get(root: Path) -> str:
    return (
        "To get it, either set data.download=true (Python: download=True) to fetch "
        f"{URL} (237 MB, md5 {ARCHIVE_MD5}) into {root} (or run `python -m poolbench.data "
        f"{root} --download` beforehand, e.g. where there is internet), or put that file at {root / ARCHIVE} "
        f"(it is then checked and extracted), or extract it yourself so that "
        f"{root / DIRNAME}/wnids.txt, train/<wnid>/images/*.JPEG and val/val_annotations.txt "
        "exist.")


def missing_files(root: str | Path) -> list[str]:
    base = Path(root) / DIRNAME
    return [name for name in REQUIRED if not (base / name).exists()]


def obtain_tinyimagenet(root: str | Path, download: bool) -> None:
    """Make ``root/tiny-imagenet-200`` exist: extract a local zip or download one (md5-checked)."""
    root = Path(root)
    where = (f"Tiny ImageNet was not found: expected the directory {root / DIRNAME} with "
             f"{', '.join(REQUIRED)} (missing: {', '.join(missing_files(root))}).")
    zip_path = root / ARCHIVE
    if (root / DIRNAME).exists():
        raise DatasetNotFoundError(
            f"{where} The directory exists but is incomplete: remove it and try again. "
            f"{_how_to_get(root)}")
    if zip_path.is_file():
        log.info("found %s; verifying its checksum", zip_path)
        verify_md5(zip_path, ARCHIVE_MD5)  # a user-provided file is never deleted
    elif download:
        try:
            log.info("downloading Tiny ImageNet into %s", root)
            root.mkdir(parents=True, exist_ok=True)
            tmp_name = f".{ARCHIVE}.part-{os.getpid()}"
            part = download_file(URL, root, tmp_name)
            try:
                verify_md5(part, ARCHIVE_MD5)
            except Exception:
                part.unlink(missing_ok=True)
                raise
            os.replace(part, zip_path)
        except Exception as e:
            raise DatasetNotFoundError(
                f"{where} Downloading it failed ({type(e).__name__}: {e}). "
                f"{_how_to_get(root)}") from e
    else:
        raise DatasetNotFoundError(f"{where} {_how_to_get(root)}")
    extract_zip_dir(zip_path, root, DIRNAME)
    if missing := missing_files(root):
        raise DatasetFormatError(f"{zip_path} extracted without {', '.join(missing)}")


# ---- file lists ------------------------------------------------------------------------
def read_wnids(base: Path) -> list[str]:
    wnids = [line.strip() for line in (base / "wnids.txt").read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise DatasetFormatError(f"{base / 'wnids.txt'} lists a class twice")
    return wnids


def list_files(base: Path, wnids: list[str]) -> tuple[list[Path], list[int], list[Path], list[int]]:
    """(train paths, train labels, test paths, test labels) in a fixed order."""
    index = {w: i for i, w in enumerate(wnids)}
    train_paths, train_labels = [], []
    for i, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise DatasetFormatError(f"class {wnid} of wnids.txt has no folder {folder}")
        names = sorted(n for n in os.listdir(folder) if n.upper().endswith((".JPEG", ".JPG")))
        train_paths += [folder / n for n in names]
        train_labels += [i] * len(names)
    test_paths, test_labels = [], []
    ann = base / "val" / "val_annotations.txt"
    for lineno, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetFormatError(
                f"{ann}:{lineno}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1' with a wnid "
                f"from wnids.txt, got {line!r}")
        test_paths.append(base / "val" / "images" / fields[0])
        test_labels.append(index[fields[1]])
    return train_paths, train_labels, test_paths, test_labels


def fingerprint(wnids: list[str], train_paths: list[Path], test_paths: list[Path],
                test_labels: list[int]) -> str:
    """Hash of what the cache was made from: the class list and every file name and label."""
    h = hashlib.sha1(CACHE_VERSION.encode())
    for part in (wnids, [f"{p.parent.parent.name}/{p.name}" for p in train_paths],
                 [p.name for p in test_paths], [str(y) for y in test_labels]):
        h.update("\n".join(part).encode())
        h.update(b"\0")
    return h.hexdigest()


# ---- decoding ----------------------------------------------------------------------------
def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DatasetFormatError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, expected 64x64")
    return arr.transpose(2, 0, 1)


def decode_images(paths: list[Path], what: str = "images") -> np.ndarray:
    """uint8 (N, 3, 64, 64) from JPEG files, decoded in threads with progress lines."""
    out = np.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    if not paths:
        return out
    start, step = time.perf_counter(), max(1, len(paths) // 10)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for i, arr in enumerate(pool.map(_decode, paths, chunksize=256)):
            out[i] = arr
            if (i + 1) % step == 0 and len(paths) >= 5000:
                log.info("decoding Tiny ImageNet %s: %d/%d (%.0f s)", what, i + 1, len(paths),
                         time.perf_counter() - start)
    return out


# ---- cache ---------------------------------------------------------------------------
_CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "classes",
               "fingerprint")


def read_cache(path: Path, expected_fingerprint: str) -> dict | None:
    """The cached arrays, or None if the cache is missing, unreadable or stale."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(_CACHE_KEYS) - set(z.files) or str(z["fingerprint"]) != expected_fingerprint:
                log.warning("Tiny ImageNet cache %s is stale; rebuilding it", path)
                return None
            d = {k: z[k] for k in _CACHE_KEYS}
        n, m = len(d["train_labels"]), len(d["test_labels"])
        if d["train_images"].shape != (n, 3, IMAGE_SIZE, IMAGE_SIZE) or \
                d["test_images"].shape != (m, 3, IMAGE_SIZE, IMAGE_SIZE) or \
                d["train_images"].dtype != np.uint8:
            raise ValueError("arrays have unexpected shapes")
        return d
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("Tiny ImageNet cache %s is unreadable (%s: %s); rebuilding it", path,
                    type(e).__name__, e)
        return None


def write_cache(path: Path, arrays: dict) -> None:
    """Write the arrays to ``path`` atomically (a temporary file renamed into place)."""
    # 0644: mkstemp makes the file private, and the data directory may be shared
    with atomic_file(path, "wb", perms=0o644) as f:
        np.savez(f, **arrays)


def load_tinyimagenet(root: str | Path, download: bool = False) -> dict:
    """Tiny ImageNet from ``root/tiny-imagenet-200`` (downloaded/extracted first if needed)."""
    root = Path(root).expanduser().resolve()
    if missing_files(root):
        obtain_tinyimagenet(root, download)
    base = root / DIRNAME
    wnids = read_wnids(base)
    train_paths, train_labels, test_paths, test_labels = list_files(base, wnids)
    fp = fingerprint(wnids, train_paths, test_paths, test_labels)
    cache_path = base / CACHE_NAME
    d = read_cache(cache_path, fp)
    if d is None:
        log.info("decoding Tiny ImageNet (%d train + %d val images) once into %s",
                 len(train_paths), len(test_paths), cache_path)
        d = dict(train_images=decode_images(train_paths, "train"),
                 train_labels=np.asarray(train_labels, dtype=np.int64),
                 test_images=decode_images(test_paths, "val"),
                 test_labels=np.asarray(test_labels, dtype=np.int64),
                 classes=np.asarray(wnids), fingerprint=np.asarray(fp))
        try:
            write_cache(cache_path, d)
        except OSError as e:  # e.g. a read-only data directory: work without the cache
            log.warning("could not write the Tiny ImageNet cache %s (%s); decoding again "
                        "next time", cache_path, e)
    return dict(train_images=torch.from_numpy(d["train_images"]),
                train_labels=torch.from_numpy(d["train_labels"]),
                test_images=torch.from_numpy(d["test_images"]),
                test_labels=torch.from_numpy(d["test_labels"]),
                classes=[str(c) for c in d["classes"]])
