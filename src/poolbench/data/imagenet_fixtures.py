"""A small stand-in for ImageNet-1k in its folder layout, with real JPEG files.

``write_imagenet(ROOT)`` (run by ``poolbench-fixtures ROOT``) writes
``ROOT/imagenet/{train,val}/<wnid>/<wnid>_<i>.JPEG`` for a few real ImageNet classes
(:data:`WNIDS`, the ten classes of fast.ai's Imagenette), a few images each, of varied sizes
and aspect ratios so the resize and crops do real work. The images are learnable: each
class has its own colour (a tilted gradient of it), with noise per image. Like the other
fixtures, it refuses to overwrite a directory that poolbench-fixtures did not write (this
module imports nothing from :mod:`poolbench.data.fixtures`, whose ``main`` calls it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import imagenet

MARKER = ".poolbench-fixture"  # the mark of every directory poolbench-fixtures writes

# tench, English springer, cassette player, chain saw, church, French horn, garbage truck,
# gas pump, golf ball, parachute
WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916",
         "n03417042", "n03425413", "n03445777", "n03888605")
SIZES = ((72, 96), (96, 72), (80, 80), (64, 112))  # (height, width), cycled


# one colour per class, far apart (RGB)
COLOURS = np.array([(210, 60, 50), (50, 170, 70), (60, 80, 210), (220, 200, 60), (150, 60, 190),
                    (60, 190, 200), (240, 140, 40), (120, 120, 120), (240, 240, 240), (20, 20, 20)],
                   dtype=np.float64)


def class_image(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (3, height, width): class ``label``'s colour, a random tilted gradient, noise."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = 40.0 * (np.cos(angle) * xx + np.sin(angle) * yy - 0.5)
    img = COLOURS[label][:, None, None] + ramp[None] + rng.normal(0, 12, (3, height, width))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _new_dataset_dir(base: Path) -> None:
    import shutil

    if base.exists() and not (base / MARKER).is_file():
        raise FileExistsError(f"{base} exists and was not written by poolbench-fixtures; "
                              "refusing to overwrite it (it may hold the real ImageNet). "
                              "Choose another ROOT.")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    (base / MARKER).write_text("written by poolbench.data.imagenet_fixtures; safe to delete\n")


def _save(path: Path, chw: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(path, quality=90)


def write_imagenet(root: str | Path, per_class_train: int = 8, per_class_val: int = 3,
                   seed: int = 0, num_classes: int = 4) -> dict:
    """Write ``root/imagenet/`` (refusing to touch a directory poolbench did not write).
    Returns ``{"classes", "train", "val"}`` (numbers of images)."""
    if not 1 <= num_classes <= len(WNIDS):
        raise ValueError(f"num_classes must be in 1..{len(WNIDS)}, got {num_classes}")
    base = Path(root) / imagenet.DIRNAME
    _new_dataset_dir(base)
    rng = np.random.default_rng(seed)
    wnids = WNIDS[:num_classes]
    counts = {"train": per_class_train, "val": per_class_val}
    for split, per_class in counts.items():
        for label, wnid in enumerate(wnids):
            folder = base / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = SIZES[i % len(SIZES)]
                _save(folder / f"{wnid}_{split}_{i}.JPEG", class_image(label, h, w, rng))
    return {"classes": num_classes, "train": num_classes * per_class_train,
            "val": num_classes * per_class_val}
