"""How much of a real photograph each pooling method keeps (SSIM and PSNR, SoftPool's Table 1).

For every image, kernel size k and method: pool the image with a k x k window and stride k,
resize the result back to the image's size, and compare it with the original.

What exactly is computed (the choices that change the numbers):

* **Images**: photographs that ship *inside* installed wheels, so nothing is downloaded:
  scikit-image's ``skimage.data`` (astronaut, camera, chelsea, coffee, rocket, the left
  view of ``stereo_motorcycle``) and scikit-learn's ``load_sample_images()`` (china,
  flower). ``camera`` is grayscale (1 channel), the others RGB. Each is converted to
  float32 in [0, 1] (``uint8 / 255``) and centre-cropped to the largest size divisible by
  every k (lcm(2, 3, 5) = 30), so every window lies inside the image, the pooled map
  covers every pixel, and all k are scored on the same pixels.
* **Pooling**: each registry method built with :func:`~poolbench.pooling.create_pool`
  for the image's channel count (every channel pooled on its own), ``kernel_size=k,
  stride=k``, its default hyperparameters (those of ``conf/pool/*.yaml``), learnable
  parameters at their initialisation after ``torch.manual_seed(seed)``, in **eval mode**.
  Stochastic methods therefore give their deterministic evaluation output (stochastic:
  the probability-weighted mean; mixed / stochastic_mix: the expected blend). A method that
  refuses the geometry is skipped, with its reason in the report: ``fractional_max`` refuses
  every k here, since stride k on sizes divisible by k leaves its pseudo-random windows no
  freedom (they would be max pooling's own). Threshold methods (tmaxavg and kin) see
  pixel intensities in [0, 1], so their default T = 0.5 is a mid-grey.
* **Resize back**: ``F.interpolate(mode="bilinear", align_corners=False)`` by exactly the
  factor k (default; ``--resize nearest`` replicates each pooled value over its window).
  With the half-pixel convention of ``align_corners=False`` the centre of pooled cell i
  lands on the centre of window i, so upsampling adds no shift; bilinear is the
  standard way to display a downsampled image at full size, and unlike nearest it does
  not add the same blocking error to every method. The result is clipped to [0, 1]
  (it only leaves that range for methods whose output can, e.g. strided_conv at
  initialisation, a random filter).
* **SSIM**: ``skimage.metrics.structural_similarity(original, restored, data_range=1.0,
  channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``,
  the settings of Wang et al. (2004): 11 x 11 Gaussian window, K1 = 0.01, K2 = 0.03,
  averaged over the image and its channels.
* **PSNR**: :math:`10 \\log_{10}(1 / \\mathrm{MSE})` on [0, 1] floats (data range 1), MSE
  over all pixels and channels, in float64, **capped at** :data:`PSNR_CAP_DB` = 100 dB.
  The cap is reached at MSE <= 1e-10: float32 rounding in the pooling, far below the
  8-bit quantisation of the source images (whose noise alone would score 58.9 dB), so
  "100" means "identical up to rounding" and means over images stay finite.

Tables report the mean (and sample std) over images per method and k.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..pooling import available_pools, count_pool_parameters, create_pool
from . import options
from .report import (
    command_line, environment, log, markdown_head, md_table, say_written, text_table, write_csv,
)

HELP = "SSIM and PSNR of real photographs pooled with every method and resized back"
PSNR_CAP_DB = 100.0
DEFAULT_KERNELS = (2, 3, 5)
RESIZE_MODES = ("bilinear", "nearest")


# ----------------------------------------------------------------------------- images

def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load():
        import skimage.data

        img = getattr(skimage.data, name)()
        return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disp)
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load():
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return load


# name -> (where it comes from, loader). All ship inside the installed wheels (no download).
IMAGES: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "astronaut": ("skimage.data.astronaut()", _skimage("astronaut")),
    "camera": ("skimage.data.camera() (grayscale)", _skimage("camera")),
    "chelsea": ("skimage.data.chelsea()", _skimage("chelsea")),
    "coffee": ("skimage.data.coffee()", _skimage("coffee")),
    "rocket": ("skimage.data.rocket()", _skimage("rocket")),
    "motorcycle": ("skimage.data.stereo_motorcycle()[0]", _skimage("stereo_motorcycle")),
    "china": ("sklearn.datasets.load_sample_image('china.jpg')", _sklearn("china.jpg")),
    "flower": ("sklearn.datasets.load_sample_image('flower.jpg')", _sklearn("flower.jpg")),
}
QUICK_IMAGES = ("astronaut", "camera")
QUICK_SIZE = 90  # --quick: images downscaled so that their short side is this (then cropped)


def load_image(name: str) -> torch.Tensor:
    """Image ``name`` of :data:`IMAGES` as a float32 ``(C, H, W)`` tensor in [0, 1]."""
    if name not in IMAGES:
        raise ValueError(f"unknown image {name!r}; choose from {list(IMAGES)}")
    arr = np.asarray(IMAGES[name][1]())
    if arr.dtype != np.uint8:
        raise ValueError(f"image {name!r} has dtype {arr.dtype}, expected uint8")
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = arr[..., :3]  # drop an alpha channel if any
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float() / 255.0


def crop_to_multiple(img: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre crop of ``(C, H, W)`` ``img`` to the largest H, W divisible by ``multiple``."""
    h, w = img.shape[-2:]
    nh, nw = h // multiple * multiple, w // multiple * multiple
    if nh == 0 or nw == 0:
        raise ValueError(f"image of size {h}x{w} is smaller than {multiple} pixels")
    top, left = (h - nh) // 2, (w - nw) // 2
    return img[..., top:top + nh, left:left + nw]


def downscale(img: torch.Tensor, short_side: int) -> torch.Tensor:
    """Antialiased bilinear downscale of ``(C, H, W)`` so that the short side is ``short_side``."""
    h, w = img.shape[-2:]
    s = short_side / min(h, w)
    if s >= 1:
        return img
    size = (max(1, round(h * s)), max(1, round(w * s)))
    out = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return out.clamp(0, 1)


# ----------------------------------------------------------------------------- metrics

def psnr(reference: np.ndarray | torch.Tensor, test: np.ndarray | torch.Tensor,
         data_range: float = 1.0, cap_db: float = PSNR_CAP_DB) -> float:
    """PSNR in dB, :math:`10 \\log_{10}(R^2 / \\mathrm{MSE})` in float64, capped at ``cap_db``.

    Identical images (MSE = 0) score ``cap_db``; ``cap_db=math.inf`` gives the uncapped value.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(test, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float(cap_db)
    return float(min(cap_db, 10.0 * math.log10(data_range ** 2 / mse)))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of two ``(H, W, C)`` images (Wang et al. 2004 settings; see the module docstring)."""
    from skimage.metrics import structural_similarity

    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(test, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(structural_similarity(
        a, b, data_range=data_range, channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False))


def _hwc(img: torch.Tensor) -> np.ndarray:
    return img.detach().permute(1, 2, 0).to(torch.float64).numpy()


# ----------------------------------------------------------------------------- pooling

def make_layer(method: str, channels: int, k: int, seed: int) -> torch.nn.Module:
    """``method`` with a k x k / stride k window, seeded initialisation, in eval mode."""
    torch.manual_seed(seed)
    return create_pool(method, channels, kernel_size=k, stride=k).eval()


def pool_and_restore(img: torch.Tensor, layer: torch.nn.Module, resize: str = "bilinear"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pooled, restored)``: ``layer`` applied to ``(C, H, W)`` ``img``, and that map
    resized back to ``(H, W)`` with ``resize`` and clipped to [0, 1]."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r} is not valid; choose one of {list(RESIZE_MODES)}")
    with torch.no_grad():
        pooled = layer(img[None])
        kw = {"align_corners": False} if resize == "bilinear" else {}
        restored = F.interpolate(pooled, size=img.shape[-2:], mode=resize, **kw)
    return pooled[0], restored[0].clamp(0.0, 1.0)


def method_kind(method: str, seed: int = 0) -> str:
    """How the method is evaluated here: ``"parameter-free"`` or ``"learned (init)"``,
    followed by ``", stochastic (eval)"`` for methods that sample in training.

    Stochastic means: training-mode forward passes on the same input disagree (tried
    several times, on a 9 x 9 map so that fractional max pooling has regions to draw).
    """
    learned = count_pool_parameters(method, 4, kernel_size=2) > 0
    kind = "learned (init)" if learned else "parameter-free"
    torch.manual_seed(seed)
    layer = create_pool(method, 4, kernel_size=2).train()
    x = torch.rand(2, 4, 9, 9)
    with torch.no_grad():
        first = layer(x)
        if any(not torch.equal(first, layer(x)) for _ in range(16)):
            kind += ", stochastic (eval)"
    return kind


# ----------------------------------------------------------------------------- benchmark

@dataclass
class PreserveConfig:
    images: Sequence[str] = tuple(IMAGES)
    methods: Sequence[str] | None = None  # None: every registered method
    kernels: Sequence[int] = DEFAULT_KERNELS
    resize: str = "bilinear"
    short_side: int | None = None  # downscale first (--quick); None: full resolution
    seed: int = 0
    log: Callable[[str], None] | None = None
    keep_restored: str | None = None  # image whose restored versions are kept (the figure)
    extra: dict = field(default_factory=dict)


@dataclass
class PreserveResult:
    rows: list[dict]  # one per image, method and k
    images: dict[str, tuple[int, int, int]]  # name -> (C, H, W) after cropping
    kinds: dict[str, str]
    config: PreserveConfig
    restored: dict = field(default_factory=dict)  # (method, k) -> (C, H, W), keep_restored
    skipped: dict = field(default_factory=dict)  # (method, k) -> why it refused (first image)
    original: torch.Tensor | None = None  # the keep_restored image


def prepare_image(name: str, kernels: Sequence[int], short_side: int | None = None
                  ) -> torch.Tensor:
    img = load_image(name)
    if short_side is not None:
        img = downscale(img, short_side)
    return crop_to_multiple(img, math.lcm(*kernels))


def run_preserve(cfg: PreserveConfig) -> PreserveResult:
    log = cfg.log or (lambda msg: None)
    methods = list(available_pools() if cfg.methods is None else cfg.methods)
    bad = sorted(set(methods) - set(available_pools()))
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {available_pools()}")
    bad = sorted(set(cfg.images) - set(IMAGES))
    if bad:
        raise ValueError(f"unknown image(s) {bad}; choose from {list(IMAGES)}")
    if not cfg.kernels or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                              for k in cfg.kernels):
        raise ValueError(f"kernels must be positive ints, got {list(cfg.kernels)}")
    if cfg.resize not in RESIZE_MODES:
        raise ValueError(f"resize={cfg.resize!r} is not valid; choose one of {list(RESIZE_MODES)}")
    kinds = {m: method_kind(m, cfg.seed) for m in methods}
    result = PreserveResult(rows=[], images={}, kinds=kinds, config=cfg)
    t_start = time.perf_counter()
    n = len(cfg.images)
    for i, name in enumerate(cfg.images, 1):
        t0 = time.perf_counter()
        img = prepare_image(name, cfg.kernels, cfg.short_side)
        c, h, w = img.shape
        result.images[name] = (c, h, w)
        ref = _hwc(img)
        keep = name == cfg.keep_restored
        if keep:
            result.original = img
        for k in cfg.kernels:
            for method in methods:
                layer = make_layer(method, c, k, cfg.seed)
                try:
                    layer.check_input_size(h, w)
                except ValueError as exc:  # fractional_max: windows fixed on multiples of k
                    if (method, k) not in result.skipped:
                        result.skipped[(method, k)] = str(exc)
                        log(f"{method}, k={k}: skipped, it refuses: {exc}")
                    continue
                _, restored = pool_and_restore(img, layer, cfg.resize)
                out = _hwc(restored)
                result.rows.append(dict(
                    image=name, C=c, H=h, W=w, k=k, method=method, kind=kinds[method],
                    ssim=ssim(ref, out), psnr=psnr(ref, out)))
                if keep:
                    result.restored[(method, k)] = restored
        log(f"[{i}/{n}] {name} {c}x{h}x{w}: {len(methods)} methods x k={list(cfg.kernels)} "
            f"in {time.perf_counter() - t0:.1f} s (total {time.perf_counter() - t_start:.0f} s)")
    return result


# ----------------------------------------------------------------------------- summaries

def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean and sample std over images, one row per method and k (input order kept)."""
    out = []
    keys = list(dict.fromkeys((r["method"], r["k"]) for r in rows))
    for method, k in keys:
        sel = [r for r in rows if r["method"] == method and r["k"] == k]
        ss, ps = [r["ssim"] for r in sel], [r["psnr"] for r in sel]
        out.append(dict(
            method=method, k=k, kind=sel[0]["kind"], n_images=len(sel),
            ssim_mean=statistics.fmean(ss), ssim_std=statistics.stdev(ss) if len(ss) > 1 else 0.0,
            psnr_mean=statistics.fmean(ps), psnr_std=statistics.stdev(ps) if len(ps) > 1 else 0.0,
        ))
    return out


SUMMARY_COLUMNS = ("method", "kind", "k", "n_images", "ssim_mean", "ssim_std",
                   "psnr_mean", "psnr_std")
ROW_COLUMNS = ("image", "C", "H", "W", "k", "method", "kind", "ssim", "psnr")


def wide_table(summary: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Methods x (SSIM per k, PSNR per k); the best mean of each column in bold (with every
    mean within 1e-4 SSIM / 0.001 dB of it: methods that compute the same function tie)."""
    ks = list(dict.fromkeys(r["k"] for r in summary))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    by = {(r["method"], r["k"]): r for r in summary}
    best = {}
    for k in ks:
        for metric in ("ssim_mean", "psnr_mean"):
            vals = [by[(m, k)][metric] for m in methods if (m, k) in by]
            best[(metric, k)] = max(vals) if vals else None
    head = (["method", "kind"] + [f"SSIM k={k}" for k in ks] + [f"PSNR k={k} (dB)" for k in ks])
    cells = []
    for m in methods:
        line = [m, next(r["kind"] for r in summary if r["method"] == m)]
        for metric, digits in (("ssim_mean", 4), ("psnr_mean", 2)):
            for k in ks:
                r = by.get((m, k))
                if r is None:
                    line.append("")
                    continue
                s = f"{r[metric]:.{digits}f}"
                tol = 1e-4 if metric == "ssim_mean" else 1e-3  # ties: identical functions
                line.append(f"**{s}**" if r[metric] >= best[(metric, k)] - tol else s)
        cells.append(line)
    return head, cells


def identical_groups(rows: Sequence[dict], ssim_tol: float = 1e-4, psnr_tol: float = 1e-3
                     ) -> list[list[str]]:
    """Groups of methods whose SSIM and PSNR agree on every image and k (within the tolerances).

    At initialisation and in eval mode several methods compute the same function (e.g. every
    0.5 max/avg blend), and this makes that visible in the report instead of hiding it.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    scores = {m: {(r["image"], r["k"]): (r["ssim"], r["psnr"]) for r in rows if r["method"] == m}
              for m in methods}

    def same(a, b):
        sa, sb = scores[a], scores[b]
        return sa.keys() == sb.keys() and all(
            abs(sa[key][0] - sb[key][0]) <= ssim_tol and abs(sa[key][1] - sb[key][1]) <= psnr_tol
            for key in sa)

    groups: list[list[str]] = []
    for m in methods:
        for g in groups:
            if same(g[0], m):
                g.append(m)
                break
        else:
            groups.append([m])
    return [g for g in groups if len(g) > 1]


def per_image_table(rows: Sequence[dict], metric: str, k: int) -> tuple[list[str], list[list[str]]]:
    images = list(dict.fromkeys(r["image"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["image"]): r for r in rows if r["k"] == k}
    digits = 4 if metric == "ssim" else 2
    cells = [[m] + [f"{by[(m, i)][metric]:.{digits}f}" if (m, i) in by else "" for i in images]
             for m in methods]
    return ["method"] + images, cells


def to_markdown(result: PreserveResult, command: str | None = None,
                env: dict | None = None, figure: str | None = None) -> str:
    env = env or environment()
    cfg = result.config
    summary = summarize(result.rows)
    parts = markdown_head("# Feature preservation: SSIM and PSNR of pooled-and-restored "
                          "photographs", command, env)
    parts.append(f"torch {env['torch']}, python {env['python']}, seed {cfg.seed}")
    imgs = ", ".join(f"{n} ({c}x{h}x{w}, {IMAGES[n][0]})"
                     for n, (c, h, w) in result.images.items())
    resize = ("bilinear, `F.interpolate(mode='bilinear', align_corners=False)`"
              if cfg.resize == "bilinear" else "nearest, `F.interpolate(mode='nearest')`")
    parts += [
        "", f"Images ({len(result.images)}, bundled in the installed wheels, no download): "
        f"{imgs}. Pixel values float32 in [0, 1] (uint8 / 255)"
        + (f", downscaled (antialiased) to a short side of {cfg.short_side} px" if cfg.short_side
           else "")
        + f", centre-cropped to multiples of {math.lcm(*cfg.kernels)} so that every k tiles "
        "the image.", "",
        f"Each method pools with a k x k window and stride k (default hyperparameters, "
        f"learnable parameters at their seeded initialisation, **eval mode**: stochastic "
        f"methods give their deterministic evaluation output); the pooled map is resized "
        f"back by the factor k with {resize}, and clipped to [0, 1].", "",
        "SSIM: `skimage.metrics.structural_similarity(data_range=1, channel_axis=-1, "
        "gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` (Wang et al. 2004). "
        f"PSNR: 10 log10(1 / MSE) on [0, 1], capped at {PSNR_CAP_DB:g} dB (reached only by "
        "images identical up to float rounding). Means over images; best per column in bold.",
        "", "## Mean over images", "", md_table(*wide_table(summary)), "",
    ]
    notes = []
    groups = identical_groups(result.rows)
    if groups:
        notes.append("Same scores on every image and k (SSIM within 1e-4, PSNR within 0.001 dB), "
                     "so the same function here: " + "; ".join(" = ".join(g) for g in groups)
                     + ".")
    together = {frozenset((a, b)) for g in groups for a in g for b in g if a != b}
    why = (
        (("mixed", "channel_adaptive"), "every 0.5 max/avg blend coincides (channel_adaptive "
         "and gated start at 0.5, stochastic_mix and mixed evaluate their mean, 0.5)"),
        (("learnable_t", "soft_tmaxavg"), "learnable_t starts as soft_tmaxavg (T_c = T)"),
        (("attention", "avg"), "attention's map is constant over every window at this seed "
         "(its max(1, C // 8) = 1 hidden unit is inactive, ReLU at 0, on [0, 1] pixels), so "
         "it is a plain mean"),
    )
    reasons = [text for pair, text in why if frozenset(pair) in together]
    if reasons:
        notes.append("Why: " + "; ".join(reasons) + ".")
    notes += skipped_notes(result)
    if "strided_conv" in result.kinds:
        notes.append("strided_conv at initialisation is a random convolution, not a "
                     "downsampler of the image: its row is a floor, not a finding.")
    if notes:
        parts += [" ".join(notes), ""]
    if figure:
        parts += ["## Zoomed crops", "", f"![zoomed crops]({figure})", ""]
    parts += ["## Per image", ""]
    for metric in ("ssim", "psnr"):
        for k in cfg.kernels:
            parts += [f"### {metric.upper()}, k={k}", "",
                      md_table(*per_image_table(result.rows, metric, k)), ""]
    return "\n".join(parts)


def skipped_notes(result: PreserveResult) -> list[str]:
    """One sentence per method that refused some k: which k, and why (its first refusal)."""
    methods = list(dict.fromkeys(m for m, _ in result.skipped))
    notes = []
    for m in methods:
        ks = [k for mm, k in result.skipped if mm == m]
        why = result.skipped[(m, ks[0])]
        notes.append(f"Skipped: {m} at k = {', '.join(map(str, ks))}, which it refuses "
                     f"(first refusal: {why}).")
    return notes


def write_tables(result: PreserveResult, out_dir: Path, command: str | None = None,
                 figure: str | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_csv(out_dir / "preserve.csv", SUMMARY_COLUMNS, summarize(result.rows)),
             write_csv(out_dir / "preserve_per_image.csv", ROW_COLUMNS, result.rows),
             out_dir / "preserve.md"]
    paths[2].write_text(to_markdown(result, command, figure=figure) + "\n")
    return paths


def print_report(result: PreserveResult, file=None) -> None:
    file = file or sys.stdout
    head, cells = wide_table(summarize(result.rows))
    cells = [[c.replace("**", "") for c in line] for line in cells]
    print("\nmean over images (SSIM, PSNR dB; pooled with stride k, resized back "
          f"{result.config.resize})", file=file)
    print(text_table(head, cells), file=file)
    for note in skipped_notes(result):
        print(note, file=file)


# ----------------------------------------------------------------------------- figure

def auto_crop(img: torch.Tensor, size: int, step: int | None = None) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the most detail.

    Detail is the mean gradient magnitude of the luminance (channel mean); the window is
    searched on a grid of ``step`` pixels and kept off the outer 10% of the image.
    """
    lum = img.mean(0)
    gy, gx = torch.zeros_like(lum), torch.zeros_like(lum)
    gy[1:] = lum[1:] - lum[:-1]
    gx[:, 1:] = lum[:, 1:] - lum[:, :-1]
    mag = (gx ** 2 + gy ** 2).sqrt()
    h, w = lum.shape
    size = min(size, h, w)
    step = step or max(1, size // 8)
    score = F.avg_pool2d(mag[None, None], size, stride=step)[0, 0]
    ys = torch.arange(score.shape[0]) * step
    xs = torch.arange(score.shape[1]) * step
    margin_y, margin_x = int(0.1 * h), int(0.1 * w)
    ok_y = (ys >= margin_y) & (ys + size <= h - margin_y)
    ok_x = (xs >= margin_x) & (xs + size <= w - margin_x)
    if ok_y.any() and ok_x.any():
        score = score.masked_fill(~(ok_y[:, None] & ok_x[None, :]), -1.0)
    idx = int(score.flatten().argmax())
    return int(ys[idx // score.shape[1]]), int(xs[idx % score.shape[1]])


def crops_figure(result: PreserveResult, path: Path, crop: tuple[int, int, int] | None = None,
                 per_row: int = 8, dpi: int = 150) -> Path:
    """Zoomed crops of the same region of ``result.original``, per method (columns) and k (rows).

    Methods are laid out ``per_row`` to a band, each band one row per k. The left column
    shows the whole image with the region marked; each panel's label gives that method's
    SSIM / PSNR on the whole image at that k.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if result.original is None:
        raise ValueError("run_preserve was not asked to keep an image (keep_restored)")
    img = result.original
    name = result.config.keep_restored
    c, h, w = img.shape
    if crop is None:
        size = max(8, min(h, w) // 5)
        y, x = auto_crop(img, size)
    else:
        y, x, size = crop
        if not (0 <= y and 0 <= x and size > 0 and y + size <= h and x + size <= w):
            raise ValueError(f"crop {crop} (y, x, size) does not fit the {h}x{w} image {name!r}")
    methods = list(dict.fromkeys(m for m, _ in result.restored))
    ks = list(dict.fromkeys(k for _, k in result.restored))
    scores = {(r["method"], r["k"]): r for r in result.rows if r["image"] == name}

    def show(ax, t):
        a = t[:, y:y + size, x:x + size].permute(1, 2, 0).numpy()
        if a.shape[-1] == 1:
            ax.imshow(a[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(a.clip(0, 1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])

    bands = [methods[i:i + per_row] for i in range(0, len(methods), per_row)] or [[]]
    ncols = max(len(b) for b in bands) + 2
    nrows = len(bands) * len(ks)
    panel = 1.3
    fig = Figure(figsize=(panel * ncols, panel * nrows + 0.4 * len(bands) + 0.6),
                 layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(nrows, ncols)
    ax0 = fig.add_subplot(gs[:, 0])
    full = img.permute(1, 2, 0).numpy()
    ax0.imshow(full[..., 0] if c == 1 else full, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax0.add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, ec="red", lw=1.2))
    ax0.set_title(f"{name} ({h}x{w});\nred: the {size}x{size} region\nat y={y}, x={x}",
                  fontsize=7)
    ax0.set_xticks([])
    ax0.set_yticks([])
    for b, band in enumerate(bands):
        for r, k in enumerate(ks):
            row = b * len(ks) + r
            ax = fig.add_subplot(gs[row, 1])
            show(ax, img)
            ax.set_ylabel(f"k={k}", fontsize=9)
            if r == 0:
                ax.set_title("original", fontsize=8)
            for col, m in enumerate(band, start=2):
                ax = fig.add_subplot(gs[row, col])
                show(ax, result.restored[(m, k)])
                if r == 0:
                    ax.set_title(m, fontsize=8)
                s = scores.get((m, k))
                if s is not None:
                    ax.set_xlabel(f"{s['ssim']:.3f} / {s['psnr']:.1f} dB", fontsize=6)
    fig.suptitle(
        f"Pooled (k x k, stride k, eval mode), resized back ({result.config.resize}), zoomed "
        "on the same region; under each panel: SSIM / PSNR of the whole image", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# ----------------------------------------------------------------------------- command line

def add_arguments(p) -> None:
    """Arguments of ``poolbench-bench preserve``."""
    p.add_argument("--images", nargs="+", metavar="IMAGE", choices=list(IMAGES),
                   help=f"images (default: all of {', '.join(IMAGES)}; with --quick: "
                        f"{', '.join(QUICK_IMAGES)})")
    options.add_methods(p)
    p.add_argument("--kernels", nargs="+", type=int, default=list(DEFAULT_KERNELS), metavar="K",
                   help="window sizes k (stride k; default: 2 3 5)")
    p.add_argument("--resize", default="bilinear", choices=RESIZE_MODES,
                   help="how the pooled map is resized back (default: bilinear, "
                        "align_corners=False)")
    options.add_seed(p, "seed for the learnable methods' initialisation (default 0)")
    p.add_argument("--figure-image", default=None, metavar="IMAGE",
                   help="image of the zoomed-crops figure (default: the first image)")
    p.add_argument("--crop", nargs=3, type=int, default=None, metavar=("Y", "X", "SIZE"),
                   help="region of the figure (default: the window with the most detail)")
    p.add_argument("--no-figure", action="store_true", help="skip the figure")
    options.add_quick(p, f"{len(QUICK_IMAGES)} images downscaled to a short side of "
                         f"{QUICK_SIZE} px: a smoke test of a few seconds")
    options.add_out(p, "preserve", files="preserve.csv, preserve_per_image.csv, preserve.md "
                                         "and preserve_crops.png")


def run(args, argv: Sequence[str]) -> int:
    """Run ``poolbench-bench preserve`` with parsed ``args`` (``argv`` is recorded)."""
    images = args.images or list(QUICK_IMAGES if args.quick else IMAGES)
    fig_image = args.figure_image or images[0]
    if fig_image not in images:
        raise SystemExit(f"--figure-image {fig_image!r} is not among the images {images}")
    options.check_positive(kernels=args.kernels)
    cfg = PreserveConfig(
        images=images, methods=args.methods, kernels=args.kernels, resize=args.resize,
        short_side=QUICK_SIZE if args.quick else None, seed=args.seed,
        keep_restored=None if args.no_figure else fig_image, log=log,
    )
    result = run_preserve(cfg)
    print_report(result)
    figure = None
    written = []
    if not args.no_figure:
        fig_path = crops_figure(result, args.out / "preserve_crops.png",
                                tuple(args.crop) if args.crop else None)
        figure = fig_path.name
        written.append(fig_path)
    say_written(write_tables(result, args.out, command_line(argv), figure) + written)
    return 0
