"""The paper's tables, computed from collected runs, written as Markdown, LaTeX and CSV.

Every builder takes the ``runs`` frame of a :class:`~poolbench.results.runs.Collection`
(one experiment) and returns :class:`Table` objects: display cells for Markdown/LaTeX and a
numeric long-form frame for CSV (accuracies in percent, differences in percentage points).

- :func:`table1` (per model): method x dataset, top-1 mean ± sample std, n, Δ vs ``max``
  marked where the seed-level paired t-test (*) or the image-level sign-flip test (†)
  finds it; all from the same runs (:func:`~poolbench.results.stats.pair_with_baseline`).
- :func:`significance_table`: the tests behind those marks, in full.
- :func:`architecture_table`: each method on every model, per dataset.
- :func:`kt_table`: the K x T ablation (top-k x threshold) of T-Max-Avg-like methods.
- :func:`overhead_table`: measured epoch time relative to ``max`` and extra parameters.
- :func:`data_report_markdown`: what is missing, failed, diverged or mixed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._rundir import DONE
from .checks import DataReport
from .labels import order_data, order_methods, order_models
from .selection import accuracy_column, one_run_per_seed, usable_main
from .stats import describe, pair_with_baseline, summarize

WHICH_TEXT = {
    "final": "of the final weights (after the last epoch)",
    "best_val": ("of the checkpoint with the best validation accuracy (selected on the "
                 "held-out validation split; the test set is never used for selection)"),
}
SEED_MARK, IMAGE_MARK = "*", "†"

# ---- the Table object ---------------------------------------------------------------------

@dataclass
class Table:
    """A table ready to write: display cells plus the numbers behind them.

    ``columns``: (group, label) per column (group ``""`` for none); ``rows``: cell text;
    ``bold``: which cells to emphasise (best per column); ``data``: numeric long form (CSV).
    """

    name: str
    title: str
    caption: str
    columns: list[tuple[str, str]]
    rows: list[list[str]]
    data: pd.DataFrame
    bold: list[list[bool]] | None = None
    notes: list[str] = field(default_factory=list)

    def _bold(self, i, j) -> bool:
        return bool(self.bold and self.bold[i][j])

    def markdown(self) -> str:
        head = [f"{g}: {c}" if g else c for g, c in self.columns]
        n_text = _n_text_cols(self.columns)
        lines = [f"**{self.title}.** {self.caption}", "",
                 "| " + " | ".join(_md(h) for h in head) + " |",
                 "|" + "|".join(":---" if j < n_text else "---:" for j in range(len(head))) + "|"]
        for i, row in enumerate(self.rows):
            cells = [f"**{_md(c)}**" if self._bold(i, j) and c else _md(c)
                     for j, c in enumerate(row)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        ncol = len(self.columns)
        spec = "l" * _n_text_cols(self.columns) + "r" * (ncol - _n_text_cols(self.columns))
        out = [r"\begin{table}[t]", r"\centering", r"\small",
               rf"\caption{{{_tex(self.title)}. {_tex(self.caption)}}}",
               rf"\label{{tab:{self.name.replace('_', '-')}}}",
               rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
        groups = [g for g, _ in self.columns]
        if any(groups):
            spans, rules, j = [], [], 0
            while j < ncol:
                k = j
                while k + 1 < ncol and groups[k + 1] == groups[j]:
                    k += 1
                n = k - j + 1
                if groups[j]:
                    spans.append(rf"\multicolumn{{{n}}}{{c}}{{{_tex(groups[j])}}}")
                    rules.append(rf"\cmidrule(lr){{{j + 1}-{k + 1}}}")
                else:
                    spans += [""] * n
                j = k + 1
            out.append(" & ".join(spans) + r" \\")
            out.append(" ".join(rules))
        out.append(" & ".join(_tex(c) for _, c in self.columns) + r" \\")
        out.append(r"\midrule")
        for i, row in enumerate(self.rows):
            cells = [rf"\textbf{{{_tex(c)}}}" if self._bold(i, j) and c else _tex(c)
                     for j, c in enumerate(row)]
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            out.append(r"\par\smallskip{\footnotesize " +
                       r" \\ ".join(_tex(n) for n in self.notes) + "}")
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        df = self.data.copy()
        for c in df.columns:
            if df[c].map(lambda v: isinstance(v, (dict, list))).any():
                df[c] = df[c].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
        return df.to_csv(index=False)

    def write(self, out_dir: str | Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for ext, text in (("md", self.markdown()), ("tex", self.latex()), ("csv", self.csv())):
            p = out_dir / f"{self.name}.{ext}"
            p.write_text(text)
            paths.append(p)
        return paths


def _n_text_cols(columns) -> int:
    n = 0
    for g, c in columns:
        if g or c.lower() not in ("method", "data", "model", "dataset", "k \\ t", "seeds"):
            break
        n += 1
    return max(1, n)


def _md(s: str) -> str:
    return str(s).replace("|", "\\|")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
        "±": r"$\pm$", "Δ": r"$\Delta$", "†": r"\textsuperscript{\dag}", "×": r"$\times$",
        "−": "-", "—": "--", "–": "--", "≥": r"$\geq$", "≠": r"$\neq$", "<": r"$<$",
        ">": r"$>$"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


# ---- formatting ------------------------------------------------------------------------------

def pct(x, digits: int = 2) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def mean_std(mean, std, digits: int = 2, scale: float = 100.0) -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    s = f"{scale * mean:.{digits}f}"
    if std is not None and np.isfinite(std):
        s += f" ± {scale * std:.{digits}f}"
    return s


def signed(x, digits: int = 2, scale: float = 100.0) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    v = scale * x
    return f"{v:+.{digits}f}".replace("+-", "-") if round(v, digits) != 0 else f"{0:.{digits}f}"


def pval(p) -> str:
    if p is None or not isinstance(p, (int, float, np.floating)) or not np.isfinite(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _best_mask(values: list[float]) -> list[bool]:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return [False] * len(values)
    top = max(finite)
    return [v is not None and np.isfinite(v) and math.isclose(v, top, rel_tol=0, abs_tol=1e-12)
            for v in values]


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
        mask = _best_mask([summary[(m, d)]["mean"] for m in methods])
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
            _int(r.get("n")), _num(r.get("paired_t")), pval(r.get("p_paired")),
            pval(r.get("p_paired_holm")), _int(r.get("image_seeds")), _int(r.get("image_n")),
            _int(r.get("image_differ")), signed(r.get("image_delta")), pval(r.get("p_image")),
            pval(r.get("p_image_holm")),
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


def _finite(x) -> bool:
    try:
        return x is not None and np.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _int(x) -> str:
    return str(int(x)) if _finite(x) else "—"


def _num(x, digits=2) -> str:
    if not _finite(x):
        return "—" if not (x is not None and isinstance(x, float) and np.isinf(x)) else \
            ("∞" if x > 0 else "-∞")
    return f"{float(x):.{digits}f}"


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
            for i, b in enumerate(_best_mask([per[(meth, d, m)]["mean"] for meth in methods])):
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
    flat = _best_mask([v for vr in vals for v in vr])
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
            f"{r['epoch_time_rel']:.2f}" if _finite(r["epoch_time_rel"]) else "—",
            f"{r['throughput_img_s']:.0f}" if _finite(r["throughput_img_s"]) else "—",
            f"{r['params_total']:,.0f}" if _finite(r["params_total"]) else "—",
            (f"{r['extra_params']:+,.0f} ({r['extra_params_pct']:+.3f}%)"
             if _finite(r["extra_params"]) and _finite(r["extra_params_pct"]) else "—"),
            f"{r['params_pooling']:,.0f}" if _finite(r["params_pooling"]) else "—",
            _int(r["pool_layers"]),
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


# ---- data report ------------------------------------------------------------------------------

def data_report_markdown(rep: DataReport, n_runs: int, source: str = "") -> str:
    """What is missing or suspicious, as Markdown (empty sections say 'none')."""
    seeds = ", ".join(str(s) for s in rep.expected_seeds) or "none"
    out = ["# Data report", "",
           f"{n_runs} runs collected{f' from {source}' if source else ''}; expected seeds: "
           f"{seeds}."]
    out += _report_section(
        "Cells with fewer finished runs than expected seeds", rep.short_cells,
        "| experiment | data | model | method | finished | expected | seeds missing "
        "| of which never started |\n|---|---|---|---|---:|---:|---|---|",
        lambda r: f"| {r['experiment']} | {r['data']} | {r['model']} | {_md(r['method'])} "
                  f"| {r['n']} | {r['expected']} | {_seeds(r['seeds_missing'])} "
                  f"| {_seeds(r['seeds_without_run_dir'])} |")
    out += _report_section(
        "Failed, diverged, interrupted or incomplete runs", rep.bad_runs,
        "| status | experiment | data | model | method | seed | error | run |\n"
        "|---|---|---|---|---|---:|---|---|",
        lambda r: f"| {r['status']} | {r['experiment']} | {r['data']} | {r['model']} | "
                  f"{_md(r['method'])} | {r['seed']} | {_md(r['error'] or '')} | "
                  f"{_md(r['run_id'])} |")
    out += _report_section(
        "Cells mixing runs of different configs", rep.mixed,
        "| experiment | data | model | method | key | values |\n|---|---|---|---|---|---|",
        lambda r: f"| {r['experiment']} | {r['data']} | {r['model']} | {_md(r['method'])} "
                  f"| `{r['key']}` | "
                  f"{_md(', '.join(json.dumps(v, default=str) for v in r['values']))} |")
    out += _report_section(
        "Same cell and seed finished more than once", rep.duplicates, None,
        lambda r: f"- {r['experiment']}/{r['data']}/{r['model']}/{r['method']} seed "
                  f"{r['seed']}: {r['n']} runs ({', '.join(r['run_ids'])}, in finishing "
                  "order); every table, test and figure uses the last listed")
    out += _report_section(
        "K x T ablation variants (kept out of the main tables)", rep.variants, None,
        lambda r: f"- {r['experiment']}/{r['data']}/{r['model']}/{r['pool']} "
                  f"({r['variant']}): {r['runs']} run(s)")
    return "\n".join(out) + "\n"


def _report_section(title: str, frame: pd.DataFrame, head: str | None, line) -> list[str]:
    """A data report section: its title, then 'none' or ``head`` (a Markdown table's header,
    None for a list) and ``line(row)`` for every row of ``frame``."""
    out = ["", f"## {title}", ""]
    if frame.empty:
        return out + ["none"]
    if head is not None:
        out += head.split("\n")
    return out + [line(r) for _, r in frame.iterrows()]


def _seeds(seeds) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "—"


# ---- runs and per-epoch tables (CSV only) ----------------------------------------------------

def runs_csv(runs: pd.DataFrame) -> str:
    df = runs.copy()
    for c in ("hparams", "config"):
        df[c] = df[c].map(lambda v: json.dumps(v, sort_keys=True, default=str)
                          if isinstance(v, dict) else "")
    return df.to_csv(index=False)


def learned_params_frame(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Long form of every ``pool/<layer>/<key>`` value: one row per run, epoch, layer, key."""
    cols = [c for c in epochs.columns if c.startswith("pool/")]
    if not cols or epochs.empty:
        return pd.DataFrame(columns=["run_id", "experiment", "data", "model", "method", "seed",
                                     "epoch", "layer", "key", "value"])
    long = epochs[["run_id", "epoch", *cols]].melt(id_vars=["run_id", "epoch"],
                                                   var_name="column", value_name="value")
    long = long.dropna(subset=["value"])
    parts = long["column"].str[len("pool/"):].str.rpartition("/")
    long = long.assign(layer=parts[0], key=parts[2]).drop(columns="column")
    meta = runs[["run_id", "experiment", "data", "model", "method", "seed"]]
    out = long.merge(meta, on="run_id", how="inner")
    return out[["run_id", "experiment", "data", "model", "method", "seed", "epoch", "layer",
                "key", "value"]].sort_values(["data", "model", "method", "seed", "layer", "key",
                                              "epoch"]).reset_index(drop=True)
