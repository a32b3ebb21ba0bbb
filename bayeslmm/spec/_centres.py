"""The intercept column of a design and the centres of its other columns.

Two places judge a column by its variation about a centre rather than by its raw values: the
rank check of ``X`` (:func:`bayeslmm.spec.drop_rank_deficient`) and the working columns of the
engines (:class:`bayeslmm.linalg.FixedBasis`, :class:`bayeslmm.linalg.TermBasis`). Both take the
centres from here, so that the columns the rank check keeps are those the engines see.
"""

from __future__ import annotations

import numpy as np


def intercept_column(X: np.ndarray) -> int | None:
    """Index of the first column of ``X`` (``(n, p)``) that is all ones, or None (also for no rows)."""
    if X.shape[0] == 0:
        return None
    for j in range(X.shape[1]):
        col = X[:, j]
        if col[0] == 1.0 and np.all(col == 1.0):
            return j
    return None


def lower_median(values: np.ndarray) -> float:
    """A centre of a column: its lower median over the finite values, a value of the column itself (0 if none).

    A data value rather than a mean: shifting the column by a constant that keeps its values
    exact then gives bit for bit the same centred column (a mean would carry the rounding of
    the constant), so results do not depend on the constant even in the last digits.
    """
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0
    k = (v.size - 1) // 2
    return float(np.partition(v, k)[k])


def column_centres(X: np.ndarray, intercept: int | None) -> np.ndarray:
    """``(p,)`` centres ``m`` of the columns of ``X`` (``(n, p)``): lower medians, ``m_intercept = 0``.

    All zero when ``intercept`` is None: without an intercept column no constant lies in the
    span of ``X``, and centring would change it.
    """
    p = X.shape[1]
    if intercept is None:
        return np.zeros(p)
    return np.array([0.0 if j == intercept else lower_median(X[:, j]) for j in range(p)])
