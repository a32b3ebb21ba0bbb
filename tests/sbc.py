"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018) helpers.

If ``theta ~ prior``, ``y ~ p(y | theta)`` and ``theta_1..theta_L`` are independent draws from the
exact posterior ``p(theta | y)``, the rank ``#{l : theta_l < theta}`` is uniform on ``0..L`` (for
a continuous parameter; ties have probability zero). A sampler or a density that is wrong shows up
as non-uniform ranks: a bias as a slope, too narrow a posterior as a U, too wide a posterior as a
hump. These helpers are plain numpy/scipy so they can be checked on an exact conjugate model.
"""

from __future__ import annotations

import numpy as np
import scipy.stats


def thin(draws: np.ndarray, L: int) -> np.ndarray:
    """``L`` draws spaced evenly over a chain (first axis), so that they are roughly independent."""
    draws = np.asarray(draws)
    if draws.shape[0] < L:
        raise ValueError(f"need at least {L} draws, got {draws.shape[0]}")
    idx = np.linspace(0, draws.shape[0] - 1, L).round().astype(int)
    return draws[idx]


def rank(truth: np.ndarray | float, draws: np.ndarray) -> np.ndarray:
    """Rank of ``truth`` among ``draws`` (first axis): the number of draws below it, in ``0..L``."""
    return np.sum(np.asarray(draws) < np.asarray(truth), axis=0)


def rank_chi2(ranks: np.ndarray, L: int, bins: int) -> tuple[float, np.ndarray]:
    """Pearson chi-square test that ranks in ``0..L`` are uniform, on ``bins`` equal bins.

    ``L + 1`` must be a multiple of ``bins``, so every bin holds the same number of rank values and
    has probability exactly ``1 / bins`` under uniformity. Returns the p-value and the bin counts.
    """
    ranks = np.asarray(ranks)
    if (L + 1) % bins:
        raise ValueError(f"L + 1 = {L + 1} is not a multiple of bins = {bins}")
    if ranks.min() < 0 or ranks.max() > L:
        raise ValueError("ranks outside 0..L")
    counts = np.bincount(ranks * bins // (L + 1), minlength=bins)
    return float(scipy.stats.chisquare(counts).pvalue), counts


def rank_ks(ranks: np.ndarray, L: int) -> float:
    """Kolmogorov-Smirnov p-value of the ranks against the uniform law.

    Ranks are jittered to ``(rank + U) / (L + 1)``, which is exactly Uniform(0, 1) when the ranks
    are uniform on ``0..L``; the jitter is seeded from the ranks themselves so the result is
    deterministic.
    """
    ranks = np.asarray(ranks)
    rng = np.random.default_rng(np.sort(ranks).tolist())
    u = (ranks + rng.uniform(size=ranks.shape)) / (L + 1)
    return float(scipy.stats.kstest(u, "uniform").pvalue)


def uniformity_pvalue(ranks: np.ndarray, L: int, bins: int) -> float:
    """The smaller of the chi-square and KS p-values, doubled (Bonferroni over the two tests)."""
    return min(1.0, 2 * min(rank_chi2(ranks, L, bins)[0], rank_ks(ranks, L)))
