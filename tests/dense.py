"""Dense N x N reference formulas of the model, for property tests on small designs."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from bayeslmm.linalg import lambda_blocks, term_matrix
from bayeslmm.spec import ModelSpec


def dense_parts(spec: ModelSpec, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Z`` (n, q), ``Lambda`` (q, q) and ``V_theta = Z Lambda Lambda'Z' + I`` (n, n)."""
    Z = np.hstack([term_matrix(t).toarray() for t in spec.terms])
    Ts = lambda_blocks(np.asarray(theta, float), tuple(t.q for t in spec.terms))
    Lam = scipy.linalg.block_diag(*[np.kron(np.eye(t.nlevels), T) for t, T in zip(spec.terms, Ts)])
    return Z, Lam, Z @ Lam @ Lam.T @ Z.T + np.eye(spec.n)


def dense_fit(spec: ModelSpec, theta: np.ndarray, reml: bool) -> dict:
    """GLS, profiled sigma^2, the dense -2 log-likelihood, BLUPs and cov(beta_hat) at theta.

    ``-2 l_REML = log|V| + log|X'V^-1X| + r'V^-1r + (N - p) log 2 pi`` and
    ``-2 l_ML = log|V| + r'V^-1r + N log 2 pi`` with ``V = sigma^2 V_theta`` at the
    profiled ``sigma^2``; ``b = D Z'V^-1 (y - X beta)`` with ``D = sigma^2 Lambda Lambda'``.
    """
    X, y = spec.X, spec.y
    n, p = X.shape
    Z, Lam, Vt = dense_parts(spec, theta)
    Vti = np.linalg.inv(Vt)
    beta = np.linalg.solve(X.T @ Vti @ X, X.T @ Vti @ y)
    r = y - X @ beta
    s2 = float(r @ Vti @ r) / (n - p if reml else n)
    V = s2 * Vt
    Vi = Vti / s2
    m2ll = np.linalg.slogdet(V)[1] + r @ Vi @ r + (n - p if reml else n) * np.log(2 * np.pi)
    if reml:
        m2ll += np.linalg.slogdet(X.T @ Vi @ X)[1]
    D = s2 * Lam @ Lam.T
    b = D @ Z.T @ Vi @ r
    # conditional covariance of b given y with beta held fixed (lme4's condVar)
    cond = D - D @ Z.T @ Vi @ Z @ D
    return {
        "criterion": float(m2ll),
        "beta": beta,
        "sigma2": s2,
        "b": b,
        "vcov": np.linalg.inv(X.T @ Vi @ X),
        "cond": cond,
    }
