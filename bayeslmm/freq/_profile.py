"""Profile-likelihood confidence intervals (lme4's ``confint(fit, method = "profile")``).

For a parameter ``phi`` the profile deviance ``d(phi)`` is the criterion minimised over all
other parameters with ``phi`` held fixed; the interval is ``{phi: d(phi) - d(phi_hat) <=
chi2_1(level)}``, its ends found by root finding on each side.

* standard deviations of scalar random-effect terms (lme4's ``.sig``, with
  ``sigma_k = sigma * theta_k`` held fixed) and the residual sd (``.sigma``);
* fixed effects, with the coefficient held fixed as an offset.

As lme4 does, every profile is of the ML deviance, also for a REML fit (which is refitted
by ML first): the REML criterion of a model with a fixed coefficient is not comparable with
the full model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._errors import OptionError

if TYPE_CHECKING:
    from ._fit import LMMFit


def _minimise(fun: Any, x0: np.ndarray, lower: np.ndarray) -> float:
    from ._optimize import minimize_bobyqa

    if x0.size == 0:
        return float(fun(x0))
    return minimize_bobyqa(fun, lower, x0, check=False).criterion


def _sd_profile(fit: LMMFit, k: int | None) -> Any:
    """``d(s)`` for the sd of scalar term ``k`` (theta index), or of the residual when ``k`` is None."""
    theta0 = np.asarray(fit.theta, dtype=float)
    lower = fit.spec.theta_lower()
    free = [i for i in range(theta0.size) if i != k]

    def prof(s: float) -> float:
        if k is None:  # sigma fixed at s, theta free
            return _minimise(lambda th: fit.deviance_varpar(np.r_[th, s]), theta0, lower)

        def dev(x: np.ndarray) -> float:  # x = (other thetas, sigma)
            sigma = x[-1]
            if sigma <= 0:
                return np.inf
            th = np.empty_like(theta0)
            th[free] = x[:-1]
            th[k] = s / sigma
            return fit.deviance_varpar(np.r_[th, sigma])

        return _minimise(dev, np.r_[theta0[free], fit.sigma], np.r_[lower[free], 0.0])

    return prof


def _fixef_profile(fit: LMMFit, j: int) -> Any:
    """``d(b)``: the ML deviance with coefficient ``j`` held at ``b``."""
    from dataclasses import replace

    from ._lrt import fit_model

    spec = fit.spec
    keep = [i for i in range(spec.p) if i != j]
    reduced = replace(spec, X=spec.X[:, keep], fixef_names=tuple(spec.fixef_names[i] for i in keep))

    def prof(b: float) -> float:
        return fit_model(reduced.with_response(spec.y - spec.X[:, j] * b), "ML").criterion

    return prof


def _root(f: Any, a: float, step: float, target: float, sign: int, floor: float | None) -> float:
    """Where ``f`` crosses ``target`` moving from ``a`` in direction ``sign`` (``floor``: a bound)."""
    import scipy.optimize

    lo, x = a, a
    for _ in range(60):
        x = lo + sign * step
        if floor is not None and sign < 0 and x <= floor:
            x = floor
            if f(x) <= target:
                return floor  # the interval reaches the boundary
            break
        if f(x) > target:
            break
        lo, step = x, step * 2
    else:
        return np.inf * sign
    return float(scipy.optimize.brentq(lambda v: f(v) - target, min(lo, x), max(lo, x), xtol=1e-8))


def confint(fit: LMMFit, level: float = 0.95, method: str = "profile") -> pd.DataFrame:
    """Confidence intervals for the sds of scalar random-effect terms, the residual sd and the fixed effects.

    Parameters
    ----------
    level
        Coverage (default 0.95).
    method
        ``"profile"`` (likelihood ratio) or ``"wald"`` (fixed effects only, ``+- z se``).

    Returns
    -------
    DataFrame indexed ``sd_(Intercept)|g``, ``sigma`` and the coefficient names, with the ML
    estimate and the two limits (lme4's ``.sig01``, ``.sigma``, ... in that order).
    """
    import scipy.stats

    if not 0 < level < 1:
        raise OptionError("level must be between 0 and 1")
    a = (1 - level) / 2
    cols = ["estimate", f"{100 * a:.1f} %", f"{100 * (1 - a):.1f} %"]
    rows: dict[str, tuple[float, float, float]] = {}
    if method == "wald":
        z = scipy.stats.norm.ppf(1 - a)
        for name, b, s in zip(fit.spec.fixef_names, fit.fixef, fit.se):
            rows[name] = (b, b - z * s, b + z * s)
        return pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    if method != "profile":
        raise OptionError(f"unknown method {method!r}: use 'profile' or 'wald'")
    if fit.spec.residual is not None:
        raise OptionError("profile intervals are not available for serial-process models yet; use bootstrap()")
    crit = scipy.stats.chi2.ppf(level, 1)
    if fit.reml:
        from ._lrt import fit_model

        fit = fit_model(fit.spec, "ML")
    base = fit.criterion
    i = 0
    for t in fit.spec.terms:
        if t.q == 1:
            s_hat = fit.sigma * fit.theta[i]
            prof = _sd_profile(fit, i)
            width = max(s_hat, 0.1 * fit.sigma) * 0.1
            lo = _root(prof, s_hat, width, base + crit, -1, 0.0)
            hi = _root(prof, s_hat, width, base + crit, +1, None)
            rows[f"sd_{t.coef_names[0]}|{t.name}"] = (s_hat, lo, hi)
        i += t.ntheta
    prof = _sd_profile(fit, None)
    rows["sigma"] = (fit.sigma, _root(prof, fit.sigma, 0.05 * fit.sigma, base + crit, -1, 0.0),
                     _root(prof, fit.sigma, 0.05 * fit.sigma, base + crit, +1, None))
    for j, (name, b, s) in enumerate(zip(fit.spec.fixef_names, fit.fixef, fit.se)):
        prof = _fixef_profile(fit, j)
        rows[name] = (b, _root(prof, b, 0.5 * s, base + crit, -1, None), _root(prof, b, 0.5 * s, base + crit, +1, None))
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)
