"""A small stand-in for ImageNet-1k in its folder layout, with real JPEG files.

``write_imagenet(ROOT)`` (run by ``poolbench-fixtures ROOT``) writes
``ROOT/imagenet/{train,val}/<wnid>/<wnid>_<i>.JPEG`` for a few real ImageNet classes
(:data:`WNIDS`, the ten classes of fast.ai's Imagenette), a few images each, of varied sizes
and aspect ratios so the resize and crops do real work. The images are learnable: each
class has its own colour and texture (:func:`poolbench.data.fixtures.class_images`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import imagenet

# tench, English springer, cassette player, chain saw, church, French horn, garbage truck,
# gas pump, golf ball, parachute
WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916",
         "n03417042", "n03425413", "n03445777", "n03888605")
SIZES = ((72, 96), (96, 72), (80, 80), (64, 112))  # (height, width), cycled


def _save(path: Path, chw: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(path, quality=90)


def write_imagenet(root: str | Path, per_class_train: int = 8, per_class_val: int = 3,
                   seed: int = 0, num_classes: int = 4) -> dict:
    """Write ``root/imagenet/`` (refusing to touch a directory poolbench did not write).
    Returns ``{"classes", "train", "val"}`` (numbers of images)."""
    from .fixtures import _fresh_dir, class_images

    if not 1 <= num_classes <= len(WNIDS):
        raise ValueError(f"num_classes must be in 1..{len(WNIDS)}, got {num_classes}")
    base = Path(root) / imagenet.DIRNAME
    _fresh_dir(base)
    rng = np.random.default_rng(seed)
    wnids = WNIDS[:num_classes]
    counts = {"train": per_class_train, "val": per_class_val}
    for split, per_class in counts.items():
        for label, wnid in enumerate(wnids):
            folder = base / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = SIZES[i % len(SIZES)]
                img = class_images(np.array([label]), num_classes, max(h, w), rng)[0]
                _save(folder / f"{wnid}_{split}_{i}.JPEG", img[:, :h, :w])
    return {"classes": num_classes, "train": num_classes * per_class_train,
            "val": num_classes * per_class_val}
