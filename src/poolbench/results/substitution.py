"""The pooling-substitution table (SoftPool's Table 2 layout): per architecture, its size and
cost, the original network's accuracy, and each method swapped into the pre-trained network
(evaluated without training: ``poolbench-eval``) and trained from scratch.

Rows: architecture x method (every method but the baseline, ``max`` = the original pooling).
Columns: params (M) and GFLOPs (multiply-adds per image at the runs' resolution, of
convolutions and matrix products, counted by ``torch.utils.flop_counter``) of the method's
network; *pre-trained*: original top-1/top-5 (the published weights evaluated with pool=max),
the method's top-1/top-5 with Δ; *from scratch*: the trained original (pool=max) top-1/top-5,
the method's top-1/top-5 with Δ. Δ compares runs with the same weights source (pre-trained
with pre-trained, trained with trained), paired by seed.

Significance is Table 1's (:func:`~poolbench.results.stats.compare_to_baseline`): * where the
seed-level paired t-test rejects, † where the image-level sign-flip test does, Holm-adjusted
over the methods of an architecture, p < alpha. A pre-trained evaluation has one set of
weights (n = 1), so only the image-level test can mark it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .labels import order_methods
from .stats import compare_to_baseline
from .table_format import Table, finite, mean_std, signed
from .tables import IMAGE_MARK, SEED_MARK, WHICH_TEXT, _sig_note

EVAL_ONLY = "evaluation_only"


def is_eval_only(runs: pd.DataFrame) -> pd.Series:
    """Which runs only evaluated (``poolbench-eval``) instead of training."""
    if EVAL_ONLY not in runs:
        return pd.Series(False, index=runs.index)
    return runs[EVAL_ONLY].fillna(False).astype(bool)


def has_substitution_runs(runs: pd.DataFrame) -> bool:
    """Whether the runs hold any timm model (``timm-<arch>``): the table is for them."""
    return bool(runs["model"].dropna().astype(str).str.startswith("timm-").any())


def model_gflops(config: dict | None, pool: str) -> float:
    """Multiply-adds (x 1e9) per image of the run's network (NaN when it cannot be built)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..config import model_arguments
    from ..models import build_model
    from omegaconf import OmegaConf

    if not config:
        return np.nan
    cfg = OmegaConf.create(config)
    hparams, kwargs = model_arguments(cfg)
    kwargs.pop("pretrained", None)  # the cost does not depend on the weights
    size = int(cfg.data.get("image_size") or 224)
    classes = cfg.data.get("num_classes") or 1000
    try:
        model = build_model(cfg.model.name, int(classes), pool=pool, pool_hparams=hparams,
                            input_size=size, **kwargs).eval()
    except (ValueError, RuntimeError):
        return np.nan
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2 / 1e9


def _cell(runs: pd.DataFrame, stats: pd.DataFrame, model: str, method: str,
          acc: str) -> dict:
    """mean top-1/top-5 (over the paired seeds), Δs and marks of one method of one model."""
    sel = runs[(runs["model"] == model) & (runs["method"] == method) & (runs["status"] == "done")]
    top5 = acc.replace("top1", "top5")
    out = {"top1": sel[acc].mean() if len(sel) else np.nan,
           "top5": sel[top5].mean() if len(sel) else np.nan, "n": int(sel[acc].notna().sum()),
           "mark": "", "delta1": np.nan, "delta5": np.nan, "runs": sel}
    r = stats[(stats["model"] == model) & (stats["method"] == method)] if len(stats) else stats
    if len(r):
        r = r.iloc[0]
        out["mark"] = (SEED_MARK if bool(r.get("sig_seeds")) else "") + \
            (IMAGE_MARK if bool(r.get("sig_image")) else "")
        out["delta1"] = r["delta"]
    return out


def _delta5(method_runs: pd.DataFrame, base_runs: pd.DataFrame, col: str) -> float:
    m = method_runs.set_index("seed")[col]
    b = base_runs.set_index("seed")[col]
    d = (m - b.reindex(m.index)).dropna()
    return float(d.mean()) if len(d) else np.nan


def _acc_text(c: dict, base: dict | None) -> list[str]:
    if base is None:
        return [mean_std(c["top1"], None), mean_std(c["top5"], None)]
    d5 = _delta5(c["runs"], base["runs"], c["top5col"])
    return [f"{mean_std(c['top1'], None)} ({signed(c['delta1'])}){c['mark']}",
            f"{mean_std(c['top5'], None)} ({signed(d5)})"]


def substitution_table(runs: pd.DataFrame, which: str = "final", baseline: str = "max",
                       alpha: float = 0.05) -> Table:
    """SoftPool Table 2's layout from the timm runs of ``runs`` (module docstring)."""
    runs = runs[runs["model"].astype(str).str.startswith("timm-")]
    evals, trained = runs[is_eval_only(runs)], runs[~is_eval_only(runs)]
    parts = {"pre-trained": (evals, "final"), "from scratch": (trained, which)}
    stats = {k: compare_to_baseline(r, w, baseline, alpha) for k, (r, w) in parts.items()}
    models = list(dict.fromkeys(runs["model"].dropna()))
    methods = [m for m in order_methods(runs["method"].dropna().unique()) if m != baseline]
    columns = [("", "Model"), ("", "Method"), ("", "Params (M)"), ("", "GFLOPs")]
    for part in parts:
        columns += [(part, f"{baseline} top-1"), (part, f"{baseline} top-5"),
                    (part, "top-1 (Δ)"), (part, "top-5 (Δ)")]
    rows, data = [], []
    for model in models:
        for method in methods:
            have = runs[(runs["model"] == model) & (runs["method"] == method)]
            if have.empty:
                continue
            first = have.iloc[0]
            row = [model.removeprefix("timm-"), method,
                   f"{first['params_total'] / 1e6:.1f}" if finite(first["params_total"]) else "—",
                   _gflops_text(model_gflops(first["config"], first["pool"]))]
            for part, (r, w) in parts.items():
                acc = f"test_top1_{w}"
                base = _cell(r, stats[part], model, baseline, acc)
                cell = _cell(r, stats[part], model, method, acc)
                base["top5col"] = cell["top5col"] = acc.replace("top1", "top5")
                row += _acc_text(base, None) + _acc_text(cell, base)
                data.append({"model": model, "method": method, "part": part,
                             "base_top1": 100 * base["top1"], "base_top5": 100 * base["top5"],
                             "top1": 100 * cell["top1"], "top5": 100 * cell["top5"],
                             "delta_top1": 100 * cell["delta1"], "n": cell["n"],
                             "sig": cell["mark"]})
            rows.append(row)
    return Table(
        name="substitution", title="Pooling substitution (SoftPool Table 2 layout)",
        caption=(f"Top-1/top-5 test accuracy (%) of each architecture with its original "
                 f"pooling ({baseline}) and with each method: swapped into the pre-trained "
                 f"network and evaluated without training (final weights), and trained from "
                 f"scratch ({WHICH_TEXT[which]}). Δ in percentage points vs {baseline} with "
                 "the same weights source, paired by seed; GFLOPs: multiply-adds per image."),
        columns=columns, rows=rows, data=pd.DataFrame(data),
        notes=[_sig_note(baseline, alpha),
               "Pre-trained evaluations have one set of weights (n = 1): only the image-level "
               "test can mark them."])


def _gflops_text(x: float) -> str:
    return f"{x:.2f}" if finite(x) else "—"
