"""Profile-likelihood confidence intervals (lme4's ``confint(fit, method = "profile")``).

For a parameter ``phi`` the profile deviance ``d(phi)`` is the criterion minimised over all
other parameters with ``phi`` held fixed; the interval is ``{phi: d(phi) - d(phi_hat) <=
chi2_1(level)}``, its ends found by root finding on each side.

* standard deviations and correlations of every random-effect term (lme4's ``.sig01``, ...,
  in its order: per term the first sd, its correlations, the next sd, ...) and the residual sd
  (``.sigma``), each profiled over all the others in the sd/correlation parameterisation
  ``T_k = diag(sd_k / sigma) chol(C_k)``;
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


def _sdcor_layout(fit: LMMFit) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """``omega`` = per term its sds then correlations (lme4's ``.sig`` order), then sigma; names; bounds."""
    vals, names, lo, hi = [], [], [], []
    for t, D in zip(fit.spec.terms, fit.cov_matrices().values()):
        sd = np.sqrt(np.diag(D))
        # lme4 order within a term: sd_1, cor_21, cor_31, ..., sd_2, cor_32, ...
        for j in range(t.q):
            vals.append(sd[j])
            names.append(f"sd_{t.coef_names[j]}|{t.name}")
            lo.append(0.0)
            hi.append(np.inf)
            for i in range(j + 1, t.q):
                c = D[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else 0.0
                vals.append(c)
                names.append(f"cor_{t.coef_names[i]}.{t.coef_names[j]}|{t.name}")
                lo.append(-1.0)
                hi.append(1.0)
    vals.append(fit.sigma)
    names.append("sigma")
    lo.append(0.0)
    hi.append(np.inf)
    return np.array(vals), names, np.array(lo), np.array(hi)


def _omega_to_varpar(fit: LMMFit, omega: np.ndarray) -> np.ndarray | None:
    """``(theta, sigma)`` from sds and correlations (``T_k = diag(sd/sigma) chol(C_k)``); None if invalid."""
    sigma = omega[-1]
    if sigma <= 0:
        return None
    theta: list[np.ndarray] = []
    i = 0
    for t in fit.spec.terms:
        sd = np.zeros(t.q)
        C = np.eye(t.q)
        for j in range(t.q):
            sd[j] = omega[i]
            i += 1
            for r in range(j + 1, t.q):
                C[r, j] = C[j, r] = omega[i]
                i += 1
        try:
            T = (sd / sigma)[:, None] * np.linalg.cholesky(C)
        except np.linalg.LinAlgError:
            return None
        theta.extend(T[j:, j] for j in range(t.q))
    return np.r_[np.concatenate(theta) if theta else np.zeros(0), sigma]


def _vc_profile(fit: LMMFit, c: int) -> Any:
    """``d(v)``: the deviance minimised over all other sds/correlations/sigma with ``omega_c = v``."""
    omega0, _, lo, hi = _sdcor_layout(fit)
    free = [i for i in range(omega0.size) if i != c]

    def prof(v: float) -> float:
        def dev(x: np.ndarray) -> float:
            om = omega0.copy()
            om[free] = x
            om[c] = v
            vp = _omega_to_varpar(fit, om)
            return np.inf if vp is None else fit.deviance_varpar(vp)

        from ._optimize import minimize_bobyqa

        x0 = np.clip(omega0[free], lo[free] + 1e-6 * (hi[free] - lo[free] < np.inf), hi[free] - 1e-6)
        return minimize_bobyqa(dev, lo[free], x0, upper=hi[free], check=False).criterion

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


def _root(f: Any, a: float, step: float, target: float, sign: int, bound: float) -> float:
    """Where ``f`` crosses ``target`` moving from ``a`` in direction ``sign`` (up to ``bound``)."""
    import scipy.optimize

    lo, x = a, a
    for _ in range(60):
        x = lo + sign * step
        if (x - bound) * sign >= 0:
            x = bound
            if f(x) <= target:
                return bound  # the interval reaches the boundary of the parameter space
            break
        if f(x) > target:
            break
        lo, step = x, step * 2
    else:
        return np.inf * sign
    return float(scipy.optimize.brentq(lambda v: f(v) - target, min(lo, x), max(lo, x), xtol=1e-8))


def confint(fit: LMMFit, level: float = 0.95, method: str = "profile") -> pd.DataFrame:
    """Confidence intervals for the random-effect sds and correlations, the residual sd and the fixed effects.

    Parameters
    ----------
    level
        Coverage (default 0.95).
    method
        ``"profile"`` (likelihood ratio) or ``"wald"`` (fixed effects only, ``+- z se``).

    Returns
    -------
    DataFrame indexed ``sd_(Intercept)|g``, ``cor_Days.(Intercept)|g``, ..., ``sigma`` and the
    coefficient names (lme4's ``.sig01``, ..., ``.sigma``, ... in that order), with the ML
    estimate and the two limits.
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
    omega, names, lo, hi = _sdcor_layout(fit)
    for c, (name, v) in enumerate(zip(names, omega)):
        prof = _vc_profile(fit, c)
        step = 0.05 if name.startswith("cor_") else 0.1 * max(v, 0.1 * fit.sigma)
        rows[name] = (v, _root(prof, v, step, base + crit, -1, lo[c]), _root(prof, v, step, base + crit, +1, hi[c]))
    for j, (name, b, s) in enumerate(zip(fit.spec.fixef_names, fit.fixef, fit.se)):
        prof = _fixef_profile(fit, j)
        rows[name] = (
            b,
            _root(prof, b, 0.5 * s, base + crit, -1, -np.inf),
            _root(prof, b, 0.5 * s, base + crit, +1, np.inf),
        )
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)
