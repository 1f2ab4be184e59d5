"""The paper's figures, drawn from runs (matplotlib, Agg canvas), each saved as PNG and PDF.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, so
importing this module never changes pyplot's backend in the caller's session.

- :func:`fig1_pool_outputs`: each registry method's actual output on one small input.
- :func:`fig2_accuracy`: per-method bars (mean, sample-std error bars, every seed as a dot),
  from the runs of Table 1 (:func:`~poolbench.results.stats.pair_with_baseline`).
- :func:`fig3_architecture`: each method on every model, per dataset.
- :func:`fig4_kt_heatmap`: the K x T ablation as a heatmap.
- :func:`fig5_learning_curves`: per-epoch train/val curves, mean over seeds with a ±1 std band.
- :func:`fig6_overhead`: measured epoch time relative to ``max`` and extra parameters.
- :func:`fig7_learned_params`: learned pooling parameters (blend weights, thresholds) per
  epoch, mean over seeds with a band, one line per layer.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .labels import order_data, order_methods, order_models
from .runs import learned_params_frame
from .selection import accuracy_column, usable_main
from .stats import pair_with_baseline
from .tables import IMAGE_MARK, SEED_MARK, WHICH_TEXT, architecture_view, kt_frame, overhead_frame

DPI = 150


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` under ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=DPI)
        paths.append(p)
    return paths


def method_colors(methods) -> dict[str, tuple]:
    """A fixed colour per method (same across figures): max in black, others from tab20."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    out, i = {}, 0
    for m in order_methods(methods):
        if m == "max":
            out[m] = (0.1, 0.1, 0.1, 1.0)
        else:
            out[m] = cmap(i % 20)
            i += 1
    return out


def _title(fig: Figure, text: str, fontsize: float = 10) -> None:
    """A figure title wrapped to the figure's width (so it is never cut off)."""
    width = fig.get_figwidth()
    fig.suptitle(textwrap.fill(text, max(30, int(width * 130 / fontsize))), fontsize=fontsize)


def _ax_title(ax, text: str, fontsize: float = 9) -> None:
    width = ax.get_figure().get_figwidth() * ax.get_position().width
    ax.set_title(textwrap.fill(text, max(25, int(width * 130 / fontsize))), fontsize=fontsize)


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return int(np.ceil(n / ncols)), ncols


# ---- Figure 1 -------------------------------------------------------------------------------

def pool_outputs(size: int = 6, seed: int = 0, kernel_size: int = 2) -> tuple[np.ndarray, dict]:
    """(input, {method: output}) for every registry method that can pool one ``size`` x ``size``
    map (``fractional_max`` refuses even sizes, where it would be max pooling).

    Each layer is built with :func:`poolbench.pooling.create_pool` (one channel, default
    hyperparameters, parameters at their seeded initialisation) and run in eval mode.
    """
    import torch

    from ..pooling import available_pools, create_pool

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, size, size, generator=g)
    outs = {}
    for name in available_pools():
        torch.manual_seed(seed)
        layer = create_pool(name, 1, kernel_size=kernel_size).eval()
        try:
            layer.check_input_size(size, size)
        except ValueError:  # fractional_max on an even size: its windows would be max pooling's
            continue
        with torch.no_grad():
            outs[name] = layer(x)[0, 0].float().numpy()
    return x[0, 0].numpy(), outs


def fig1_pool_outputs(out_dir, size: int = 6, seed: int = 0) -> list[Path]:
    """Paper Fig. 1 done for real: every method's output on the same small input."""
    x, outs = pool_outputs(size, seed)
    panels = [("input", x)] + list(outs.items())
    nrows, ncols = _grid(len(panels), 6)
    fig = _figure(2.1 * ncols, 2.3 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    lim = float(np.abs(x).max())
    im = None
    for ax, (name, a) in zip(axes, panels):
        im = ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for (i, j), v in np.ndenumerate(a):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center",
                    fontsize=6 if a.shape[0] > 4 else 8,
                    color="white" if abs(v) > 0.6 * lim else "black")
        ax.set_title(name if name != "input" else f"input ({size}x{size})", fontsize=9,
                     fontweight="bold" if name == "input" else "normal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.tolist(), shrink=0.6, label="value")
    _title(fig, f"Each method's output (kernel 2, stride 2, eval mode, initial parameters, "
                 f"seed {seed}) on one {size}x{size} input", fontsize=10)
    return save(fig, out_dir, "fig1_pool_outputs")


# ---- Figure 2 -------------------------------------------------------------------------------

def _marks(stats, exp_data_model_method) -> str:
    if stats is None or stats.empty:
        return ""
    d, m, meth = exp_data_model_method
    r = stats[(stats["data"] == d) & (stats["model"] == m) & (stats["method"] == meth)]
    if r.empty:
        return ""
    r = r.iloc[0]
    return (SEED_MARK if r.get("sig_seeds") else "") + (IMAGE_MARK if r.get("sig_image") else "")


def _zoom(ax, values):
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v):
        lo, hi = v.min(), v.max()
        pad = max(hi - lo, 1.0) * 0.6
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad * 0.6) if hi <= 100 else hi + pad)


def fig2_accuracy(runs: pd.DataFrame, out_dir, which: str = "final",
                  stats: pd.DataFrame | None = None, baseline: str = "max") -> list[Path]:
    """Per-method test top-1 bars with sample-std error bars and seed dots; data x model.

    The runs are Table 1's: one per seed, a method's seeds those ``baseline`` has too."""
    col = accuracy_column(which)
    ok = pair_with_baseline(runs, which, baseline).used
    models, datasets = order_models(runs["model"].dropna().unique()), \
        order_data(runs["data"].dropna().unique())
    methods = order_methods(usable_main(runs)["method"].unique())
    colors = method_colors(methods)
    fig = _figure(max(5.0, 0.55 * len(methods) * len(datasets) + 1.5), 3.3 * len(models))
    axes = fig.subplots(len(models), len(datasets), squeeze=False)
    for i, m in enumerate(models):
        for j, d in enumerate(datasets):
            ax = axes[i, j]
            cell = ok[(ok["model"] == m) & (ok["data"] == d)]
            shown = []
            for k, meth in enumerate(methods):
                v = 100 * cell.loc[cell["method"] == meth, col].to_numpy(float)
                if not len(v):
                    continue
                mean = v.mean()
                err = v.std(ddof=1) if len(v) > 1 else 0.0
                ax.bar(k, mean, color=colors[meth], alpha=0.85, yerr=err, capsize=3,
                       error_kw={"elinewidth": 1})
                ax.scatter(np.full(len(v), k) + np.linspace(-0.15, 0.15, len(v)), v, s=8,
                           color="black", zorder=3)
                mark = _marks(stats, (d, m, meth))
                if mark:
                    ax.text(k, mean + err, mark, ha="center", va="bottom", fontsize=9)
                shown.extend(v)
            base = cell.loc[cell["method"] == baseline, col]
            if len(base):
                ax.axhline(100 * base.mean(), color="black", ls="--", lw=0.8,
                           label=f"{baseline} mean")
                ax.legend(fontsize=7, loc="lower right")
            ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{d} / {m}", fontsize=10)
            ax.set_ylabel("test top-1 (%)")
            _zoom(ax, shown)
            if not shown:
                ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center")
    _title(fig, f"Test top-1 {WHICH_TEXT[which].split(' (')[0]}: mean ± sample std over the "
                 f"seeds paired with {baseline} (dots: seeds; {SEED_MARK} seed-level / "
                 f"{IMAGE_MARK} image-level test: differs from {baseline})", fontsize=9)
    return save(fig, out_dir, "fig2_accuracy")


# ---- Figure 3 -------------------------------------------------------------------------------

def fig3_architecture(runs: pd.DataFrame, out_dir, which: str = "final") -> list[Path] | None:
    """Each method on every model, grouped bars per dataset (None with fewer than 2 models)."""
    view = architecture_view(runs, which, every_method=False)
    if view is None:
        return None
    col, ok, models, datasets, methods = (view.col, view.ok, view.models, view.datasets,
                                          view.methods)
    fig = _figure(max(5.0, 0.6 * len(methods) + 2), 3.2 * len(datasets))
    axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
    width = 0.8 / len(models)
    from matplotlib import colormaps

    cmap = colormaps["Set2"]
    for ax, d in zip(axes, datasets):
        shown = []
        for k, m in enumerate(models):
            means, errs = [], []
            for meth in methods:
                v = 100 * ok.loc[(ok["data"] == d) & (ok["model"] == m) &
                                 (ok["method"] == meth), col].to_numpy(float)
                means.append(v.mean() if len(v) else np.nan)
                errs.append(v.std(ddof=1) if len(v) > 1 else 0.0)
                shown.extend(v)
            x = np.arange(len(methods)) + (k - (len(models) - 1) / 2) * width
            ax.bar(x, means, width, yerr=errs, capsize=2, label=m, color=cmap(k))
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(d, fontsize=10)
        ax.legend(fontsize=7)
        _zoom(ax, shown)
    _title(fig, "Architecture sensitivity: mean ± sample std over seeds", fontsize=10)
    return save(fig, out_dir, "fig3_architecture")


# ---- Figure 4 -------------------------------------------------------------------------------

def fig4_kt_heatmap(runs: pd.DataFrame, sets, out_dir, which: str = "final") -> list[Path] | None:
    """K x T heatmaps, one panel per (data, model, pool) ablation set (None without any)."""
    if not sets:
        return None
    nrows, ncols = _grid(len(sets), 3)
    fig = _figure(4.2 * ncols, 3.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (d, m, p) in zip(axes, sets):
        f = kt_frame(runs, d, m, p, which)
        ks, ts = sorted(f["topk"].unique()), sorted(f["threshold"].unique())
        grid = np.full((len(ks), len(ts)), np.nan)
        for _, r in f.iterrows():
            grid[ks.index(r["topk"]), ts.index(r["threshold"])] = r["top1_mean_pct"]
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        for _, r in f.iterrows():
            i, j = ks.index(r["topk"]), ts.index(r["threshold"])
            std = f"\n± {r['top1_std_pct']:.2f}" if np.isfinite(r["top1_std_pct"]) else ""
            light = im.norm(r["top1_mean_pct"]) > 0.6  # viridis is light at the top
            ax.text(j, i, f"{r['top1_mean_pct']:.2f}{std}\nn={r['n']}", ha="center",
                    va="center", fontsize=7, color="black" if light else "white")
        ax.set_xticks(range(len(ts)), [f"{t:g}" for t in ts])
        ax.set_yticks(range(len(ks)), [str(k) for k in ks])
        ax.set_xlabel("threshold T")
        ax.set_ylabel("top-k K")
        ax.set_title(f"{p}: {d} / {m}", fontsize=9)
        fig.colorbar(im, ax=ax, label="test top-1 (%)", shrink=0.8)
    for ax in axes[len(sets):]:
        ax.axis("off")
    _title(fig, f"K x T ablation: test top-1 {WHICH_TEXT[which].split(' (')[0]}, mean over "
                 "seeds", fontsize=10)
    return save(fig, out_dir, "fig4_kt_heatmap")


# ---- Figure 5 -------------------------------------------------------------------------------

CURVES = (("train/loss", "train loss"), ("val/loss", "validation loss"),
          ("val/acc", "validation top-1 (%)"))


def _band(ax, frame: pd.DataFrame, key: str, color, label, scale=1.0):
    """Mean over runs per epoch with a ±1 sample-std band; ``frame``: run_id, epoch, key."""
    g = frame.dropna(subset=[key]).groupby("epoch")[key]
    mean, std, n = g.mean() * scale, g.std(ddof=1) * scale, g.count()
    if mean.empty:
        return False
    x = mean.index.to_numpy() + 1  # epochs 1-based on the axis
    ax.plot(x, mean.to_numpy(), color=color, lw=1.4, label=label)
    s = std.fillna(0).to_numpy()
    if (n > 1).any():
        ax.fill_between(x, mean.to_numpy() - s, mean.to_numpy() + s, color=color, alpha=0.18,
                        lw=0)
    return True


def fig5_learning_curves(runs: pd.DataFrame, epochs: pd.DataFrame, out_dir) -> list[Path] | None:
    """Per-epoch curves (train loss, val loss, val top-1): mean over seeds, ±1 std band."""
    ok = usable_main(runs)
    if epochs.empty or ok.empty:
        return None
    ep = epochs.merge(ok[["run_id", "data", "model", "method"]], on="run_id")
    keys = [(k, lbl) for k, lbl in CURVES if k in ep.columns and ep[k].notna().any()]
    if ep.empty or not keys:
        return None
    cells = [(d, m) for d in order_data(ep["data"].unique()) for m in order_models(ep["model"].unique())
             if ((ep["data"] == d) & (ep["model"] == m)).any()]
    methods = order_methods(ok["method"].unique())
    colors = method_colors(methods)
    fig = _figure(4.0 * len(keys) + 1.8, 2.9 * len(cells))
    axes = fig.subplots(len(cells), len(keys), squeeze=False)
    for i, (d, m) in enumerate(cells):
        for j, (key, label) in enumerate(keys):
            ax = axes[i, j]
            for meth in methods:
                f = ep[(ep["data"] == d) & (ep["model"] == m) & (ep["method"] == meth)]
                _band(ax, f, key, colors[meth], meth, 100.0 if key.endswith("acc") else 1.0)
            ax.set_title(f"{d} / {m}: {label}", fontsize=9)
            _epoch_axis(ax)
            ax.set_ylabel(label)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
    _title(fig, "Learning curves from metrics.csv: mean over seeds, band ±1 sample std",
                 fontsize=10)
    return save(fig, out_dir, "fig5_learning_curves")


# ---- Figure 6 -------------------------------------------------------------------------------

def fig6_overhead(runs: pd.DataFrame, out_dir, baseline: str = "max") -> list[Path] | None:
    """Epoch time relative to the baseline and extra parameters, per method."""
    f = overhead_frame(runs, baseline)
    if f.empty:
        return None
    methods = order_methods(f["method"].unique())
    cells = [(d, m) for d in order_data(f["data"].unique()) for m in order_models(f["model"].unique())
             if ((f["data"] == d) & (f["model"] == m)).any()]
    from matplotlib import colormaps

    cmap = colormaps["Set2"]
    fig = _figure(max(7.0, 0.9 * len(methods) + 2), 6.0)
    ax_t, ax_p = fig.subplots(2, 1)
    width = 0.8 / len(cells)
    for k, (d, m) in enumerate(cells):
        g = f[(f["data"] == d) & (f["model"] == m)].set_index("method").reindex(methods)
        x = np.arange(len(methods)) + (k - (len(cells) - 1) / 2) * width
        rel_err = g["epoch_time_s_std"] / g["epoch_time_s_mean"] * g["epoch_time_rel"]
        ax_t.bar(x, g["epoch_time_rel"], width, yerr=rel_err.fillna(0), capsize=2,
                 color=cmap(k), label=f"{d} / {m}")
        ax_p.bar(x, g["extra_params"], width, color=cmap(k), label=f"{d} / {m}")
    ax_t.axhline(1.0, color="black", lw=0.8, ls="--")
    ax_t.set_ylabel(f"epoch time / {baseline}")
    _ax_title(ax_t, "Measured training time per epoch relative to the baseline (median "
                    "epoch of each run, mean over seeds; error bar: sample std)")
    ax_p.set_ylabel(f"extra parameters vs {baseline}")
    ax_p.set_yscale("symlog", linthresh=10)
    ax_p.set_title("Extra learnable parameters (whole model)", fontsize=9)
    for ax in (ax_t, ax_p):
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    return save(fig, out_dir, "fig6_overhead")


# ---- learned parameters -------------------------------------------------------------------

def fig7_learned_params(runs: pd.DataFrame, epochs: pd.DataFrame, out_dir) -> list[Path]:
    """Learned pooling parameters per epoch, one figure per data/model with any logged.

    One panel per method and summary key (the ``*_mean`` keys of each layer's
    ``learned_summary()``: blend weight λ, threshold, p); one line per pooling layer, mean
    over seeds with a ±1 std band.
    """
    lp = learned_params_frame(usable_main(runs), epochs)
    if lp.empty:
        return []
    paths = []
    for (d, m), g in lp.groupby(["data", "model"], sort=True):
        keys_by_method = []
        for meth in order_methods(g["method"].unique()):
            keys = sorted(g.loc[g["method"] == meth, "key"].unique())
            means = [k for k in keys if k.endswith("_mean")] or keys
            keys_by_method += [(meth, k) for k in means]
        nrows, ncols = _grid(len(keys_by_method), 3)
        fig = _figure(4.3 * ncols, 3.0 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (meth, key) in zip(axes, keys_by_method):
            sel = g[(g["method"] == meth) & (g["key"] == key)]
            layers = list(dict.fromkeys(sel.sort_values("layer")["layer"]))
            from matplotlib import colormaps

            cmap = colormaps["viridis"]
            for li, layer in enumerate(layers):
                f = sel[sel["layer"] == layer].rename(columns={"value": key})
                _band(ax, f, key, cmap(li / max(1, len(layers) - 1)), layer)
            ax.set_title(f"{meth}: {key}", fontsize=9)
            ax.set_ylabel(key)
            _epoch_axis(ax)
            ax.legend(fontsize=6, title="layer", title_fontsize=6)
        for ax in axes[len(keys_by_method):]:
            ax.axis("off")
        _title(fig, f"Learned pooling parameters over training: {d} / {m} (mean over seeds, "
                     "band ±1 std)", fontsize=10)
        paths += save(fig, out_dir, f"fig7_learned_params_{d}_{m}")
    return paths
