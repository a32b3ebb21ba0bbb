"""Profiled ML and REML criteria as functions of theta alone.

With ``beta`` and ``sigma^2`` profiled out (Bates et al. 2015, eqs. 34 and 41)::

    ML:    d(theta)   = log|L_theta|^2 + n     (1 + log(2 pi r^2(theta) / n))
    REML:  d_R(theta) = log|L_theta|^2 + log|R_X|^2 + (n-p) (1 + log(2 pi r^2(theta) / (n-p)))

``d`` is minus twice the profiled log-likelihood (the deviance), ``d_R`` minus
twice the profiled restricted log-likelihood (lme4's "REML criterion").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._errors import OptionError
from ..linalg import BlockedFactor, CrossProducts, factorize

METHODS = ("REML", "ML")


def check_method(method: str) -> str:
    """Normalise ``method`` to ``"REML"`` or ``"ML"``."""
    m = str(method).upper()
    if m not in METHODS:
        raise OptionError(f"unknown method {method!r}: use 'REML' (the default) or 'ML'")
    return m


def criterion_from_factor(f: BlockedFactor, n: int, p: int, reml: bool) -> float:
    """Minus twice the profiled (restricted) log-likelihood read off the factor ``f``."""
    r2 = f.pwrss
    if reml:
        nmp = n - p
        return f.logdet_L + f.logdet_RX + nmp * (1.0 + np.log(2.0 * np.pi * r2 / nmp))
    return f.logdet_L + n * (1.0 + np.log(2.0 * np.pi * r2 / n))


@dataclass(frozen=True)
class Objective:
    """``theta -> d(theta)``: the profiled criterion on fixed cross-product blocks.

    Calling it never touches the rows of the data; the cost is that of one
    blocked Cholesky factorisation (see :mod:`bayeslmm.linalg`).
    """

    blocks: CrossProducts
    reml: bool

    def factor(self, theta: np.ndarray) -> BlockedFactor:
        """The blocked Cholesky factor at ``theta`` (lme4's)."""
        return factorize(self.blocks, theta)

    def __call__(self, theta: np.ndarray) -> float:
        return self._value(theta, working=False)

    def working(self, theta_w: np.ndarray) -> float:
        """The criterion at the working theta (:func:`bayeslmm.linalg.theta_to_working`): what the optimiser sees."""
        return self._value(theta_w, working=True)

    def _value(self, theta: np.ndarray, working: bool) -> float:
        try:
            f = factorize(self.blocks, theta, working=working)
        except np.linalg.LinAlgError:
            return np.inf
        val = criterion_from_factor(f, self.blocks.n, self.blocks.p, self.reml)
        return float(val) if np.isfinite(val) else np.inf
