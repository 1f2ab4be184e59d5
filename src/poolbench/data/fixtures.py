"""Small stand-ins for CIFAR-100 and Tiny ImageNet, written in the exact official formats.

    poolbench-fixtures ROOT [--cifar-per-class N] [--tiny-per-class N] [--seed S]

writes ``ROOT/cifar-100-python/{train,test,meta}`` and ``ROOT/tiny-imagenet-200/`` (all 100
and 200 classes; 20 CIFAR-100 and 3 Tiny ImageNet training images a class, enough for the
smoke experiment's budget) in seconds, so that the real parsers, the data
module and whole training runs can be exercised without the real datasets
(``data.root=ROOT``). The images are learnable: each class has its own colour and
texture (flat, horizontal stripes, vertical stripes, checkerboard; all unchanged in kind by
crops and flips), with a random phase, brightness jitter and pixel noise per image.

The writers refuse to touch an existing dataset directory that they did not create
themselves (they mark theirs with a ``.poolbench-fixture`` file). The command keeps a
directory it completed with the same settings (the images are a function of them), so
running it again is cheap, and rewrites one written with other settings or cut short.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import cifar, tinyimagenet

log = logging.getLogger(__name__)

MARKER = ".poolbench-fixture"
MARKER_TEXT = "written by poolbench.data.fixtures; safe to delete\n"
# Bump when the generated images change: poolbench-fixtures then rewrites older directories.
VERSION = 1

# The official CIFAR-100 classes by superclass (meta's order: alphabetical within each list).
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_COARSE = list(CIFAR100_SUPERCLASSES)
CIFAR100_FINE = sorted(name for names in CIFAR100_SUPERCLASSES.values() for name in names)
_COARSE_OF = {name: i for i, names in enumerate(CIFAR100_SUPERCLASSES.values()) for name in names}

TEXTURES = 4    # flat, horizontal stripes, vertical stripes, checkerboard
PERIOD = 8      # of the stripes, in pixels


def tiny_wnids(num_classes: int = 200) -> list[str]:
    """Made-up WordNet-style ids (``n99000000``...), recognisably not real ones."""
    return [f"n99{i:06d}" for i in range(num_classes)]


def _palette(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (float, 0-255) from a 4-level grid."""
    levels = np.array([48.0, 104.0, 160.0, 216.0])
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    pick = np.linspace(0, len(grid) - 1, n).round().astype(int) if n <= len(grid) else \
        np.arange(n) % len(grid)
    return grid[pick]


def class_images(labels: np.ndarray, num_classes: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """uint8 images (N, 3, size, size) whose class ``labels[i]`` shows in colour and texture.

    Class c has colour ``c // 4`` of a palette and texture ``c % 4``; each image gets a
    random phase of its texture, a brightness offset and Gaussian pixel noise.
    """
    labels = np.asarray(labels)
    n = len(labels)
    colours = _palette(-(-num_classes // TEXTURES))
    base = colours[labels // TEXTURES]                                    # (N, 3)
    texture = labels % TEXTURES
    yy, xx = np.mgrid[0:size, 0:size]
    py = rng.integers(0, PERIOD, n)[:, None, None]
    px = rng.integers(0, PERIOD, n)[:, None, None]
    horiz = np.where(((yy[None] + py) // (PERIOD // 2)) % 2 == 0, 1.0, -1.0)
    vert = np.where(((xx[None] + px) // (PERIOD // 2)) % 2 == 0, 1.0, -1.0)
    pattern = np.select([texture[:, None, None] == 1, texture[:, None, None] == 2,
                         texture[:, None, None] == 3], [horiz, vert, horiz * vert], 0.0)
    img = (base[:, :, None, None] + rng.normal(0, 8, (n, 1, 1, 1))
           + 36.0 * pattern[:, None] + rng.normal(0, 18, (n, 3, size, size)))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _fresh_dir(path: Path) -> None:
    """Make ``path`` an empty fixture directory; never delete data we did not write."""
    if path.exists():
        if not (path / MARKER).exists():
            raise FileExistsError(
                f"{path} exists and was not written by poolbench-fixtures; refusing to "
                "overwrite it (it may hold the real dataset). Choose another ROOT.")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text(MARKER_TEXT)


def _finished_marker(settings: dict) -> str:
    """The marker of a complete directory: who wrote it, and with which settings."""
    return MARKER_TEXT + " ".join([f"version={VERSION}",
                                   *(f"{k}={v}" for k, v in settings.items())]) + "\n"


def _is_current(path: Path, settings: dict) -> bool:
    marker = path / MARKER
    return marker.is_file() and marker.read_text() == _finished_marker(settings)


def _labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` of every class, in a shuffled order (like the official files)."""
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def write_cifar100(root: str | Path, per_class_train: int = 20, per_class_test: int = 2,
                   seed: int = 0) -> dict:
    """Write ``root/cifar-100-python/{train,test,meta}`` in the official pickle format.

    Returns what was written: ``train_images``/``test_images`` uint8 (N, 3, 32, 32),
    ``train_labels``/``test_labels`` int64 and ``classes``.
    """
    rng = np.random.default_rng([seed, 100])
    base = Path(root) / cifar.DIRNAME
    _fresh_dir(base)
    out = {"classes": list(CIFAR100_FINE)}
    coarse = np.array([_COARSE_OF[name] for name in CIFAR100_FINE])
    for split, per_class, batch_label in (("train", per_class_train, "training batch 1 of 1"),
                                          ("test", per_class_test, "testing batch 1 of 1")):
        labels = _labels(100, per_class, rng)
        images = class_images(labels, 100, 32, rng)
        names = CIFAR100_FINE
        entry = {
            "filenames": [f"{names[y]}_s_{i:06d}.png" for i, y in enumerate(labels)],
            "batch_label": batch_label,
            "fine_labels": [int(y) for y in labels],
            "coarse_labels": [int(coarse[y]) for y in labels],
            "data": images.reshape(len(labels), 3 * 32 * 32),   # R plane, G plane, B plane
        }
        with open(base / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels.astype(np.int64)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(CIFAR100_FINE),
                     "coarse_label_names": list(CIFAR100_COARSE)}, f, protocol=2)
    return out


def _box(rng: np.random.Generator, size: int = 64) -> str:
    x0, y0 = rng.integers(0, size // 2, 2)
    x1, y1 = x0 + rng.integers(size // 4, size // 2, 1)[0], y0 + rng.integers(size // 4, size // 2, 1)[0]
    return f"{x0}\t{y0}\t{x1}\t{y1}"


def _save_jpeg(path: Path, chw: np.ndarray, gray: bool = False) -> None:
    from PIL import Image

    hwc = chw.transpose(1, 2, 0)
    im = Image.fromarray(hwc, "RGB")
    if gray:  # the real set has some grayscale JPEGs; the parser must convert them to RGB
        im = im.convert("L")
    im.save(path, "JPEG", quality=98, subsampling=0)  # 4:4:4, near lossless


def write_tinyimagenet(root: str | Path, per_class_train: int = 3, per_class_val: int = 1,
                       seed: int = 0, num_test: int = 10) -> dict:
    """Write ``root/tiny-imagenet-200/`` in the official layout (JPEG files, index files).

    Returns the images as generated (before JPEG compression, so parsed pixels differ
    slightly), their labels, ``classes`` (the wnids in ``wnids.txt`` order) and
    ``grayscale`` (paths of the train images saved as single-channel JPEGs).
    """
    rng = np.random.default_rng([seed, 200])
    base = Path(root) / tinyimagenet.DIRNAME
    _fresh_dir(base)
    wnids = tiny_wnids(200)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (base / "words.txt").write_text("".join(f"{w}\tfixture class {i}\n" for i, w in enumerate(wnids)))
    train_labels = np.repeat(np.arange(200), per_class_train)
    train_images = class_images(train_labels, 200, 64, rng)
    grayscale = []
    for c, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        boxes = []
        for j in range(per_class_train):
            name = f"{wnid}_{j}.JPEG"
            gray = c == 0 and j == 0
            _save_jpeg(folder / name, train_images[c * per_class_train + j], gray=gray)
            if gray:
                grayscale.append(folder / name)
            boxes.append(f"{name}\t{_box(rng)}\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val_labels = _labels(200, per_class_val, rng)
    val_images = class_images(val_labels, 200, 64, rng)
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for i, y in enumerate(val_labels):
        _save_jpeg(base / "val" / "images" / f"val_{i}.JPEG", val_images[i])
        lines.append(f"val_{i}.JPEG\t{wnids[y]}\t{_box(rng)}\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    (base / "test" / "images").mkdir(parents=True)
    test_images = class_images(rng.integers(0, 200, num_test), 200, 64, rng)
    for i in range(num_test):
        _save_jpeg(base / "test" / "images" / f"test_{i}.JPEG", test_images[i])
    return dict(train_images=train_images, train_labels=train_labels.astype(np.int64),
                test_images=val_images, test_labels=val_labels.astype(np.int64),
                classes=wnids, grayscale=grayscale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="poolbench-fixtures",
        description="Write small CIFAR-100 and Tiny ImageNet stand-ins in the official formats "
                    "(all classes, learnable images) under ROOT; keeps those already written with "
                    "the same settings.")
    parser.add_argument("root", metavar="ROOT", type=Path,
                        help="where to write cifar-100-python/ and tiny-imagenet-200/ "
                             "(use it as data.root)")
    parser.add_argument("--cifar-per-class", type=int, default=20, metavar="N",
                        help="CIFAR-100 training images per class (default 20)")
    parser.add_argument("--cifar-test-per-class", type=int, default=2, metavar="N",
                        help="CIFAR-100 test images per class (default 2)")
    parser.add_argument("--tiny-per-class", type=int, default=3, metavar="N",
                        help="Tiny ImageNet training images per class (default 3)")
    parser.add_argument("--tiny-val-per-class", type=int, default=1, metavar="N",
                        help="Tiny ImageNet val (= our test) images per class (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image noise (default 0)")
    parser.add_argument("--imagenet-per-class", type=int, default=8, metavar="N",
                        help="ImageNet training images per class (default 8; 4 real classes)")
    parser.add_argument("--only", choices=("cifar100", "tinyimagenet", "imagenet"),
                        help="write only this dataset")
    args = parser.parse_args(argv)
    for flag in ("cifar_per_class", "cifar_test_per_class", "tiny_per_class", "tiny_val_per_class"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    # (writer, directory, its settings, what it holds)
    datasets = {
        "cifar100": (write_cifar100, args.root / cifar.DIRNAME,
                     dict(per_class_train=args.cifar_per_class,
                          per_class_test=args.cifar_test_per_class, seed=args.seed),
                     f"{100 * args.cifar_per_class} train, {100 * args.cifar_test_per_class} test"),
        "tinyimagenet": (write_tinyimagenet, args.root / tinyimagenet.DIRNAME,
                         dict(per_class_train=args.tiny_per_class,
                              per_class_val=args.tiny_val_per_class, seed=args.seed),
                         f"{200 * args.tiny_per_class} train, {200 * args.tiny_val_per_class} val"),
    }
    for name, (write, path, settings, holds) in datasets.items():
        if args.only not in (None, name):
            continue
        # A directory written with the same settings is kept (the images are a function of
        # them), so re-running is cheap; its marker gets the settings only once complete.
        if _is_current(path, settings):
            print(f"{path} is up to date ({holds})")
            continue
        t = time.perf_counter()
        try:
            write(args.root, **settings)
        except FileExistsError as e:
            print(f"poolbench-fixtures: {e}", file=sys.stderr)
            return 1
        (path / MARKER).write_text(_finished_marker(settings))
        print(f"wrote {path} ({holds}; {time.perf_counter() - t:.1f} s)")
    if args.only in (None, "imagenet"):
        from .imagenet_fixtures import write_imagenet

        try:
            n = write_imagenet(args.root, args.imagenet_per_class, seed=args.seed)
        except FileExistsError as e:
            print(f"poolbench-fixtures: {e}", file=sys.stderr)
            return 1
        print(f"wrote {args.root / 'imagenet'} ({n['train']} train, {n['val']} val JPEGs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
