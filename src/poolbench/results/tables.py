"""The paper's tables, computed from collected runs: what each table shows.

Every builder takes the ``runs`` frame of a :class:`~poolbench.results.runs.Collection`
(one experiment) and returns :class:`~poolbench.results.table_format.Table` objects: display
cells for Markdown/LaTeX and a numeric long-form frame for CSV (accuracies in percent,
differences in percentage points).

- :func:`table1` (per model): method x dataset, top-1 mean ± sample std, n, Δ vs ``max``
  marked where the seed-level paired t-test (*) or the image-level sign-flip test (†)
  finds it; all from the same runs (:func:`~poolbench.results.stats.pair_with_baseline`).
- :func:`significance_table`: the tests behind those marks, in full.
- :func:`architecture_table`: each method on every model, per dataset.
- :func:`kt_table`: the K x T ablation (top-k x threshold) of T-Max-Avg-like methods.
- :func:`overhead_table`: measured epoch time relative to ``max`` and extra parameters.

The data report is :mod:`~poolbench.results.checks`'s; the data files (runs.csv,
learned_params.csv) are :mod:`~poolbench.results.runs`'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..rundir import DONE
from .labels import order_data, order_methods, order_models
from .selection import accuracy_column, one_run_per_seed, usable_main
from .stats import describe, pair_with_baseline, summarize
from .table_format import (
    Table, best_mask, finite, int_text, mean_std, num_text, pval, signed,
)

WHICH_TEXT = {
    "final": "of the final weights (after the last epoch)",
    "best_val": ("of the checkpoint with the best validation accuracy (selected on the "
                 "held-out validation split; the test set is never used for selection)"),
}
SEED_MARK, IMAGE_MARK = "*", "†"


# ---- notes under a table ---------------------------------------------------------------

def _excluded_notes(runs: pd.DataFrame, which: str, **where) -> list[str]:
    """'cifar100/vgg16/gated: 1 diverged (seed 2)' for runs a table leaves out."""
    sel = runs[~runs["kt_ablation"].astype(bool)]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    col = accuracy_column(which)
    notes = []
    bad = sel[(sel["status"] != DONE) | sel[col].isna()]
    for (d, m, meth), g in bad.groupby(["data", "model", "method"], sort=True):
        parts = []
        for status, gg in g.groupby(g["status"].where(g["status"] != DONE,
                                                      f"no {which} test accuracy")):
            seeds = ", ".join(str(s) for s in sorted(gg["seed"].dropna().astype(int)))
            parts.append(f"{len(gg)} {status} (seed {seeds})")
        notes.append(f"excluded {d}/{m}/{meth}: " + "; ".join(parts))
    return notes


def _sig_marks(stats: pd.DataFrame | None, exp, data, model, method) -> tuple[str, dict]:
    if stats is None or stats.empty:
        return "", {}
    r = stats[(stats["experiment"] == exp) & (stats["data"] == data) &
              (stats["model"] == model) & (stats["method"] == method)]
    if r.empty:
        return "", {}
    r = r.iloc[0]
    mark = (SEED_MARK if bool(r.get("sig_seeds")) else "") + \
        (IMAGE_MARK if bool(r.get("sig_image")) else "")
    return mark, r.to_dict()


def _sig_note(baseline: str, alpha: float) -> str:
    return (f"Δ: mean over the paired seeds of (method − {baseline}), in percentage points. "
            f"{SEED_MARK}: the seed-level paired t-test rejects — the difference exceeds the "
            "training noise between seeds, conditional on this test set. "
            f"{IMAGE_MARK}: the image-level exact sign-flip test rejects — the test images' "
            "correctness differences, each averaged over the seeds, favour one side more than "
            "chance: the difference of these trained models generalises over the image "
            "population (training noise is not in this test). Both Holm-adjusted over the "
            f"methods of a column, p < {alpha:g} (details: significance table).")


def _runs_note(baseline: str) -> str:
    return (f"Mean ± sample standard deviation over seeds (ddof=1); n = seeds. One run per "
            f"seed (the latest finished); a method's row uses the seeds {baseline} has too, so "
            "its mean, n, Δ and marks come from the same runs (runs left out are listed "
            f"below). Where {baseline} has seeds a method lacks, Δ is not the difference of "
            "the two rows' means. Best mean per dataset in bold.")


def _dropped_notes(dropped: pd.DataFrame, **where) -> list[str]:
    """'left out cifar100/vgg16/gated seed 2 (run id): why' for finished runs not used."""
    for k, v in where.items():
        dropped = dropped[dropped[k] == v]
    return [f"left out {r['data']}/{r['model']}/{r['method']} seed {r['seed']} "
            f"({r['run_id']}): {r['reason']}" for _, r in dropped.iterrows()]


# ---- Table 1 ---------------------------------------------------------------------------------

def table1(runs: pd.DataFrame, model: str, which: str = "final", stats: pd.DataFrame | None = None,
           baseline: str = "max", alpha: float = 0.05) -> Table:
    """Method x dataset top-1 test accuracy for one model (paper Table 1).

    Every number of a cell comes from the runs of :func:`pair_with_baseline`, the runs
    ``stats`` (:func:`~poolbench.results.stats.compare_to_baseline`) tests.
    """
    col = accuracy_column(which)
    exp = _one_experiment(runs)
    pairing = pair_with_baseline(runs, which, baseline)
    used = pairing.used[pairing.used["model"] == model]
    datasets = order_data(runs.loc[runs["model"] == model, "data"].dropna().unique())
    methods = order_methods(_main_methods(runs[runs["model"] == model]))
    columns = [("", "Method")]
    for d in datasets:
        columns += [(d, "top-1 (%)"), (d, "n"), (d, f"Δ vs {baseline}")]
    summary = {(m, d): summarize(used[(used["method"] == m) & (used["data"] == d)], col)
               for m in methods for d in datasets}
    records, rows = [], []
    for m in methods:
        row = [m]
        for d in datasets:
            s, b = summary[(m, d)], summary.get((baseline, d), {"n": 0})
            mark, st = _sig_marks(stats, exp, d, model, m)
            if m == baseline:
                dtext = "baseline" if s["n"] else "—"
            elif not b["n"]:
                dtext = f"no {baseline}"
            else:
                dtext = signed(s["delta"]) + mark
            row += [mean_std(s["mean"], s["std"]), str(s["n"]), dtext if s["n"] else "—"]
            records.append({
                "experiment": exp, "model": model, "data": d, "method": m, "which": which,
                "n": s["n"], "top1_mean_pct": 100 * s["mean"], "top1_std_pct": 100 * s["std"],
                "delta_pp": 100 * s["delta"] if m != baseline else 0.0 if s["n"] else np.nan,
                "p_paired_holm": st.get("p_paired_holm", np.nan),
                "p_image_holm": st.get("p_image_holm", np.nan),
                "sig_seeds": bool(st.get("sig_seeds", False)),
                "sig_image": bool(st.get("sig_image", False)),
                "seeds": s["seeds"],
            })
        rows.append(row)
    data = pd.DataFrame(records)
    bold = [[False] * len(columns) for _ in rows]
    for j, d in enumerate(datasets):
        mask = best_mask([summary[(m, d)]["mean"] for m in methods])
        for i, is_best in enumerate(mask):
            bold[i][1 + 3 * j] = is_best
    if len(data):
        data["best"] = data.apply(
            lambda r: bool(bold[methods.index(r["method"])][1 + 3 * datasets.index(r["data"])]),
            axis=1)
    notes = [_runs_note(baseline), _sig_note(baseline, alpha)]
    notes += _excluded_notes(runs, which, model=model)
    notes += _dropped_notes(pairing.dropped, model=model)
    return Table(
        name=f"table1_{model}", title=f"Table 1 ({model})",
        caption=(f"Top-1 test accuracy (%) of {model}, {WHICH_TEXT[which]}; "
                 f"experiment {exp}."),
        columns=columns, rows=rows, data=data, bold=bold, notes=notes)


def _main_methods(runs: pd.DataFrame):
    """Every main method with a run of any status (rows with no finished run show '—')."""
    return runs.loc[~runs["kt_ablation"].astype(bool), "method"].dropna().unique()


def _one_experiment(runs: pd.DataFrame) -> str:
    exps = sorted(runs["experiment"].dropna().unique())
    return exps[0] if len(exps) == 1 else ", ".join(exps)


# ---- significance ------------------------------------------------------------------------------

def significance_table(stats: pd.DataFrame, which: str = "final", baseline: str = "max",
                       alpha: float = 0.05) -> Table:
    """The seed-level and image-level tests of every method vs the baseline, in full."""
    st = stats[stats["method"] != baseline] if len(stats) else stats
    seed, image = "seed level: paired t-test", "image level: sign-flip test"
    columns = [("", "Data"), ("", "Model"), ("", "Method"), ("", "Δ (pp)"),
               (seed, "pairs"), (seed, "t"), (seed, "p"), (seed, "p (Holm)"),
               (image, "seeds"), (image, "images"), (image, "differ"), (image, "Δ (pp)"),
               (image, "p"), (image, "p (Holm)"), ("", "McNemar p per seed (diagnostic)"),
               ("", "distinguishable")]
    rows = []
    for _, r in st.iterrows():
        per_seed = r.get("p_mcnemar_per_seed")
        per_seed = per_seed if isinstance(per_seed, dict) else {}
        verdict = [name for name, key in (("seeds", "sig_seeds"), ("images", "sig_image"))
                   if r.get(key)]
        rows.append([
            r["data"], r["model"], r["method"], signed(r["delta"]),
            int_text(r.get("n")), num_text(r.get("paired_t")), pval(r.get("p_paired")),
            pval(r.get("p_paired_holm")), int_text(r.get("image_seeds")),
            int_text(r.get("image_n")), int_text(r.get("image_differ")),
            signed(r.get("image_delta")), pval(r.get("p_image")), pval(r.get("p_image_holm")),
            ", ".join(f"{s}: {pval(p)}" for s, p in sorted(per_seed.items())) or "—",
            " + ".join(verdict) if verdict else "no",
        ])
    notes = [
        f"Seed level: paired two-sided t-test of per-seed test top-1, method vs {baseline}, "
        "paired by seed (one run per seed, the latest finished; pairs = seeds both have). "
        "It measures the training noise between seeds, conditional on this test set.",
        f"Image level: per test image, k = seeds in which the method is right minus seeds in "
        f"which {baseline} is right (differ: images with k ≠ 0; Δ: mean of k / seeds); exact "
        "two-sided sign-flip (paired permutation) test of the sum of k over the images. Its "
        "unit is the image and it uses every seed with saved predictions: it asks whether the "
        "difference generalises over the image population, taking the seeds' trained models "
        "as given (averaging over their training noise, not testing it).",
        "McNemar per seed: unadjusted, a diagnostic only (valid within one seed). Summed over "
        "seeds it would count an image once per seed and overstate significance.",
        f"Holm adjustment over the methods of each data/model; distinguishable: adjusted p < "
        f"{alpha:g}. A p of — means not testable: fewer than two seed pairs, per-seed "
        "differences without spread, or no saved test predictions.",
    ]
    notes += sorted({f"{r['data']}/{r['model']}/{r['method']}: {r['image_note']}"
                     for _, r in st.iterrows()
                     if isinstance(r.get("image_note"), str) and r.get("image_note")})
    data = st.copy()
    for c in ("mean", "std", "base_mean"):
        if c in data:
            data[c + "_pct"] = 100 * data.pop(c)
    for c in ("delta", "image_delta"):
        if c in data:
            data[c + "_pp"] = 100 * data.pop(c)
    data.insert(4, "which", which)
    return Table(name="significance", title="Significance vs " + baseline,
                 caption=(f"Each method's test top-1 {WHICH_TEXT[which]} against {baseline}: "
                          "is the difference larger than the training noise between seeds "
                          "(seed level), and does it hold over the image population (image "
                          "level)?"),
                 columns=columns, rows=rows, data=data.reset_index(drop=True), notes=notes)


# ---- architecture ------------------------------------------------------------------------------

@dataclass
class ArchitectureView:
    """What the architecture comparison shows: ``ok``, the finished main runs with a value in
    ``col`` (the accuracy column), and the ``models``, ``datasets`` and ``methods``, ordered."""

    col: str
    ok: pd.DataFrame
    models: list[str]
    datasets: list[str]
    methods: list[str]


def architecture_view(runs: pd.DataFrame, which: str = "final",
                      every_method: bool = True) -> ArchitectureView | None:
    """The selection of :func:`architecture_table` and Figure 3 (None with fewer than 2 models).

    ``every_method``: every main method with a run of any status (a table shows '—' where
    none finished); else only the methods with finished runs (a figure's bars).
    """
    col = accuracy_column(which)
    ok = usable_main(runs)
    ok = ok[ok[col].notna()]
    models = order_models(runs["model"].dropna().unique())
    if len(models) < 2:
        return None
    methods = _main_methods(runs) if every_method else usable_main(runs)["method"].unique()
    return ArchitectureView(col, ok, models, order_data(runs["data"].dropna().unique()),
                            order_methods(methods))


def architecture_table(runs: pd.DataFrame, which: str = "final") -> Table | None:
    """Each method on every model, per dataset (paper: VGG16 vs ResNet18). None with <2 models."""
    view = architecture_view(runs, which)
    if view is None:
        return None
    col, ok, models, datasets, methods = (view.col, view.ok, view.models, view.datasets,
                                          view.methods)
    columns = [("", "Method")]
    for d in datasets:
        columns += [(d, m) for m in models]
        if len(models) == 2:
            columns.append((d, f"Δ {models[1]} − {models[0]}"))
    per = {(meth, d, m): describe(ok.loc[(ok["method"] == meth) & (ok["data"] == d) &
                                         (ok["model"] == m), col])
           for meth in methods for d in datasets for m in models}
    rows, records = [], []
    for meth in methods:
        row = [meth]
        for d in datasets:
            for m in models:
                s = per[(meth, d, m)]
                row.append(mean_std(s["mean"], s["std"]) + (f" (n={s['n']})" if s["n"] else ""))
                records.append({"method": meth, "data": d, "model": m, "which": which,
                                "n": s["n"], "top1_mean_pct": 100 * s["mean"],
                                "top1_std_pct": 100 * s["std"]})
            if len(models) == 2:
                diff = per[(meth, d, models[1])]["mean"] - per[(meth, d, models[0])]["mean"]
                row.append(signed(diff))
                records.append({"method": meth, "data": d, "model": f"{models[1]}-{models[0]}",
                                "which": which, "n": np.nan, "top1_mean_pct": 100 * diff,
                                "top1_std_pct": np.nan})
        rows.append(row)
    bold = [[False] * len(columns) for _ in rows]
    j = 1
    for d in datasets:
        for m in models:
            for i, b in enumerate(best_mask([per[(meth, d, m)]["mean"] for meth in methods])):
                bold[i][j] = b
            j += 1
        j += 1 if len(models) == 2 else 0
    return Table(
        name="architecture", title="Architecture sensitivity",
        caption=(f"Top-1 test accuracy (%) {WHICH_TEXT[which]} of every method on each "
                 f"architecture; mean ± sample std over seeds (n seeds, one run each: the "
                 f"latest finished); experiment "
                 f"{_one_experiment(runs)}."),
        columns=columns, rows=rows, data=pd.DataFrame(records), bold=bold,
        notes=["Best mean per column in bold. The Δ column is the difference of the two "
               "means in percentage points."] + _excluded_notes(runs, which))


# ---- K x T ablation ----------------------------------------------------------------------------

def kt_sets(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(data, model, pool) with runs at two or more (topk, threshold) settings."""
    out = []
    ok = runs[(runs["status"] == DONE) & runs["topk"].notna() & runs["threshold"].notna()]
    ok = ok[(ok["variant"] == "") | ok["kt_ablation"].astype(bool)]
    for (d, m, p), g in ok.groupby(["data", "model", "pool"], sort=True):
        if len(set(zip(g["topk"], g["threshold"]))) >= 2:
            out.append((d, m, p))
    return out


def kt_frame(runs: pd.DataFrame, data: str, model: str, pool: str, which: str) -> pd.DataFrame:
    """Mean, std, n of test top-1 per (topk, threshold) for one ablation set."""
    col = accuracy_column(which)
    ok = runs[(runs["status"] == DONE) & (runs["data"] == data) & (runs["model"] == model) &
              (runs["pool"] == pool) & ((runs["variant"] == "") | runs["kt_ablation"].astype(bool))
              & runs[col].notna()]
    ok = one_run_per_seed(ok)[0]
    recs = []
    for (k, t), g in ok.groupby(["topk", "threshold"], sort=True):
        s = describe(g[col])
        recs.append({"data": data, "model": model, "pool": pool, "topk": int(k),
                     "threshold": float(t), "which": which, "n": s["n"],
                     "top1_mean_pct": 100 * s["mean"], "top1_std_pct": 100 * s["std"],
                     "seeds": sorted(int(x) for x in g["seed"].dropna())})
    return pd.DataFrame(recs)


def kt_table(runs: pd.DataFrame, data: str, model: str, pool: str, which: str = "final") -> Table:
    """Top-k (rows) x threshold (columns) grid of one method (paper: the K x T ablation)."""
    f = kt_frame(runs, data, model, pool, which)
    ks, ts = sorted(f["topk"].unique()), sorted(f["threshold"].unique())
    columns = [("", "K \\ T")] + [("threshold T", f"{t:g}") for t in ts]
    rows, vals = [], []
    for k in ks:
        row, vrow = [f"K={k}"], []
        for t in ts:
            r = f[(f["topk"] == k) & (f["threshold"] == t)]
            if r.empty:
                row.append("—")
                vrow.append(np.nan)
            else:
                r = r.iloc[0]
                row.append(mean_std(r["top1_mean_pct"], r["top1_std_pct"], scale=1.0)
                           + f" (n={r['n']})")
                vrow.append(r["top1_mean_pct"])
        rows.append(row)
        vals.append(vrow)
    flat = best_mask([v for vr in vals for v in vr])
    bold = [[False] + flat[i * len(ts):(i + 1) * len(ts)] for i in range(len(ks))]
    return Table(
        name=f"kt_ablation_{data}_{model}_{pool}", title=f"K x T ablation: {pool}",
        caption=(f"Top-1 test accuracy (%) of {pool} on {data} with {model} for each top-k K "
                 f"and threshold T, {WHICH_TEXT[which]}; mean ± sample std over seeds."),
        columns=columns, rows=rows, data=f, bold=bold,
        notes=["Best cell in bold. Other hyperparameters at the method's defaults. One run "
               "per seed (the latest finished)."])


# ---- overhead ------------------------------------------------------------------------------------

def overhead_frame(runs: pd.DataFrame, baseline: str = "max") -> pd.DataFrame:
    """Per data/model/method: epoch time, its ratio to the baseline, parameters, extras."""
    ok = usable_main(runs)
    recs = []
    cells = [(d, m) for d in order_data(ok["data"].unique()) for m in order_models(ok["model"].unique())]
    for d, m in cells:
        cell = ok[(ok["data"] == d) & (ok["model"] == m)]
        if cell.empty:
            continue
        base = cell[cell["method"] == baseline]
        bt = describe(base["epoch_time_s"])
        bp = describe(base["params_total"])
        for meth in order_methods(cell["method"].unique()):
            g = cell[cell["method"] == meth]
            t, p = describe(g["epoch_time_s"]), describe(g["params_total"])
            recs.append({
                "data": d, "model": m, "method": meth, "n": t["n"],
                "epoch_time_s_mean": t["mean"], "epoch_time_s_std": t["std"],
                "epoch_time_rel": t["mean"] / bt["mean"] if bt["n"] else np.nan,
                "throughput_img_s": describe(g["throughput_img_s"])["mean"],
                "params_total": p["mean"],
                "extra_params": p["mean"] - bp["mean"] if bp["n"] else np.nan,
                "extra_params_pct": 100 * (p["mean"] - bp["mean"]) / bp["mean"]
                if bp["n"] and bp["mean"] else np.nan,
                "params_pooling": describe(g["params_pooling"])["mean"],
                "pool_layers": describe(g["n_pool_layers"])["mean"],
                "devices": sorted(set(str(x) for x in g["device"].dropna())),
            })
    return pd.DataFrame(recs)


def overhead_table(runs: pd.DataFrame, baseline: str = "max") -> Table:
    """Measured training-time overhead and extra parameters vs the baseline (paper Fig. 6)."""
    f = overhead_frame(runs, baseline)
    columns = [("", "Data"), ("", "Model"), ("", "Method"), ("epoch time", "s"),
               ("epoch time", f"× {baseline}"), ("", "img/s (run mean)"), ("parameters", "total"),
               ("parameters", f"extra vs {baseline}"), ("parameters", "in pooling"),
               ("", "pool layers")]
    rows = []
    for _, r in f.iterrows():
        rows.append([
            r["data"], r["model"], r["method"],
            mean_std(r["epoch_time_s_mean"], r["epoch_time_s_std"], scale=1.0),
            f"{r['epoch_time_rel']:.2f}" if finite(r["epoch_time_rel"]) else "—",
            f"{r['throughput_img_s']:.0f}" if finite(r["throughput_img_s"]) else "—",
            f"{r['params_total']:,.0f}" if finite(r["params_total"]) else "—",
            (f"{r['extra_params']:+,.0f} ({r['extra_params_pct']:+.3f}%)"
             if finite(r["extra_params"]) and finite(r["extra_params_pct"]) else "—"),
            f"{r['params_pooling']:,.0f}" if finite(r["params_pooling"]) else "—",
            int_text(r["pool_layers"]),
        ])
    devices = sorted({d for ds in f.get("devices", []) for d in ds}) if len(f) else []
    notes = ["Epoch time: each run's median per-epoch training time from metrics.csv (first "
             "epoch left out when there are more; results.json's mean otherwise), then mean ± "
             f"sample std over seeds; × {baseline}: ratio of the means within the same "
             "data/model. img/s: results.json's training throughput (training images over the "
             "mean epoch time, first epoch included). One run per seed (the latest "
             "finished)."]
    if len(devices) > 1:
        notes.append("Warning: these timings come from different devices: " + "; ".join(devices))
    return Table(
        name="overhead", title="Overhead",
        caption=("Measured training cost and parameters of every method, relative to the "
                 f"{baseline} baseline of the same data and model; measured on "
                 f"{', '.join(devices) if devices else 'unknown device'}."),
        columns=columns, rows=rows, data=f, notes=notes)
