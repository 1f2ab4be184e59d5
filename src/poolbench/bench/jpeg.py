"""How many ImageNet images one CPU core decodes and crops per second (``poolbench-bench jpeg``),
and so how many cores a GPU needs to be kept fed by ``data=imagenet``.

    poolbench-bench jpeg [--images N] [--image-size 224] [--workers 0 1 2] [--gpu-rate R]

The images are real photographs (scikit-image's astronaut, chelsea, coffee, rocket, at
ImageNet's typical size: shorter side ~375 px, JPEG quality 90, re-encoded with small
shifts so no two files are the same), written to a temporary folder. Rows:

- ``decode+train`` / ``decode+eval``: one process, per image, exactly what a
  ``data=imagenet`` worker does (:class:`poolbench.data.imagenet.JpegFolderDataset`: PIL
  decode, RandomResizedCrop + flip, or resize + centre crop; uint8 tensor); its per-core
  rate is images per CPU-second of the process (``time.process_time``), what one whole
  core does even where other processes share the CPU;
- ``DataLoader w=N``: the real training loader of :mod:`poolbench.data.imagenet` with N
  worker processes (batches collated, as training gets them).

``cores per GPU`` = ``--gpu-rate`` (images/s one GPU trains; e.g. ~3000 for ResNet50 in
mixed precision on an A100, ~1200 for ResNet152) / images/s per core. On a CPU that other
processes share, the DataLoader rows (wall clock) are lower bounds.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .report import command_line, environment, log, text_table

HELP = "images/s per CPU core of ImageNet JPEG decoding + crops, and cores per GPU"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def write_photos(folder: Path, count: int, short_side: int = 375) -> list[str]:
    """``count`` JPEGs (quality 90) of real photographs, shorter side ``short_side``."""
    import skimage.data
    from PIL import Image

    files = []
    for i in range(count):
        arr = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()
        im = Image.fromarray(np.roll(arr, i, axis=1)).convert("RGB")
        scale = short_side / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)))
        path = folder / f"n00000000_{i}.JPEG"
        im.save(path, quality=90)
        files.append(str(path))
    return files


def per_image_rate(files: list[str], image_size: int, train: bool) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process): the second
    is what one whole core would do, also on a CPU other processes share."""
    from ..data.imagenet import JpegFolderDataset

    ds = JpegFolderDataset(files, torch.zeros(len(files), dtype=torch.int64), image_size, train)
    ds[0]  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for i in range(len(ds)):
        ds[i]
    return len(ds) / (time.perf_counter() - t), len(ds) / (time.process_time() - c)


def loader_rate(files: list[str], image_size: int, workers: int, batch: int = 32) -> float:
    from ..data.imagenet import JpegFolderDataset, make_loader
    from ..data.loaders import EpochSampler

    ds = JpegFolderDataset(files, torch.zeros(len(files), dtype=torch.int64), image_size, True)
    batch = max(1, min(batch, len(files) // 4))  # a few batches even from few files
    loader = make_loader(ds, batch, True, workers, EpochSampler(len(ds)), False, True)
    it = iter(loader)
    next(it)  # worker start-up is not counted
    t, n = time.perf_counter(), 0
    for x, _ in it:
        n += len(x)
    return n / (time.perf_counter() - t)


def add_arguments(p) -> None:
    p.add_argument("--images", type=int, default=256, help="JPEG files to time (default 256)")
    p.add_argument("--image-size", type=int, default=224, help="crop side (default 224)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="DataLoader worker counts to time (default 1 2)")
    p.add_argument("--gpu-rate", type=float, default=3000.0,
                   help="images/s one GPU trains, for cores per GPU (default 3000)")


def run(args, argv: Sequence[str]) -> int:
    if args.images < 8:
        raise SystemExit("poolbench-bench jpeg: --images must be >= 8")
    torch.set_num_threads(1)
    env = environment()
    rows = []
    with tempfile.TemporaryDirectory(prefix="poolbench-jpeg-") as tmp:
        files = write_photos(Path(tmp), args.images)
        log(f"{len(files)} JPEGs written to {tmp}")
        for name, train in (("decode+train", True), ("decode+eval", False)):
            rate, per_cpu_s = per_image_rate(files, args.image_size, train)
            rows.append([name, "1 process", f"{rate:.0f}", f"{per_cpu_s:.0f}",
                         f"{args.gpu_rate / per_cpu_s:.1f}"])
        for w in args.workers:
            rate = loader_rate(files, args.image_size, w)
            per_core = rate / max(w, 1)
            rows.append([f"DataLoader w={w}", f"{w} workers", f"{rate:.0f}", f"{per_core:.0f}",
                         f"{args.gpu_rate / per_core:.1f}"])
    head = ["path", "processes", "images/s", "images/s per core",
            f"cores per GPU at {args.gpu_rate:.0f} img/s"]
    import os

    print(f"# {command_line(argv)}\n# {env['cpu']}, {os.cpu_count()} cores, torch {env['torch']}")
    print(text_table(head, rows))
    return 0
