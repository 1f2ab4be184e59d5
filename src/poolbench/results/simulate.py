"""Simulated test sets: how often does each test of method vs baseline reject?

    python -m poolbench.results.simulate                    # the table in docs/results.md
    python -m poolbench.results.simulate --trials 500 --images 2000 --seeds 5

The same test images appear in every seed, and real images differ: some are easy for every
model, some hard, and some favour one method's inductive bias. :func:`simulate_correctness`
draws per-image correctness with that structure:

- each image has a latent difficulty ``z_i ~ N(mu, difficulty_sd)`` shared by both methods
  and a latent preference ``u_i ~ N(shift, preference_sd)`` for one method or the other;
- in every seed, method ``a`` is right with probability ``sigmoid(z_i + u_i)`` and the
  baseline ``b`` with ``sigmoid(z_i - u_i)``, independently across seeds;
- optional training noise: a per-seed, per-method shift ``N(0, seed_sd)`` of every image's
  logit (a seed whose model came out better or worse overall).

With ``shift = 0`` the two methods are equally good over the image population (the
preference is symmetric), though different image by image: a test at level alpha should
reject a fraction alpha of the trials. :func:`rejection_rates` runs every test on the same
draws; :func:`pooled_mcnemar` is the test poolbench used before (the discordant counts of
all seeds summed into one McNemar test), kept here only to show why it was replaced.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.special import expit

from .stats import image_test, mcnemar, mcnemar_counts, paired_test


@dataclass(frozen=True)
class Scenario:
    """One simulated population of test images (see the module docstring)."""

    name: str
    preference_sd: float
    shift: float = 0.0          # mean preference for ``a``: > 0 is a real difference
    seed_sd: float = 0.0        # training noise: per-seed, per-method logit shift
    mu: float = 1.0             # mean difficulty logit (accuracy about 65 %)
    difficulty_sd: float = 2.0


def simulate_correctness(rng: np.random.Generator, sc: Scenario, trials: int, images: int,
                         seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """(correct_a, correct_b), booleans of shape (trials, seeds, images): a fresh image
    population per trial, the same images in every seed of a trial."""
    z = rng.normal(sc.mu, sc.difficulty_sd, (trials, 1, images))
    u = rng.normal(sc.shift, sc.preference_sd, (trials, 1, images))
    ea, eb = (rng.normal(0.0, sc.seed_sd, (trials, seeds, 1)) if sc.seed_sd else 0.0
              for _ in range(2))
    a = rng.random((trials, seeds, images)) < expit(z + u + ea)
    b = rng.random((trials, seeds, images)) < expit(z - u + eb)
    return a, b


def pooled_mcnemar(correct_a, correct_b) -> float:
    """The replaced test: McNemar on the discordant counts summed over seeds (its p)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return mcnemar_counts(int(np.sum(a & ~b)), int(np.sum(~a & b))).p


def image_ttest(correct_a, correct_b) -> float:
    """One-sample t-test over images of the correctness difference averaged over seeds."""
    d = np.mean(np.asarray(correct_a, float) - np.asarray(correct_b, float), axis=0)
    return float(sps.ttest_1samp(d, 0.0).pvalue) if d.std() > 0 else 1.0


def image_bootstrap(correct_a, correct_b, rng: np.random.Generator, draws: int = 1000) -> float:
    """Paired bootstrap over images of the mean difference (averaged over seeds): the
    two-sided p is twice the smaller share of resampled means on either side of 0."""
    d = np.mean(np.asarray(correct_a, float) - np.asarray(correct_b, float), axis=0)
    values, counts = np.unique(d, return_counts=True)       # d takes few values: k / seeds
    means = rng.multinomial(len(d), counts / len(d), size=draws) @ values / len(d)
    return float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))


def _nan_is_one(p: float) -> float:
    return 1.0 if np.isnan(p) else p


TESTS = {
    "t-test over seeds": lambda a, b, rng: _nan_is_one(paired_test(a.mean(1), b.mean(1)).p),
    "pooled McNemar (replaced)": lambda a, b, rng: pooled_mcnemar(a, b),
    "McNemar, one seed": lambda a, b, rng: mcnemar(a[0], b[0]).p,
    "sign-flip over images (used)": lambda a, b, rng: image_test(a, b).p,
    "t-test over images": lambda a, b, rng: image_ttest(a, b),
    "bootstrap over images": lambda a, b, rng: image_bootstrap(a, b, rng),
}


def rejection_rates(sc: Scenario, trials: int = 2000, images: int = 1000, seeds: int = 3,
                    alpha: float = 0.05, seed: int = 0, tests=None, chunk: int = 200) -> dict:
    """Share of ``trials`` in which each test's p < ``alpha`` (all tests on the same draws),
    plus ``acc_diff``: the mean accuracy difference a - b over the trials."""
    tests = TESTS if tests is None else tests
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(tests, 0)
    diff = 0.0
    for start in range(0, trials, chunk):
        a, b = simulate_correctness(rng, sc, min(chunk, trials - start), images, seeds)
        diff += float(np.sum(a.mean(axis=(1, 2)) - b.mean(axis=(1, 2))))
        for ai, bi in zip(a, b):
            for name, test in tests.items():
                hits[name] += test(ai, bi, rng) < alpha
    return {**{name: h / trials for name, h in hits.items()}, "acc_diff": diff / trials}


SCENARIOS = (
    Scenario("null, images differ only in difficulty", preference_sd=0.0),
    Scenario("null, mild preferences", preference_sd=0.5),
    Scenario("null, preferences", preference_sd=1.0),
    Scenario("null, strong preferences", preference_sd=2.0),
    Scenario("null, training noise only (seed_sd 0.1)", preference_sd=0.0, seed_sd=0.1),
    Scenario("real difference (shift 0.05)", preference_sd=1.0, shift=0.05),
    Scenario("real difference (shift 0.1)", preference_sd=1.0, shift=0.1),
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m poolbench.results.simulate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    args = ap.parse_args(argv)
    sd = np.sqrt(args.alpha * (1 - args.alpha) / args.trials)
    print(f"Rejection rate at alpha {args.alpha:g} of each test, {args.trials} trials of "
          f"{args.seeds} seeds x {args.images} images (binomial sd of a rate at alpha: "
          f"{100 * sd:.2f} points); seed {args.seed}.\n")
    print("| scenario | Δ acc (pp) | " + " | ".join(TESTS) + " |")
    print("|---|---:|" + "---:|" * len(TESTS))
    start = time.perf_counter()
    for sc in SCENARIOS:
        r = rejection_rates(sc, args.trials, args.images, args.seeds, args.alpha, args.seed)
        print(f"| {sc.name} | {100 * r['acc_diff']:+.2f} | "
              + " | ".join(f"{100 * r[t]:.1f} %" for t in TESTS) + " |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
