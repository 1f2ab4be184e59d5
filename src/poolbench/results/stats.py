"""Statistics for comparing a pooling method with the baseline: how much is noise?

Two questions, two tests, both against the ``max`` baseline of the same experiment, data
and model, on the same runs (:func:`pair_with_baseline`: one run per seed, paired by seed):

- Seed level (training noise, conditional on this test set): a paired t-test on per-seed
  test accuracies, method vs baseline, paired by seed (same split, data order and
  augmentation stream). :func:`paired_test`. To it, test images that happen to favour one
  method are a real difference.
- Image level (does the difference generalise over the image population?): the unit is the
  test image; each image's correctness difference is averaged over the seeds and an exact
  sign-flip (paired permutation) test asks whether images favour one method more than
  chance. :func:`image_test`. The seeds' trained models are taken as given: training noise
  is the first test's question.

McNemar's test pooled over seeds (summing every seed's discordant counts) is not used: the
same images appear in every seed, so an image that favours one method was counted once per
seed, and the test rejected a true null far more often than its alpha (:mod:`.simulate`).
McNemar per seed (:func:`mcnemar`) is valid and kept as a diagnostic.

p-values are Holm-adjusted over the methods compared within each experiment/data/model
(:func:`holm`), and a difference is marked as distinguishable when the adjusted p < alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from .collect import load_predictions
from .labels import order_data, order_methods, order_models
from .selection import accuracy_column, finished_main, one_run_per_seed

# McNemar switches from the exact binomial test to chi-square at this many discordant pairs.
EXACT_BELOW = 25
# Per-seed differences of accuracies closer than this are equal. Accuracies move in steps of
# one test image (1e-5 or more up to 100,000 images), but they are float32 metrics (0.05 is
# stored as 0.05000000074505806) and their differences differ in the last bits.
SAME_DIFFERENCE = 1e-6


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
    if np.ptp(d) <= SAME_DIFFERENCE:                       # no spread: not testable
        t = np.nan if abs(mean) <= SAME_DIFFERENCE else np.copysign(np.inf, mean)
        return PairedResult(n, mean, 0.0, t, np.nan)
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


PredLoader = Callable[[str | None, str], "tuple[np.ndarray, np.ndarray] | None"]


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


# ---- which runs: one per seed, paired with the baseline -----------------------------------------

CELL = ["experiment", "data", "model"]


@dataclass
class Pairing:
    """The runs behind Table 1, its tests and Figure 2, and the finished runs left out.

    ``used``: the baseline's runs, one per seed (the latest finished, see
    :func:`~poolbench.results.collect.one_run_per_seed`); every other method's runs of the
    seeds the baseline has, each with its partner's ``base_run_id``, ``base_acc`` and
    ``base_predictions`` (in a cell without a baseline run: every seed, no partner).
    ``dropped``: experiment, data, model, method, seed, run_id and why it was left out.
    """

    used: pd.DataFrame
    dropped: pd.DataFrame


def pair_with_baseline(runs: pd.DataFrame, which: str = "final",
                       baseline: str = "max") -> Pairing:
    """Finished main runs with a test accuracy, one per seed, paired by seed with ``baseline``."""
    col = accuracy_column(which)
    kept, extra = one_run_per_seed(finished_main(runs))
    kept = kept[kept[col].notna()]          # the table notes name these (_excluded_notes)
    partner = kept[kept["method"] == baseline][[*CELL, "seed", "run_id", col, "predictions"]]
    partner = partner.rename(columns={"run_id": "base_run_id", col: "base_acc",
                                      "predictions": "base_predictions"})
    used = kept.merge(partner, on=[*CELL, "seed"], how="left")
    is_base = used["method"] == baseline
    used.loc[is_base, ["base_run_id", "base_acc", "base_predictions"]] = np.nan
    in_base_cell = pd.MultiIndex.from_frame(used[CELL]).isin(
        pd.MultiIndex.from_frame(partner[CELL]))
    unpaired = ~is_base & in_base_cell & used["base_run_id"].isna()
    later = extra.merge(kept[[*CELL, "method", "seed", "run_id"]], on=[*CELL, "method", "seed"],
                        suffixes=("", "_used"))
    dropped = pd.concat([
        later.assign(reason=[f"finished earlier than {r}, the run used for this seed"
                             for r in later["run_id_used"]]),
        used[unpaired].assign(reason=f"no {baseline} run of this seed to pair with"),
    ], ignore_index=True)
    cols = [*CELL, "method", "seed", "run_id", "reason"]
    return Pairing(used[~unpaired].reset_index(drop=True),
                   dropped.reindex(columns=cols).sort_values(cols[:5]).reset_index(drop=True))


def summarize(rows: pd.DataFrame, col: str) -> dict:
    """mean, std, n (:func:`describe`), seeds and delta (mean of ``col - base_acc``: the
    paired difference; NaN without partners) of one method's rows of :class:`Pairing`."""
    out = describe(rows[col])
    diff = (rows[col] - rows["base_acc"]).dropna()
    out["delta"] = float(diff.mean()) if len(diff) else np.nan
    out["seeds"] = sorted(int(s) for s in rows["seed"].dropna())
    return out


# ---- every method vs the baseline -------------------------------------------------------------

COLUMNS = [
    "experiment", "data", "model", "method", "n", "seeds", "mean", "std", "n_base", "base_mean",
    "delta", "paired_t", "p_paired", "p_paired_holm", "sig_seeds", "image_seeds",
    "image_n", "image_differ", "image_delta", "image_stat", "p_image", "p_image_holm",
    "sig_image", "p_mcnemar_per_seed", "image_note",
]


def compare_to_baseline(runs: pd.DataFrame, which: str = "final", baseline: str = "max",
                        alpha: float = 0.05,
                        load: PredLoader = load_predictions) -> pd.DataFrame:
    """Every main method vs ``baseline`` per experiment/data/model: one row per method.

    The runs are those of :func:`pair_with_baseline` (one per seed, the latest finished; a
    method's seeds are those the baseline has too), so n, mean, std and delta come from the
    runs the tests use. K x T ablation variants are left out (not in Table 1, nor in the
    Holm family).

    Columns (:data:`COLUMNS`): n, seeds, mean, std of the method's runs; n_base, base_mean of
    the baseline's; delta = mean over the paired seeds of (method - baseline); the seed-level
    paired t-test (paired_t, p_paired, p_paired_holm, sig_seeds); the image-level test
    (:func:`image_test` over the seeds with saved predictions: image_seeds, image_n,
    image_differ, image_delta, image_stat, p_image, p_image_holm, sig_image);
    p_mcnemar_per_seed ({seed: McNemar p}, a diagnostic: valid per seed, not a mark) and
    image_note (seeds left out of the image-level test, and why). Accuracies are fractions,
    differences in the same unit; sig_* use the Holm-adjusted p < ``alpha``.
    """
    col = accuracy_column(which)
    used = pair_with_baseline(runs, which, baseline).used
    rows = []
    cells = used.groupby(CELL, sort=True)
    data_rank = {d: i for i, d in enumerate(order_data(used["data"].unique()))}
    model_rank = {m: i for i, m in enumerate(order_models(used["model"].unique()))}
    keys = sorted(cells.groups, key=lambda k: (k[0], data_rank[k[1]], model_rank[k[2]]))
    for exp, data, model in keys:
        cell = cells.get_group((exp, data, model))
        bd = describe(cell.loc[cell["method"] == baseline, col])
        for method in order_methods(cell["method"].unique()):
            mr = cell[cell["method"] == method].sort_values("seed")
            s = summarize(mr, col)
            row = {"experiment": exp, "data": data, "model": model, "method": method,
                   **{k: s[k] for k in ("n", "seeds", "mean", "std", "delta")},
                   "n_base": bd["n"], "base_mean": bd["mean"]}
            if method == baseline:
                row["delta"] = 0.0
            elif bd["n"]:
                pr = paired_test(mr[col].to_numpy(float), mr["base_acc"].to_numpy(float))
                row.update({"paired_t": pr.t, "p_paired": pr.p})
                row.update(_image_level(mr, which, load))
            rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if out.empty:
        return out
    for c in ("p_paired", "p_image"):
        out[c + "_holm"] = np.nan
        for _, idx in out.groupby(CELL).groups.items():
            out.loc[idx, c + "_holm"] = holm(out.loc[idx, c])
    not_base = out["method"] != baseline
    out["sig_seeds"] = (out["p_paired_holm"] < alpha).where(not_base, False).astype(bool)
    out["sig_image"] = (out["p_image_holm"] < alpha).where(not_base, False).astype(bool)
    return out


def _image_level(rows: pd.DataFrame, which: str, load: PredLoader) -> dict:
    """The image-level test of one method's paired rows (see :func:`compare_to_baseline`)."""
    correct_a, correct_b, per_seed, notes, labels = [], [], {}, [], None
    for _, r in rows.iterrows():
        s = int(r["seed"])
        pa, pb = load(r["predictions"], which), load(r["base_predictions"], which)
        if pa is None or pb is None:
            notes.append(f"seed {s}: no {which} test predictions")
            continue
        (ya, la), (yb, lb) = pa, pb
        if not (_same_labels(la, lb) and (labels is None or _same_labels(la, labels))):
            notes.append(f"seed {s}: test labels differ between runs")
            continue
        labels = la
        correct_a.append(ya == la)
        correct_b.append(yb == lb)
        per_seed[s] = mcnemar(correct_a[-1], correct_b[-1]).p
    out = {"image_seeds": len(per_seed), "p_mcnemar_per_seed": per_seed,
           "image_note": "; ".join(notes)}
    if per_seed:
        res = image_test(np.stack(correct_a), np.stack(correct_b))
        out.update({"image_n": res.images, "image_differ": res.differ,
                    "image_delta": res.mean_diff, "image_stat": res.statistic,
                    "p_image": res.p})
    return out


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))
