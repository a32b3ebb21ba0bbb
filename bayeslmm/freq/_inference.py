"""Inference on a fitted model: Satterthwaite's degrees of freedom for t tests.

Satterthwaite's approximation as lmerTest computes it (Kuznetsova et al. 2017): with
``varpar = (theta, sigma)``, ``A = 2 H^{-1}`` the asymptotic covariance of ``varpar``
from the Hessian ``H`` of the (restricted) deviance, and for a contrast ``l``
``v(varpar) = l' cov(beta_hat; varpar) l``::

    df = 2 v^2 / (grad v' A grad v)

Derivatives are taken numerically with Richardson extrapolation, as numDeriv does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._errors import OptionError
from ._numderiv import hessian, jacobian, jacobian_central

if TYPE_CHECKING:
    from ._fit import LMMFit


def _analytic(fit: LMMFit) -> Any:
    """The engine's analytic gradient of the deviance in ``(psi, s)``, where it has one."""
    return getattr(fit.objective, "varpar_gradient", None)


def varpar_covariance(fit: LMMFit) -> np.ndarray:
    """``A = 2 H^{-1}``: asymptotic covariance of ``(theta, sigma)`` (pseudo-inverse if H is singular).

    ``H`` by numDeriv's Richardson extrapolation of the deviance (lmerTest's), or, where the engine has
    the deviance's analytic gradient (the structures whitened densely), by central differences of that
    gradient: ``2k`` gradients instead of ``~8 k^2`` deviances (a 10-visit ``us``: 110 against ~25,000).
    """
    grad = _analytic(fit)
    if grad is not None:

        def g(v: np.ndarray) -> np.ndarray:
            out = grad(v)
            return np.full(v.size, np.nan) if out is None else out

        J = jacobian_central(g, fit.varpar())
        H = 0.5 * (J + J.T)
    else:
        H = hessian(fit.deviance_varpar, fit.varpar())
    try:
        np.linalg.cholesky(H)
        return 2.0 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return 2.0 * np.linalg.pinv(H)


def _contrasts(fit: LMMFit, L: Any) -> tuple[np.ndarray, list[str]]:
    names = list(fit.spec.fixef_names)
    if L is None:
        return np.eye(len(names)), names
    if isinstance(L, pd.DataFrame):
        return L.reindex(columns=names, fill_value=0.0).to_numpy(dtype=float), [str(i) for i in L.index]
    Lm = np.atleast_2d(np.asarray(L, dtype=float))
    if Lm.shape[1] != len(names):
        raise OptionError(f"a contrast needs {len(names)} coefficients (one per fixed effect: {', '.join(names)})")
    return Lm, [f"contrast {i + 1}" for i in range(Lm.shape[0])]


def satterthwaite_df(fit: LMMFit, L: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Estimates, variances and Satterthwaite df of contrasts (``L`` as in :func:`satterthwaite`)."""
    Lm, names = _contrasts(fit, L)
    A = varpar_covariance(fit)
    jac = jacobian_central if _analytic(fit) is not None else jacobian
    J = jac(fit.vcov_varpar, fit.varpar())  # (p, p, k)
    C = fit.vcov.to_numpy()
    est = Lm @ fit.fixef.to_numpy()
    var = np.einsum("mi,ij,mj->m", Lm, C, Lm)
    grad = np.einsum("mi,ijk,mj->mk", Lm, J, Lm)
    denom = np.einsum("mk,kl,ml->m", grad, A, grad)
    return est, var, 2.0 * var**2 / denom, names


def satterthwaite(fit: LMMFit, L: Any = None) -> pd.DataFrame:
    """t tests with Satterthwaite's denominator df for fixed effects or linear contrasts.

    Parameters
    ----------
    L
        None (each coefficient), or contrasts: an ``(m, p)`` array or a DataFrame whose
        columns are coefficient names (missing ones are 0) and whose index names them.

    Returns
    -------
    DataFrame with ``Estimate, Std. Error, df, t value, Pr(>|t|)`` per contrast.
    """
    import scipy.stats

    est, var, df, names = satterthwaite_df(fit, L)
    se = np.sqrt(var)
    t = est / se
    p = 2.0 * scipy.stats.t.sf(np.abs(t), df)
    return pd.DataFrame({"Estimate": est, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": p}, index=names)
