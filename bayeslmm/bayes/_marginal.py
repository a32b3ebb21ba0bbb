"""The marginalisation module: beta integrated out of the ``beta ~ N(0, beta_prior_var I)`` model.

The prior is often written ``beta ~ N(0, theta I)``; here that prior variance is
``beta_prior_var`` (``t`` below), so it is not confused with the covariance parameters.

Derivation
----------
With ``y | beta ~ N(X beta, V)`` and ``beta ~ N(0, t I)``, ``y ~ N(0, V + t X X')``. By the
determinant lemma and the Woodbury identity, with ``A = X'V^-1 X``, ``b = X'V^-1 y``::

    log|V + t XX'|          = log|V| + p log t + log|A + I/t|
    y'(V + t XX')^-1 y      = y'V^-1 y - b'(A + I/t)^-1 b

so that ::

    -2 log p(y | psi, t) = n log 2pi + log|V| + p log t + log|A + I/t| + y'V^-1 y - b'(A + I/t)^-1 b

As ``t -> inf``, ``A + I/t -> A`` and ``y'V^-1 y - b'A^-1 b = r'V^-1 r`` with ``r = y - X beta_hat``
(GLS), hence ::

    log p(y | psi, t) + (p/2) log t  ->  -1/2 [n log 2pi + log|V| + log|X'V^-1X| + r'V^-1 r]
                                      =  l_REML(psi) - (p/2) log 2pi

(lme4's restricted log-likelihood has ``(n - p) log 2pi``). The difference tends to the
constant ``-(p/2) log 2pi`` for every ``psi``, so the maximiser of ``p(y | psi, t)`` in
``psi`` -- the posterior mode under a flat prior on the variance parameters, taken without
a Jacobian -- tends to the REML estimate.

Everything is computed from the engines' own pieces at ``psi``: ``log|V_theta|`` and the
cross-products ``[X y]'V_theta^-1 [X y]`` (blocked Cholesky, or the Kalman filter for serial
processes), with ``V = sigma^2 V_theta``; no ``n x n`` matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from .._errors import OptionError


def _gls_parts(fit: Any, psi: np.ndarray) -> tuple[float, np.ndarray, Any] | None:
    """``log|V_rel|``, ``S = [X_w y_w]'V_rel^-1 [X_w y_w]`` at ``psi`` (the engine's) and the shift of the
    working columns (:class:`bayeslmm.linalg.FixedBasis`). None where not evaluable."""
    return fit.objective.cross_products(np.asarray(psi, dtype=float))


def neg2_log_marginal(fit: Any, varpar: np.ndarray, beta_prior_var: float) -> float:
    """``-2 log p(y | theta, sigma, beta_prior_var)`` with beta integrated out (module docstring).

    ``varpar = (theta, sigma)`` as :meth:`LMMFit.varpar`; ``sigma`` is the residual sd (the
    scale ``s`` of a serial-process model).
    """
    theta, sigma = np.asarray(varpar[:-1], dtype=float), float(varpar[-1])
    if sigma <= 0 or beta_prior_var <= 0:
        return np.inf
    parts = _gls_parts(fit, theta)
    if parts is None:
        return np.inf
    logdet, S, basis = parts
    n, p = fit.spec.n, fit.spec.p
    s2 = sigma * sigma
    A, b, yy = S[:p, :p] / s2, S[:p, p] / s2, S[p, p] / s2
    # in the working columns (X_w = X A_s, y_w = y - c_y 1) the prior of beta_w = A_s^-1 (beta - c)
    # is N(-c, beta_prior_var A_s^-1 A_s^-T) with |A_s| = 1: precision P = A_s'A_s / beta_prior_var, mean -c
    P, mPm, h = np.eye(p) / beta_prior_var, 0.0, b
    if basis.intercept is not None:
        As = basis.A
        c = np.zeros(p)
        c[basis.intercept] = basis.shift_y
        P = As.T @ As / beta_prior_var
        Pmu = -(P @ c)
        mPm, h = float(c @ P @ c), b + Pmu
    M = A + P
    try:
        Lc = np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        return np.inf
    z = np.linalg.solve(Lc, h)
    return float(
        n * np.log(2 * np.pi * s2)
        + logdet
        + p * np.log(beta_prior_var)
        + 2 * np.sum(np.log(np.diag(Lc)))
        + yy
        + mPm
        - z @ z
    )


def log_marginal(fit: Any, varpar: np.ndarray, beta_prior_var: float) -> float:
    """``log p(y | theta, sigma, beta_prior_var)``, beta integrated out."""
    return -0.5 * neg2_log_marginal(fit, varpar, beta_prior_var)


def _entry_scales(vc: pd.DataFrame) -> np.ndarray:
    """The scale each ``varcorr()`` entry is compared on: a variance its own size, a covariance the
    product of the two sds (a difference in it is then one in the correlation), and never below
    1e-8 of the largest entry."""
    v = vc.vcov.to_numpy(dtype=float)
    var = {(g, a): x for g, a, b, x in zip(vc.grp, vc.var1, vc.var2, v) if b is None or b != b}
    out = np.abs(v).copy()
    for k, (g, a, b) in enumerate(zip(vc.grp, vc.var1, vc.var2)):
        if b is not None and b == b and (g, a) in var and (g, b) in var:
            out[k] = np.sqrt(abs(var[g, a] * var[g, b]))
    return np.maximum(out, 1e-8 * np.max(np.abs(v)))


@dataclass
class LimitPath:
    """Posterior modes of the variance parameters along a sequence of ``beta_prior_var``.

    ``max_rel_diff``: per prior variance, the largest difference of a ``varcorr()`` entry from REML,
    relative to the entry for a variance and to the product of the two sds for a covariance.
    """

    reml: pd.DataFrame
    beta_prior_vars: list[float]
    modes: list[pd.DataFrame]
    max_rel_diff: list[float]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``bayeslmm limit --json``."""

        def rows(vc: pd.DataFrame) -> list[dict[str, Any]]:
            return [
                {
                    "grp": r.grp,
                    "var1": r.var1 if isinstance(r.var1, str) else None,
                    "var2": r.var2 if isinstance(r.var2, str) else None,
                    "vcov": float(r.vcov),
                    "sdcor": None if not np.isfinite(r.sdcor) else float(r.sdcor),
                }
                for r in vc.itertuples(index=False)
            ]

        return {
            "reml": rows(self.reml),
            "path": [
                {"beta_prior_var": t, "varcorr": rows(m), "max_rel_diff": d}
                for t, m, d in zip(self.beta_prior_vars, self.modes, self.max_rel_diff)
            ],
        }

    def table(self) -> pd.DataFrame:
        """One row per ``beta_prior_var``, one column per variance component (``vcov``), REML last."""
        label = [f"{r.grp}:{r.var1 or ''}:{r.var2 or ''}".rstrip(":") for r in self.reml.itertuples(index=False)]
        data = [list(m.vcov) + [d] for m, d in zip(self.modes, self.max_rel_diff)]
        data.append(list(self.reml.vcov) + [0.0])
        return pd.DataFrame(
            data,
            columns=[*label, "max_rel_diff"],
            index=pd.Index([*map(float, self.beta_prior_vars), np.inf], name="beta_prior_var"),
        )


def _varcorr_at(fit: Any, varpar: np.ndarray) -> pd.DataFrame:
    """``fit.varcorr()`` evaluated at other ``(psi, s)`` (same rows)."""
    psi, s = np.asarray(varpar[:-1]), float(varpar[-1])
    vc = fit.varcorr().copy()
    i = 0
    for t, T in zip(fit.spec.terms, fit.objective.factors(psi)):
        for v, sdc in t.covariance.component_values(s**2 * (T @ T.T)):
            vc.loc[i, ["vcov", "sdcor"]] = [v, sdc]
            i += 1
    resid = fit.objective.residual_variance(psi, s**2)
    vc.loc[i, ["vcov", "sdcor"]] = [resid, np.sqrt(resid)]
    return vc


def reml_limit(fit: Any, beta_prior_vars: Sequence[float] = (10.0, 1e3, 1e5, 1e8)) -> LimitPath:
    """Posterior modes of the variance parameters as ``beta_prior_var`` grows, against REML.

    For each ``beta_prior_var`` maximise ``p(y | psi, beta_prior_var)`` (flat prior on the
    variance parameters, no Jacobian, so the mode does not depend on how ``psi`` is
    parameterised) over ``(theta, sigma)`` with BOBYQA, starting from the REML estimate, and
    report the variance components and their largest relative distance from REML. The REML
    estimate is first re-optimised to the same tight tolerance, so that the distances measure
    the limit and not the optimiser's stopping rule.

    Parameters
    ----------
    fit
        A REML fit (:func:`bayeslmm.lmm`), with or without a serial process.
    beta_prior_vars
        Prior variances of the fixed effects (``theta`` in ``beta ~ N(0, theta I)``), each > 0.
    """
    from ..freq import minimize_bobyqa

    if not fit.reml:
        raise OptionError("the REML limit compares with a REML fit: fit the model with method='REML'")
    tvals = [float(t) for t in beta_prior_vars]
    if not tvals or min(tvals) <= 0:
        raise OptionError("beta_prior_vars must be positive numbers, e.g. 10,1e3,1e8")
    vp0 = fit.varpar()
    lo_t, hi_t = fit.objective.bounds()
    lower, upper = np.r_[lo_t, 1e-12], np.r_[hi_t, np.inf]
    # warm starts (the fit's estimate, then the REML optimum): a small first step keeps BOBYQA near
    # them, where the criteria are flat to their rounding
    tight = {"upper": upper, "ftol_abs": 1e-12, "ftol_rel": 1e-15, "xtol_abs": 1e-12, "step_scale": 0.01}
    # the REML estimate itself to the same tight tolerance (the fit's default stops at ~1e-6 relative)
    vp0 = minimize_bobyqa(fit.deviance_varpar, lower, vp0, **tight).x
    reml = _varcorr_at(fit, vp0)
    ref = reml.vcov.to_numpy()
    scale = _entry_scales(reml)
    modes, diffs = [], []
    for t in tvals:
        rec = minimize_bobyqa(partial(neg2_log_marginal, fit, beta_prior_var=t), lower, vp0, **tight)
        vc = _varcorr_at(fit, rec.x)
        modes.append(vc)
        diffs.append(float(np.max(np.abs(vc.vcov.to_numpy() - ref) / scale)))
    return LimitPath(reml, tvals, modes, diffs)
