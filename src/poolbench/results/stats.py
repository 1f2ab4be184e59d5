"""Statistics for comparing a pooling method with the baseline: how much is seed noise?

Two questions, two tests, both against the ``max`` baseline of the same experiment, data,
model and seed:

- Across seeds (training noise): a paired t-test on per-seed test accuracies, method vs
  baseline, paired by seed (same split, data order and augmentation stream).
  :func:`paired_test`.
- On the test set (sampling noise of the test images): McNemar's test on the two models'
  per-image correctness, exact binomial when there are few discordant images, chi-square
  with continuity correction otherwise (Dietterich 1998; used by the SoftPool paper).
  :func:`mcnemar`; per seed and pooled over seeds in :func:`compare_to_baseline`.

p-values are Holm-adjusted over the methods compared within each experiment/data/model
(:func:`holm`), and a difference is marked as distinguishable when the adjusted p < alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from .collect import (
    accuracy_column, load_predictions, order_data, order_methods, order_models, usable_main,
)

# McNemar switches from the exact binomial test to chi-square at this many discordant pairs.
EXACT_BELOW = 25


def describe(values) -> dict:
    """mean, sample standard deviation (ddof=1; NaN for fewer than 2) and n of ``values``."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=float)
    n = len(v)
    return {"mean": float(v.mean()) if n else np.nan,
            "std": float(v.std(ddof=1)) if n > 1 else np.nan, "n": n}


@dataclass
class PairedResult:
    n: int                 # number of seed pairs
    mean_diff: float       # mean of (a - b) over pairs
    std_diff: float        # sample std of the differences
    t: float
    p: float


def paired_test(a, b) -> PairedResult:
    """Paired two-sided t-test of ``a`` vs ``b`` (equal-length, matched by seed).

    Fewer than two pairs, or differences without spread (all equal, which happens with a
    few seeds and a small test set whose accuracies move in whole images): p is NaN, i.e.
    not testable, never "significant"; t is then infinite (or NaN when all are zero).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_test needs matched samples, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = len(d)
    if n == 0:
        return PairedResult(0, np.nan, np.nan, np.nan, np.nan)
    mean, sd = float(d.mean()), float(d.std(ddof=1)) if n > 1 else np.nan
    if n < 2:
        return PairedResult(n, mean, sd, np.nan, np.nan)
    if sd == 0:
        return PairedResult(n, mean, sd, np.nan if mean == 0 else np.copysign(np.inf, mean),
                            np.nan)
    res = sps.ttest_rel(a[ok], b[ok])
    return PairedResult(n, mean, sd, float(res.statistic), float(res.pvalue))


@dataclass
class McNemarResult:
    n: int          # images compared
    b: int          # a right, b wrong
    c: int          # a wrong, b right
    statistic: float
    p: float
    method: str     # "exact" (binomial) or "chi2" (with continuity correction) or ""


def mcnemar(correct_a, correct_b, exact_below: int = EXACT_BELOW) -> McNemarResult:
    """McNemar's test on paired per-item correctness (boolean arrays of equal length).

    With ``b`` = #(a right, b wrong) and ``c`` = #(a wrong, b right): exact two-sided
    binomial test of ``b`` out of ``b + c`` at 1/2 when ``b + c < exact_below``, else
    chi-square with continuity correction ``(|b - c| - 1)^2 / (b + c)`` on 1 dof.
    No discordant pairs: p = 1.
    """
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"mcnemar needs paired items, got {a.shape} and {b_.shape}")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    return mcnemar_counts(b, c, n=len(a), exact_below=exact_below)


def mcnemar_counts(b: int, c: int, n: int | None = None,
                   exact_below: int = EXACT_BELOW) -> McNemarResult:
    """McNemar's test from the discordant counts ``b`` and ``c`` (see :func:`mcnemar`)."""
    m = b + c
    n = m if n is None else n
    if m == 0:
        return McNemarResult(n, b, c, 0.0, 1.0, "exact")
    if m < exact_below:
        p = sps.binomtest(b, m, 0.5, alternative="two-sided").pvalue
        return McNemarResult(n, b, c, float(min(b, c)), float(min(1.0, p)), "exact")
    stat = (abs(b - c) - 1) ** 2 / m
    return McNemarResult(n, b, c, float(stat), float(sps.chi2.sf(stat, 1)), "chi2")


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs are left out of the family and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ---- the image-level test ----------------------------------------------------------------------

def signflip_distribution(k) -> tuple[np.ndarray, np.ndarray]:
    """Exact null distribution of ``sum_i s_i |k_i|`` over independent fair signs ``s_i``.

    ``k``: integers (per image: seeds the method got right minus seeds the baseline got
    right). Images with the same ``|k_i| = m`` contribute ``m (2 B_m - n_m)``, ``B_m ~
    Binomial(n_m, 1/2)``; the sum is the convolution of these few scaled binomials, exact
    (no Monte Carlo) and with relative precision in the tails (every term is non-negative).
    Returns (values, probabilities), values ``-M, -M + 2, ..., M`` with ``M = sum |k_i|``.
    """
    absk = np.abs(np.asarray(k, dtype=np.int64).ravel())
    ms, counts = np.unique(absk[absk > 0], return_counts=True)
    pmf = np.ones(1)                       # of Y = sum_m m B_m, on 0 .. M
    for m, n_m in zip(ms.tolist(), counts.tolist()):
        kernel = np.zeros(m * n_m + 1)
        kernel[::m] = sps.binom.pmf(np.arange(n_m + 1), n_m, 0.5)
        pmf = np.convolve(pmf, kernel)
    total = int(absk.sum())
    return 2 * np.arange(total + 1) - total, pmf


def signflip_test(k) -> float:
    """Two-sided exact sign-flip (paired permutation) p-value of ``sum(k)``:
    P(|sum_i s_i |k_i|| >= |sum_i k_i|) under :func:`signflip_distribution`. 1 without a
    non-zero ``k``."""
    k = np.asarray(k, dtype=np.int64).ravel()
    values, pmf = signflip_distribution(k)
    return float(min(1.0, pmf[np.abs(values) >= abs(int(k.sum()))].sum()))


@dataclass
class ImageTestResult:
    seeds: int          # seeds averaged over
    images: int         # test images (the unit of the test)
    differ: int         # images whose correctness differs in sum over the seeds (k != 0)
    mean_diff: float    # mean over images of (correct_a - correct_b) averaged over seeds
    statistic: int      # sum over images and seeds of (correct_a - correct_b)
    p: float


def image_test(correct_a, correct_b) -> ImageTestResult:
    """Paired test of two methods whose unit is the test image, using every seed.

    ``correct_a``, ``correct_b``: booleans, shape (seeds, images), the same images in every
    row. Per image ``k_i`` = seeds in which ``a`` is right minus seeds in which ``b`` is
    (``d_i = k_i / seeds``, its correctness difference averaged over the seeds); the exact
    sign-flip test of ``sum_i k_i`` (:func:`signflip_test`). Exact when, over the image
    population, an image is as likely to favour either method by a given amount (the null);
    the seeds' models are taken as given, so training noise between seeds is not in it
    (that is :func:`paired_test`'s question).
    """
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=bool)), \
        np.atleast_2d(np.asarray(correct_b, dtype=bool))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"image_test needs (seeds, images) arrays of one shape, got "
                         f"{np.shape(correct_a)} and {np.shape(correct_b)}")
    k = a.sum(axis=0, dtype=np.int64) - b.sum(axis=0, dtype=np.int64)
    seeds, images = a.shape
    return ImageTestResult(seeds, images, int(np.count_nonzero(k)),
                           float(k.mean() / seeds) if images else np.nan, int(k.sum()),
                           signflip_test(k))


PredLoader = Callable[[str | None, str], "tuple[np.ndarray, np.ndarray] | None"]


def compare_to_baseline(runs: pd.DataFrame, which: str = "final", baseline: str = "max",
                        alpha: float = 0.05,
                        load: PredLoader = load_predictions) -> pd.DataFrame:
    """Every main method vs ``baseline`` per experiment/data/model: one row per method.

    K x T ablation variants are left out (they are not in Table 1, nor in the Holm family).

    Columns: experiment, data, model, method, n, n_base, mean, std, base_mean, delta
    (difference of means), paired_n, paired_mean_diff, paired_t, p_paired, p_paired_holm,
    sig_seeds (p_paired_holm < alpha), mcnemar_seeds (seeds with predictions for both),
    mcnemar_b, mcnemar_c, mcnemar_stat, mcnemar_method, p_mcnemar (pooled over seeds: the
    discordant counts summed), p_mcnemar_holm, sig_mcnemar, p_mcnemar_per_seed
    ({seed: p}) and mcnemar_note. Accuracies are fractions; deltas in the same unit.
    """
    col = accuracy_column(which)
    runs = usable_main(runs)
    runs = runs[runs[col].notna()]
    rows = []
    cells = runs.groupby(["experiment", "data", "model"], sort=True)
    data_rank = {d: i for i, d in enumerate(order_data(runs["data"].unique()))}
    model_rank = {m: i for i, m in enumerate(order_models(runs["model"].unique()))}
    keys = sorted(cells.groups, key=lambda k: (k[0], data_rank[k[1]], model_rank[k[2]]))
    for exp, data, model in keys:
        cell = cells.get_group((exp, data, model))
        base = cell[cell["method"] == baseline]
        base_by_seed = base.drop_duplicates("seed", keep="last").set_index("seed")
        for method in order_methods(cell["method"].unique()):
            mr = cell[cell["method"] == method]
            d, bd = describe(mr[col]), describe(base[col])
            row = {"experiment": exp, "data": data, "model": model, "method": method,
                   "n": d["n"], "n_base": bd["n"], "mean": d["mean"], "std": d["std"],
                   "base_mean": bd["mean"], "delta": d["mean"] - bd["mean"]}
            if method == baseline:
                rows.append(row)
                continue
            mr_by_seed = mr.drop_duplicates("seed", keep="last").set_index("seed")
            common = sorted(set(mr_by_seed.index) & set(base_by_seed.index))
            pr = paired_test(mr_by_seed.loc[common, col].to_numpy(float),
                             base_by_seed.loc[common, col].to_numpy(float))
            row.update({"paired_n": pr.n, "paired_mean_diff": pr.mean_diff, "paired_t": pr.t,
                        "p_paired": pr.p})
            row.update(_mcnemar_over_seeds(mr_by_seed, base_by_seed, common, which, load))
            rows.append(row)
    cols = ["experiment", "data", "model", "method", "n", "n_base", "mean", "std",
            "base_mean", "delta", "paired_n", "paired_mean_diff", "paired_t", "p_paired",
            "p_paired_holm", "sig_seeds", "mcnemar_seeds", "mcnemar_b", "mcnemar_c",
            "mcnemar_stat", "mcnemar_method", "p_mcnemar", "p_mcnemar_holm", "sig_mcnemar",
            "p_mcnemar_per_seed", "mcnemar_note"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    if out.empty:
        return out
    for c in ("p_paired_holm", "p_mcnemar_holm"):
        out[c] = np.nan
    for _, idx in out.groupby(["experiment", "data", "model"]).groups.items():
        out.loc[idx, "p_paired_holm"] = holm(out.loc[idx, "p_paired"])
        out.loc[idx, "p_mcnemar_holm"] = holm(out.loc[idx, "p_mcnemar"])
    not_base = out["method"] != baseline
    out["sig_seeds"] = (out["p_paired_holm"] < alpha).where(not_base, False).astype(bool)
    out["sig_mcnemar"] = (out["p_mcnemar_holm"] < alpha).where(not_base, False).astype(bool)
    return out


def _mcnemar_over_seeds(mr: pd.DataFrame, base: pd.DataFrame, seeds, which: str,
                        load: PredLoader) -> dict:
    per_seed, b_sum, c_sum, n_sum, notes = {}, 0, 0, 0, []
    for s in seeds:
        pa = load(mr.at[s, "predictions"], which)
        pb = load(base.at[s, "predictions"], which)
        if pa is None or pb is None:
            notes.append(f"seed {s}: no {which} test predictions")
            continue
        (ya, la), (yb, lb) = pa, pb
        if la.shape != lb.shape or not np.array_equal(la, lb):
            notes.append(f"seed {s}: test labels differ between the two runs")
            continue
        res = mcnemar(ya == la, yb == lb)
        per_seed[int(s)] = res.p
        b_sum, c_sum, n_sum = b_sum + res.b, c_sum + res.c, n_sum + res.n
    if not per_seed:
        return {"mcnemar_seeds": 0, "p_mcnemar_per_seed": {}, "p_mcnemar": np.nan,
                "mcnemar_note": "; ".join(notes)}
    pooled = mcnemar_counts(b_sum, c_sum, n_sum)
    return {"mcnemar_seeds": len(per_seed), "mcnemar_b": pooled.b, "mcnemar_c": pooled.c,
            "mcnemar_stat": pooled.statistic, "mcnemar_method": pooled.method,
            "p_mcnemar": pooled.p, "p_mcnemar_per_seed": per_seed,
            "mcnemar_note": "; ".join(notes)}
