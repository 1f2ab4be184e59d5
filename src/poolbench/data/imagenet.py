"""ImageNet-1k from JPEG folders (``data=imagenet``): too big for memory, so decoded per batch.

Layout under ``data.root``::

    imagenet/train/<wnid>/*.JPEG     1,281,167 images, 1000 classes (ILSVRC2012_img_train.tar)
    imagenet/val/<wnid>/*.JPEG       50,000 images: the official val set, our test set

Class ``i`` is the i-th wnid in sorted order (torchvision's ``ImageFolder`` and timm's
pre-trained heads use the same order). The official val tar is flat
(``val/ILSVRC2012_val_*.JPEG``); sort it into ``val/<wnid>/`` once with

    python -m poolbench.data.imagenet sort-val ROOT/imagenet/val LABELS

where ``LABELS`` has one ``<file name> <wnid>`` per line, or is Kaggle's
``LOC_val_solution.csv`` (``ImageId,PredictionString`` whose first word is the wnid).

The recipe (torchvision's reference): training images get ``RandomResizedCrop(size)`` and
a horizontal flip; evaluation images are resized to ``size * 256 / 224`` (shorter side)
and centre-cropped to ``size`` (``size`` = ``data.image_size``, 224; tests use 64). Worker
processes decode and crop to uint8 tensors; normalisation with the ImageNet mean/std
happens on the device (4x less to copy than float). A validation split of ``val_size``
training images (class-stratified, seeded by ``split_seed``) selects the best checkpoint;
the official val set is only tested. A file that does not decode raises
:class:`~poolbench.data.download.DatasetFormatError` naming it.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .download import DatasetFormatError, DatasetNotFoundError

log = logging.getLogger(__name__)

DIRNAME = "imagenet"
EXTENSIONS = (".jpeg", ".jpg", ".png")
MEAN = (0.485, 0.456, 0.406)   # torchvision's / timm's IMAGENET_DEFAULT_MEAN
STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 224
RESIZE_RATIO = 256 / 224       # evaluation: resize to size * 256/224, centre-crop size
NUM_CLASSES = 1000


def imagenet_spec(image_size: int = IMAGE_SIZE):
    """ImageNet-1k's :class:`~poolbench.data.datasets.DatasetSpec` (official sizes) at
    ``image_size``, for planning (``poolbench-bench gpu-hours``); not in ``DATASETS``, whose
    datasets load into memory."""
    from .datasets import DatasetSpec

    return DatasetSpec(name=DIRNAME, title="ImageNet-1k", num_classes=NUM_CLASSES,
                       image_size=int(image_size), mean=MEAN, std=STD, val_size=10_000,
                       crop_padding=0, train_size=1_281_167, test_size=50_000, loader=None)


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in EXTENSIONS)


def scan_split(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], torch.Tensor]:
    """(classes, file paths, labels) of ``split_dir/<wnid>/*``; ``classes`` fixes the order
    (the training set's) and a class folder not among them is an error."""
    if not split_dir.is_dir():
        raise DatasetNotFoundError(
            f"ImageNet not found: expected the folder {split_dir} with one sub-folder per "
            f"class (wnid) of JPEG files (docs/imagenet.md: layout and conversion)")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not found:
        flat = _images(split_dir)
        raise DatasetFormatError(
            f"{split_dir} has no class folders" + (
                f" but {len(flat)} images directly in it (the official flat val set): sort "
                f"them into <wnid>/ folders once with `python -m poolbench.data.imagenet "
                f"sort-val {split_dir} LABELS` (docs/imagenet.md)" if flat else ""))
    classes = found if classes is None else classes
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetFormatError(f"{split_dir} has class folders that train/ lacks: {unknown[:5]}")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in found:
        for p in _images(split_dir / c):
            files.append(str(p))
            labels.append(index[c])
    return classes, files, torch.tensor(labels, dtype=torch.int64)


def scan_imagenet(root: str | Path) -> dict:
    """File lists of ``root/imagenet``: ``classes``, ``train_files``/``train_labels``,
    ``test_files``/``test_labels`` (the official val set)."""
    base = Path(root).expanduser() / DIRNAME
    classes, train_files, train_labels = scan_split(base / "train")
    _, test_files, test_labels = scan_split(base / "val", classes)
    for split, files in (("train", train_files), ("val", test_files)):
        if not files:
            raise DatasetFormatError(f"{base / split} holds no image files ({EXTENSIONS})")
    return {"classes": classes, "train_files": train_files, "train_labels": train_labels,
            "test_files": test_files, "test_labels": test_labels}


def transforms(image_size: int, train: bool):
    """The per-image pipeline (PIL image -> uint8 tensor (3, size, size))."""
    from torchvision.transforms import v2

    if train:
        ops = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops = [v2.Resize(round(image_size * RESIZE_RATIO), antialias=True),
               v2.CenterCrop(image_size)]
    return v2.Compose([v2.PILToTensor(), *ops])


def decode(path: str):
    """The RGB PIL image of ``path``; :class:`DatasetFormatError` naming it if it is broken."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # also loads it: a truncated file fails here
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetFormatError(f"cannot decode image file {path}: {e}") from None


class JpegFolderDataset(Dataset):
    """(uint8 image tensor, label) of listed files, decoded and transformed on access."""

    def __init__(self, files: list[str], labels: torch.Tensor, image_size: int, train: bool):
        self.files, self.labels = files, labels
        self.transform = transforms(image_size, train)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.transform(decode(self.files[i])), int(self.labels[i])


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int,
                sampler, pin_memory: bool, drop_last: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=drop_last and train,
                      persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers else None)


# ---- the official flat val set -> val/<wnid>/ ---------------------------------------------

def read_val_labels(path: str | Path) -> dict[str, str]:
    """file name -> wnid from ``<file> <wnid>`` lines or Kaggle's LOC_val_solution.csv."""
    path = Path(path)
    text = path.read_text().splitlines()
    if text and text[0].startswith("ImageId,"):
        rows = csv.reader(text[1:])
        return {f"{r[0]}.JPEG": r[1].split()[0] for r in rows if r}
    out = {}
    for n, line in enumerate(text, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].startswith("n"):
            raise DatasetFormatError(f"{path}:{n}: expected '<file name> <wnid>', got {line!r}")
        out[Path(parts[0]).name] = parts[1]
    return out


def sort_flat_val(val_dir: str | Path, labels_file: str | Path) -> int:
    """Move ``val_dir/*.JPEG`` into ``val_dir/<wnid>/``; returns the number moved. Every
    image must have a label (checked before anything moves)."""
    val_dir = Path(val_dir)
    labels = read_val_labels(labels_file)
    images = _images(val_dir)
    missing = [p.name for p in images if p.name not in labels]
    if missing:
        raise DatasetFormatError(f"{len(missing)} images of {val_dir} have no label in "
                                 f"{labels_file}, e.g. {missing[:3]}")
    for p in images:
        (val_dir / labels[p.name]).mkdir(exist_ok=True)
        p.rename(val_dir / labels[p.name] / p.name)
    return len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poolbench.data.imagenet",
                                     description="ImageNet folder tools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("sort-val", help="sort the official flat val/ into val/<wnid>/")
    sv.add_argument("val_dir")
    sv.add_argument("labels", help="'<file> <wnid>' lines, or Kaggle's LOC_val_solution.csv")
    args = parser.parse_args(argv)
    n = sort_flat_val(args.val_dir, args.labels)
    print(f"moved {n} images into {args.val_dir}/<wnid>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

