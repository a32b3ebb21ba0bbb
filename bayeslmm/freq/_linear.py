"""The ordinary linear model, fitted by ML or REML: the null model of a test for random effects."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..linalg import FixedBasis
from ..spec import ModelSpec
from ._objective import Pieces, profiled_criterion


class LinearFit:
    """``y = X beta + e``, ``e ~ N(0, sigma^2 I)``, with lme4's likelihood conventions.

    ML: ``-2 l = n (1 + log(2 pi RSS / n))``; REML: ``log|X'X| + (n - p)(1 + log(2 pi RSS/(n - p)))``: the
    profiled criterion of :mod:`._objective` with ``V_rel = I``.
    """

    converged = True
    singular = False

    def __init__(self, spec: ModelSpec, method: str) -> None:
        if spec.terms or spec.residual is not None:
            raise DataError("LinearFit is for models without random effects or residual process")
        t0 = time.perf_counter()
        self.spec = spec
        self.method = method
        X, y = spec.X, spec.y
        n, p = X.shape
        if n <= p:
            raise DataError(f"{n} observations cannot estimate {p} fixed effects and a variance")
        # QR of the working columns (bayeslmm.linalg._basis): neither a large constant nor the
        # normal equations cost digits; |X'X| = |X_w'X_w| (the shift has determinant 1)
        basis = FixedBasis.from_rows(X, y)
        Xw, yw = basis.apply(X, y)
        Q, R = np.linalg.qr(Xw)
        bw = np.linalg.solve(R, Q.T @ yw)
        r = yw - Xw @ bw
        rss = float(r @ r)
        self._beta = basis.beta(bw)
        self.sigma2 = rss / (n - p if method == "REML" else n)
        logdet = 2.0 * float(np.sum(np.log(np.abs(np.diag(R)))))
        self.criterion = profiled_criterion(Pieces(0.0, logdet, rss), n, p, method == "REML")
        Rinv = np.linalg.solve(R, np.eye(p))
        self._XtX_inv = basis.cov(Rinv @ Rinv.T)
        self.theta = np.zeros(0)
        self.fit_seconds = time.perf_counter() - t0

    @property
    def reml(self) -> bool:
        """True for a REML fit."""
        return self.method == "REML"

    @property
    def nobs(self) -> int:
        """Number of observations."""
        return self.spec.n

    @property
    def npar(self) -> int:
        """Fixed effects and the residual variance."""
        return self.spec.p + 1

    @property
    def loglik(self) -> float:
        """Maximised (restricted) log-likelihood."""
        return -0.5 * self.criterion

    @property
    def fixef(self) -> pd.Series:
        """Least-squares estimates."""
        return pd.Series(self._beta, index=list(self.spec.fixef_names), name="Estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        """``sigma^2 (X'X)^{-1}``."""
        names = list(self.spec.fixef_names)
        return pd.DataFrame(self.sigma2 * self._XtX_inv, index=names, columns=names)

    @property
    def fitted(self) -> np.ndarray:
        """``X beta_hat``."""
        return self.spec.X @ self._beta

    def refit(self, y: np.ndarray, *, start: Any = None) -> LinearFit:
        """The same model fitted to another response."""
        return LinearFit(self.spec.with_response(np.asarray(y, dtype=float)), self.method)

    def simulate(self, nsim: int = 1, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """``(n, nsim)`` responses ``X beta_hat + sigma e``."""
        rng = np.random.default_rng(seed)
        return self.fitted[:, None] + np.sqrt(self.sigma2) * rng.standard_normal((self.spec.n, int(nsim)))
