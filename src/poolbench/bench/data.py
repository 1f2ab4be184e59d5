"""Throughput of the data paths (``poolbench-bench data``): the fast path vs the standard
torchvision DataLoader.

    poolbench-bench data [--images N] [--batches B] [--image-size 32|64]
                         [--workers 0 2] [--device cpu|cuda] [--threads 1 2]

Both paths start from the same in-memory uint8 images (fixture-style learnable images,
so nothing is downloaded) and end at what the model receives: a float32, normalised,
channels_last training batch of ``--batch-size`` images on ``--device``, randomly
cropped (zero padding) and flipped. Each path is timed over the same number of batches
after a few warm-up batches (the DataLoader's worker start-up is not counted), best of
``--repeats``; the table gives images/s and the ratio to the best standard path.

On a CPU "device" the fast path is a few memory-bound ops per batch; with more than
one intra-op thread on a machine whose cores are busy with other processes, every
parallel region waits for a core and throughput can drop tenfold, hence the 1-thread row.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

import numpy as np
import torch

from ..data.augment import DeviceAugment
from ..data.datasets import DATASETS
from ..data.fixtures import class_images
from ..data.loaders import FastLoader, torchvision_loader
from . import options
from .report import resolve_device

HELP = "throughput of the data pipeline: the on-device fast path vs torchvision's DataLoader"


def synthetic_images(num_images: int, image_size: int, num_classes: int = 100,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixture-style uint8 images (N, 3, S, S) and int64 labels, made in memory."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_images)
    images = class_images(labels, num_classes, image_size, rng)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(loader):
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader


def time_batches(loader, finish, device: torch.device, warmup: int, count: int,
                 repeats: int = 3) -> float:
    """Best of ``repeats`` timings (seconds) of ``count`` consecutive batches, after
    ``warmup`` untimed ones; ``finish`` turns a loaded batch, moved to ``device``, into
    the model's input."""
    it = _endless(loader)
    for _ in range(warmup):
        x, y = next(it)
        finish(x.to(device, non_blocking=True))
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(count):
            x, y = next(it)
            out = finish(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    return best


def measure_throughput(num_images: int = 8192, batch_size: int = 128, num_batches: int = 50,
                       warmup: int = 5, image_size: int = 32, workers: tuple[int, ...] = (0, 2),
                       device: str | torch.device = "cpu",
                       threads: tuple[int | None, ...] = (None,), repeats: int = 3,
                       padding: int | None = None, seed: int = 0) -> list[dict]:
    """Rows ``{"path", "kind", "threads", "batches", "seconds", "images_per_s"}``.

    The fast path is timed once per entry of ``threads`` (main-process intra-op threads;
    None: torch's default); the torchvision path with torch's default threads in the
    main process (its workers use one thread each, as ``DataLoader`` sets it).
    """
    dev = torch.device(device)
    spec = DATASETS["tinyimagenet" if image_size == 64 else "cifar100"]
    padding = spec.crop_padding if padding is None else padding
    images, labels = synthetic_images(num_images, image_size, seed=seed)
    if num_images < batch_size:
        raise ValueError(f"need at least one batch: {num_images} images < batch {batch_size}")
    default_threads = torch.get_num_threads()
    rows = []

    def row(path, kind, secs):
        return {"path": path, "kind": kind, "threads": torch.get_num_threads(),
                "batches": num_batches, "seconds": secs,
                "images_per_s": num_batches * batch_size / secs}

    # The fast path: uint8 batch from memory -> device -> batched crop/flip/normalise there.
    augment = DeviceAugment(spec.mean, spec.std, padding, flip=True)
    stored = images.contiguous(memory_format=torch.channels_last)  # as the data module stores it
    try:
        for t in dict.fromkeys(default_threads if t is None else t for t in threads):
            torch.set_num_threads(t)
            fast = FastLoader(stored, labels, batch_size, shuffle=True, drop_last=True, seed=seed)
            secs = time_batches(fast, augment.train, dev, warmup, num_batches, repeats)
            rows.append(row(f"fast, on-device batched aug ({t} thr)", "fast", secs))
    finally:
        torch.set_num_threads(default_threads)

    # The standard path: DataLoader + per-image torchvision v2 transforms in workers.
    for w in workers:
        dl = torchvision_loader(images, labels, batch_size, mean=spec.mean, std=spec.std,
                                train=True, padding=padding, flip=True, num_workers=w,
                                drop_last=True, seed=seed, pin_memory=dev.type == "cuda")
        cl = lambda x: x.contiguous(memory_format=torch.channels_last)  # noqa: E731
        secs = time_batches(dl, cl, dev, warmup, num_batches, repeats)
        rows.append(row(f"torchvision DataLoader, num_workers={w}", "torchvision", secs))
        del dl
    return rows


def format_table(rows: list[dict]) -> str:
    ref = max((r["images_per_s"] for r in rows if r["kind"] == "torchvision"), default=None)
    lines = [f"{'path':<42} {'batches':>7} {'seconds':>8} {'images/s':>10} {'vs best torchvision':>20}",
             "-" * 91]
    for r in rows:
        ratio = f"{r['images_per_s'] / ref:.1f}x" if ref else ""
        lines.append(f"{r['path']:<42} {r['batches']:>7} {r['seconds']:>8.3f} "
                     f"{r['images_per_s']:>10.0f} {ratio:>20}")
    fast = [r for r in rows if r["kind"] == "fast"]
    if fast and ref:
        best = max(fast, key=lambda r: r["images_per_s"])
        lines.append(f"fast path (best, {best['threads']} thr) / best torchvision path: "
                     f"{best['images_per_s'] / ref:.1f}x")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line

def add_arguments(p) -> None:
    """Arguments of ``poolbench-bench data``."""
    p.add_argument("--images", type=int, default=8192, help="images in memory (default 8192)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    p.add_argument("--batches", type=int, default=50, help="timed batches per path (default 50)")
    options.add_warmup(p, "untimed batches first (default 5)", default=5)
    p.add_argument("--image-size", type=int, default=32, choices=(32, 64),
                   help="32: CIFAR-100 shape (padding 4), 64: Tiny ImageNet shape (padding 8)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="num_workers values for the torchvision DataLoader (default: 0 2)")
    options.add_device(p, default="cpu", help="where batches end up (default cpu)")
    p.add_argument("--threads", type=int, nargs="+", default=None, metavar="N",
                   help="intra-op threads for the fast path, one timing each (default: 1 and "
                        "torch's default); the torchvision path keeps torch's default")
    options.add_repeats(p, "timings per path, the best is reported (default 3)", default=3)
    options.add_seed(p, "seed of the images and of the shuffling (default 0)")


def run(args, argv: Sequence[str]) -> int:
    """Run ``poolbench-bench data`` with parsed ``args``: the table, printed."""
    options.check_positive(images=args.images, batch_size=args.batch_size,
                           batches=args.batches, repeats=args.repeats, threads=args.threads)
    if args.warmup < 0 or min(args.workers) < 0:
        raise SystemExit(f"--warmup and --workers must be >= 0, got {args.warmup} and "
                         f"{args.workers}")
    threads = tuple(args.threads) if args.threads else (1, None)
    try:
        device = resolve_device(args.device)
        rows = measure_throughput(args.images, args.batch_size, args.batches, args.warmup,
                                  args.image_size, tuple(args.workers), device, threads,
                                  args.repeats, seed=args.seed)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(f"data pipeline throughput: {args.image_size}x{args.image_size} uint8 -> float32 "
          f"normalised channels_last, batch {args.batch_size}, device {device}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, default {torch.get_num_threads()} intra-op threads, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; best of {args.repeats} x {args.batches} batches per path")
    print(format_table(rows))
    return 0
