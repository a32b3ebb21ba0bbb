"""Finite-difference derivatives with Richardson extrapolation (as R's numDeriv).

Central differences with steps ``h, h/2, h/4, h/8`` are combined so that the
``O(h^2)``, ``O(h^4)``... error terms cancel; steps and levels follow numDeriv's defaults
(what lmerTest uses for Satterthwaite's df): ``d = 1e-4`` relative for Jacobians,
``d = 0.1`` for Hessians, 4 levels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Number of step halvings combined by the extrapolation.
LEVELS = 4


#: numDeriv's zero.tol: below it a coordinate gets the absolute step EPS instead of a relative one.
ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))
EPS = 1e-4


def _steps(x: np.ndarray, rel: float) -> np.ndarray:
    """numDeriv's first step: ``rel |x|``, or ``EPS`` for a coordinate at zero."""
    return np.where(np.abs(x) > ZERO_TOL, rel * np.abs(x), EPS)


def _richardson(vals: list[np.ndarray]) -> np.ndarray:
    """Extrapolate estimates at steps h, h/2, h/4, ... whose error is a series in h^2."""
    table = [np.asarray(v, dtype=float) for v in vals]
    for k in range(1, len(table)):
        f = 4.0**k
        table = [(f * table[i + 1] - table[i]) / (f - 1.0) for i in range(len(table) - 1)]
    return table[0]


def jacobian(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """``(m..., k)`` Jacobian of an array-valued ``fun`` at ``x`` (``k`` coordinates)."""
    x = np.asarray(x, dtype=float)
    h0 = _steps(x, rel)
    cols = []
    for i in range(x.size):
        ests = []
        for lev in range(LEVELS):
            e = np.zeros_like(x)
            e[i] = h0[i] / 2**lev
            ests.append((np.asarray(fun(x + e)) - np.asarray(fun(x - e))) / (2 * e[i]))
        cols.append(_richardson(ests))
    return np.stack(cols, axis=-1)


def hessian(fun: Callable[[np.ndarray], float], x: np.ndarray, rel: float = 0.1) -> np.ndarray:
    """``(k, k)`` Hessian of a scalar ``fun`` at ``x``.

    The first step is 10% of each coordinate (numDeriv's ``d = 0.1`` for Hessians):
    second differences on small steps drown in the criterion's rounding noise, and the
    extrapolation removes the truncation error of large ones.
    """
    x = np.asarray(x, dtype=float)
    k = x.size
    h0 = _steps(x, rel)
    f0 = fun(x)
    H = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            ests = []
            for lev in range(LEVELS):
                hi, hj = h0[i] / 2**lev, h0[j] / 2**lev
                if i == j:
                    e = np.zeros(k)
                    e[i] = hi
                    ests.append((fun(x + e) - 2 * f0 + fun(x - e)) / hi**2)
                else:
                    ei = np.zeros(k)
                    ej = np.zeros(k)
                    ei[i], ej[j] = hi, hj
                    ests.append(
                        (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej) + fun(x - ei - ej)) / (4 * hi * hj)
                    )
            H[i, j] = H[j, i] = _richardson(ests)
    return H


def jacobian_central(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """``(m..., k)`` Jacobian by plain central differences (``2k`` calls; relative error ~``rel^2``): for
    functions that are smooth and cheap to differentiate once more, such as an analytic gradient."""
    x = np.asarray(x, dtype=float)
    h = _steps(x, rel)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h[i]
        cols.append((np.asarray(fun(x + e), dtype=float) - np.asarray(fun(x - e), dtype=float)) / (2 * h[i]))
    return np.stack(cols, axis=-1)
