"""Fit an LMM by ML or REML and assemble the results (lme4's ``mkMerMod`` stage).

Pipeline (lme4's ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``)::

    ModelSpec --CrossProducts.from_spec--> blocks --Objective--> d(theta)
              --minimize_bobyqa--> theta_hat --LMMFit--> estimates, BLUPs, summaries
"""

from __future__ import annotations

import contextlib
import time
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..linalg import CrossProducts
from ..spec import ModelSpec, build_spec
from ._objective import Objective, check_method, criterion_from_factor
from ._optimize import OptimizerRecord, minimize_bobyqa


def lmm(formula: str, data: Any, *, method: str = "REML", residual: str | None = None,
        start: np.ndarray | None = None) -> LMMFit:
    """Fit a linear mixed model by REML (default) or ML.

    Parameters
    ----------
    formula
        lme4 syntax, e.g. ``"weight ~ num_weeks + (1 | id_num)"``; see
        :func:`bayeslmm.model_spec` for what is allowed.
    data
        A pandas or polars data frame. It is not modified.
    method
        ``"REML"`` or ``"ML"``.
    residual
        ``None``/``"iid"`` (independent errors), ``"ou(t | g)"`` (Ornstein-Uhlenbeck process in
        time ``t`` within ``g`` plus a nugget) or ``"ar1(t | g)"`` (AR(1) by order of ``t``).
    start
        Starting value of theta (default: the best of a few scalings of lme4's start).

    Returns
    -------
    LMMFit
    """
    method = check_method(method)
    spec = build_spec(formula, data, residual=residual)
    return fit_spec(spec, method=method, start=start)


def lm(formula: str, data: Any, *, method: str = "REML") -> Any:
    """Fit an ordinary linear model (no random effects) by REML or ML: the null of a variance test.

    Returns
    -------
    :class:`bayeslmm.freq.LinearFit` (loglik, npar, fixef, vcov, simulate, refit).
    """
    from ._linear import LinearFit

    method = check_method(method)
    spec = build_spec(formula, data)
    if spec.terms:
        raise DataError("lm() fits models without random-effect terms; use lmm() for this formula")
    return LinearFit(spec, method)


def fit_spec(spec: ModelSpec, *, method: str = "REML", start: np.ndarray | None = None,
             blocks: CrossProducts | None = None) -> LMMFit:
    """Fit a model given its :class:`ModelSpec` (the engine behind :func:`lmm`)."""
    method = check_method(method)
    if not spec.terms and spec.residual is None:
        raise DataError(
            "the formula has no random-effect term such as (1 | group) and no residual process; "
            "a linear mixed model needs at least one"
        )
    if spec.n <= spec.p:
        raise DataError(f"{spec.n} observations cannot estimate {spec.p} fixed effects and a variance")
    if spec.residual is not None:
        from ._serial import fit_serial

        return fit_serial(spec, method, start=start)
    t0 = time.perf_counter()
    with _one_blas_thread(len(spec.terms) > 1):
        blocks = CrossProducts.from_spec(spec) if blocks is None else blocks
        obj = Objective(blocks, reml=(method == "REML"))
        rec = optimize_objective(obj, spec.theta_lower(), start, names=spec.theta_names())
        fit = LMMFit(spec, method, obj, rec, 0.0)
    fit.fit_seconds = time.perf_counter() - t0
    return fit


def optimize_objective(obj: Objective, lower: np.ndarray, start: np.ndarray | None, names: list[str]
                       ) -> OptimizerRecord:
    """Minimise the criterion over the working theta and report lme4's theta.

    The optimiser sees the criterion of the working columns (:mod:`bayeslmm.linalg._basis`), so
    that its path does not depend on shifts or units of the covariates; ``theta`` and
    ``theta_start`` of the record are mapped back to the original columns. ``gradient`` and
    ``hessian`` stay in the working coordinates.
    """
    from dataclasses import replace

    from ..linalg import theta_from_working, theta_to_working

    cp = obj.blocks
    start_w = None if start is None else theta_to_working(cp, start)
    rec = minimize_bobyqa(obj.working, lower, start_w, names=names)
    return replace(rec, theta=theta_from_working(cp, rec.theta), theta_start=theta_from_working(cp, rec.theta_start))


def _one_blas_thread(dense_schur: bool) -> Any:
    """One BLAS thread while a model with a dense Schur complement (several terms) is fitted.

    Each evaluation then alternates NumPy work with a LAPACK Cholesky from SciPy's own
    OpenBLAS; two OpenBLAS pools that wake and spin between the calls were seen to make an
    evaluation 10-40x slower on this 2-core machine. A single-term model makes no large BLAS
    call, and skipping threadpoolctl there keeps the command line's start-up short.
    """
    if not dense_schur:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class LMMFit:
    """A fitted linear mixed model (the frequentist path).

    Attributes are computed from the blocked factor at the optimum theta;
    tidy pandas outputs mirror lme4's accessors (``fixef``, ``vcov``,
    ``VarCorr``, ``ranef``, ``fitted``, ``residuals``, ``logLik``...).
    """

    def __init__(self, spec: ModelSpec, method: str, objective: Any,
                 record: OptimizerRecord, fit_seconds: float) -> None:
        self.spec = spec
        self.method = method
        self.objective = objective
        self.optimizer = record
        self.fit_seconds = fit_seconds
        self.theta = record.theta.copy()
        self.theta.setflags(write=False)
        self._estimate()

    def _estimate(self) -> None:
        """beta, sigma^2 and the criterion at theta_hat (from the blocked factor)."""
        spec, method, objective = self.spec, self.method, self.objective
        f = objective.factor(self.theta)
        self._factor = f
        u, beta = f.solve_modes()
        self._u = u
        self._beta = beta
        n, p = spec.n, spec.p
        self.sigma2 = f.pwrss / (n - p if method == "REML" else n)
        self.criterion = criterion_from_factor(f, n, p, method == "REML")

    # ----------------------------------------------------------------- basics
    @property
    def reml(self) -> bool:
        """True for a REML fit."""
        return self.method == "REML"

    @property
    def nobs(self) -> int:
        """Number of observations used."""
        return self.spec.n

    @property
    def ngroups(self) -> dict[str, int]:
        """Levels per grouping factor."""
        return self.spec.ngroups

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        return float(np.sqrt(self.sigma2))

    @property
    def converged(self) -> bool:
        """Whether the optimiser stopped normally and passed the gradient/Hessian checks."""
        return self.optimizer.converged

    @property
    def singular(self) -> bool:
        """Whether the fit is on the boundary (a variance 0 or a correlation +-1), as lme4's isSingular."""
        return self.optimizer.singular

    @property
    def npar(self) -> int:
        """Number of parameters: fixed effects, theta and the residual variance."""
        return self.spec.p + self.spec.ntheta + 1

    # ------------------------------------------------------- fixed effects
    @property
    def fixef(self) -> pd.Series:
        """Fixed-effect estimates ``beta_hat`` (GLS at theta_hat)."""
        return pd.Series(self._beta, index=list(self.spec.fixef_names), name="Estimate")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """``cov(beta_hat) = sigma^2 (X'V_theta^{-1}X)^{-1}`` with ``V_theta = Z Lambda Lambda'Z' + I``."""
        RX = self._factor.RX
        p = RX.shape[0]
        Rinv = np.linalg.solve(RX, np.eye(p)) if p else np.zeros((0, 0))
        V = self.sigma2 * (Rinv.T @ Rinv)
        names = list(self.spec.fixef_names)
        return pd.DataFrame(V, index=names, columns=names)

    def vcov_working(self) -> tuple[Any, np.ndarray]:
        """``(basis, cov(beta_w))``: the covariance of the working coefficients (:mod:`bayeslmm.linalg._basis`).

        ``x'cov(beta)x = x_w'cov(beta_w)x_w`` with ``x_w`` the shifted row: computed so, the SE of a
        prediction at covariates carrying a large constant loses no digits.
        """
        f = getattr(self, "_factor", None)
        if f is None:  # an engine without blocks (serial processes): the original columns
            from ..linalg import FixedBasis

            return FixedBasis.identity(self.spec.p), self.vcov.to_numpy()
        RXw = f.RXw
        p = RXw.shape[0]
        Rinv = np.linalg.solve(RXw, np.eye(p)) if p else np.zeros((0, 0))
        return self.objective.blocks.fixed_basis, self.sigma2 * (Rinv.T @ Rinv)

    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=list(self.spec.fixef_names), name="Std. Error")

    @property
    def tvalues(self) -> pd.Series:
        """Wald t statistics ``beta_hat / se``."""
        return (self.fixef / self.se).rename("t value")

    def coef_table(self) -> pd.DataFrame:
        """Estimate, Std. Error and t value per coefficient (lme4's ``coef(summary(fit))``)."""
        return pd.concat([self.fixef, self.se, self.tvalues], axis=1)

    # -------------------------------------------------- variance components
    def cov_matrices(self) -> dict[str, np.ndarray]:
        """Covariance matrix ``D_k = sigma^2 T_k T_k'`` of each term's random effects."""
        return {t.name: self.sigma2 * (T @ T.T) for t, T in zip(self.spec.terms, self._factor.Ts)}

    def varcorr(self) -> pd.DataFrame:
        """Variance components as R's ``as.data.frame(VarCorr(fit))``.

        Columns ``grp, var1, var2, vcov, sdcor``: for each term the variances
        (``var2`` None, ``sdcor`` the sd), then the covariances (``sdcor`` the
        correlation), then the residual row (``grp`` = "Residual").
        """
        rows = []
        for t, D in zip(self.spec.terms, self.cov_matrices().values()):
            sd = np.sqrt(np.diag(D))
            for i in range(t.q):
                rows.append((t.name, t.coef_names[i], None, D[i, i], sd[i]))
            for j in range(t.q):
                for i in range(j + 1, t.q):
                    denom = sd[i] * sd[j]
                    corr = D[i, j] / denom if denom > 0 else np.nan
                    rows.append((t.name, t.coef_names[j], t.coef_names[i], D[i, j], corr))
        rows.append(("Residual", None, None, self.sigma2, self.sigma))
        cols = list(zip(*rows))
        return pd.DataFrame({
            "grp": pd.Series(cols[0], dtype=object),
            "var1": pd.Series(cols[1], dtype=object),  # None where R has NA
            "var2": pd.Series(cols[2], dtype=object),
            "vcov": np.array(cols[3], dtype=float),
            "sdcor": np.array(cols[4], dtype=float),
        })

    # ------------------------------------------------------ random effects
    @cached_property
    def _b(self) -> list[np.ndarray]:
        """Per term ``(nlevels, q)`` BLUPs ``b = Lambda u``."""
        out, start = [], 0
        for t, T in zip(self.spec.terms, self._factor.Ts):
            u = self._u[start : start + t.ncols].reshape(t.nlevels, t.q)
            out.append(u @ T.T)
            start += t.ncols
        return out

    @cached_property
    def _condcov(self) -> list[np.ndarray]:
        return [self.sigma2 * c for c in self._factor.cond_cov_blocks()]

    def ranef(self, cond_var: bool = True) -> pd.DataFrame:
        """BLUPs (conditional modes) as R's ``as.data.frame(ranef(fit, condVar = TRUE))``.

        Columns ``grpvar, term, grp, condval`` and, with ``cond_var``, ``condsd``:
        the conditional standard deviation given the data at theta_hat and beta_hat.
        """
        frames = []
        for k, t in enumerate(self.spec.terms):
            for i, name in enumerate(t.coef_names):
                d = {"grpvar": t.name, "term": name, "grp": list(t.levels), "condval": self._b[k][:, i]}
                if cond_var:
                    d["condsd"] = np.sqrt(self._condcov[k][:, i, i])
                frames.append(pd.DataFrame(d))
        if not frames:  # a model with a serial process only
            return pd.DataFrame(columns=["grpvar", "term", "grp", "condval"] + (["condsd"] if cond_var else []))
        return pd.concat(frames, ignore_index=True)

    def ranef_dict(self) -> dict[str, pd.DataFrame]:
        """BLUPs per term as wide frames (levels x coefficients), like lme4's ``ranef(fit)``."""
        return {
            t.name: pd.DataFrame(b, index=pd.Index(t.levels, name=t.group), columns=list(t.coef_names))
            for t, b in zip(self.spec.terms, self._b)
        }

    def cond_cov(self) -> dict[str, np.ndarray]:
        """Conditional covariance ``(nlevels, q, q)`` of each term's random effects."""
        return {t.name: c for t, c in zip(self.spec.terms, self._condcov)}

    def shrinkage(self) -> pd.DataFrame:
        """The closed-form shrinkage of a random-intercept model.

        For ``y_ij = x_ij'beta + b_i + e_ij`` the BLUP is the mean residual of
        group ``i`` shrunk by ``n_i s_u^2 / (s^2 + n_i s_u^2)``. Returns one row
        per level: ``n``, ``mean_resid`` (mean of ``y - X beta_hat``),
        ``factor`` and ``blup`` (the engine's BLUP, which equals factor x mean_resid).

        Raises
        ------
        DataError
            If the model is not a single random intercept.
        """
        terms = self.spec.terms
        if len(terms) != 1 or terms[0].coef_names != ("(Intercept)",):
            raise DataError(
                "the closed-form shrinkage factor applies to a model with one random intercept (1 | g) only"
            )
        t = terms[0]
        n_i = t.counts()
        s_u2 = float(self.cov_matrices()[t.name][0, 0])
        r = self.spec.y - self.spec.X @ self._beta
        mean_r = np.bincount(t.codes, weights=r, minlength=t.nlevels) / n_i
        factor = n_i * s_u2 / (self.sigma2 + n_i * s_u2)
        return pd.DataFrame(
            {"n": n_i, "mean_resid": mean_r, "factor": factor, "blup": self._b[0][:, 0]},
            index=pd.Index(t.levels, name=t.group),
        )

    # -------------------------------------------------- fitted, residuals
    def _zb(self) -> np.ndarray:
        out = np.zeros(self.spec.n)
        for t, b in zip(self.spec.terms, self._b):
            out += np.einsum("nq,nq->n", t.Zraw, b[t.codes])
        return out

    @cached_property
    def fitted(self) -> np.ndarray:
        """Conditional fitted values ``X beta_hat + Z b_hat``."""
        return self.spec.X @ self._beta + self._zb()

    def residuals(self, scaled: bool = False) -> np.ndarray:
        """Raw residuals ``y - fitted``, or divided by sigma when ``scaled``."""
        r = self.spec.y - self.fitted
        return r / self.sigma if scaled else r

    # ------------------------------------------------ likelihood summaries
    @property
    def loglik(self) -> float:
        """Maximised log-likelihood (restricted for REML), as lme4's ``logLik``."""
        return -0.5 * self.criterion

    @property
    def reml_criterion(self) -> float | None:
        """``-2 * restricted loglik`` for REML fits, else None."""
        return self.criterion if self.reml else None

    @property
    def deviance(self) -> float | None:
        """``-2 * loglik`` for ML fits, else None (lme4 reports the REML criterion for REML fits)."""
        return None if self.reml else self.criterion

    @property
    def aic(self) -> float:
        """``-2 loglik + 2 npar``."""
        return self.criterion + 2 * self.npar

    @property
    def bic(self) -> float:
        """``-2 loglik + log(n) npar``."""
        return self.criterion + np.log(self.spec.n) * self.npar

    def residual_params(self) -> dict[str, Any]:
        """The residual process: ``{"kind": "iid", "sigma2": sigma^2}`` for independent errors."""
        return {"kind": "iid", "sigma2": self.sigma2}

    # ------------------------------------ the likelihood in (theta, sigma)
    def varpar(self) -> np.ndarray:
        """``(theta, sigma)`` at the optimum: lmerTest's variance parameters."""
        return np.r_[self.theta, self.sigma]

    def deviance_varpar(self, varpar: np.ndarray) -> float:
        """Minus twice the (restricted) log-likelihood at ``(theta, sigma)``, beta profiled.

        ``log|L_theta|^2 + r^2(theta)/sigma^2 + n log(2 pi sigma^2)`` for ML; REML adds
        ``log|R_X|^2 - p log(2 pi sigma^2)`` (lmerTest's ``devfun_vp``).
        """
        theta, sigma = np.asarray(varpar[:-1], float), float(varpar[-1])
        try:
            f = self.objective.factor(theta)
        except np.linalg.LinAlgError:
            return np.inf
        s2 = sigma * sigma
        n, p = self.spec.n, self.spec.p
        dev = f.logdet_L + f.pwrss / s2 + n * np.log(2 * np.pi * s2)
        if self.reml:
            dev += f.logdet_RX - p * np.log(2 * np.pi * s2)
        return float(dev)

    def vcov_varpar(self, varpar: np.ndarray) -> np.ndarray:
        """``cov(beta_hat)`` as a function of ``(theta, sigma)``: ``sigma^2 (R_X R_X')^{-1}``."""
        f = self.objective.factor(np.asarray(varpar[:-1], float))
        Rinv = np.linalg.inv(f.RX)
        return float(varpar[-1]) ** 2 * (Rinv.T @ Rinv)

    def score(self) -> np.ndarray:
        """Gradient of the (restricted) log-likelihood in ``(theta, sigma)`` at the estimate: ~0 inside."""
        from ._numderiv import jacobian

        return -0.5 * jacobian(lambda v: np.array(self.deviance_varpar(v)), self.varpar())

    def vc_se(self) -> pd.DataFrame:
        """``varcorr()`` with standard errors from the expected information (see ``_information``)."""
        from ._information import vc_standard_errors

        return vc_standard_errors(self)

    def confint(self, level: float = 0.95, method: str = "profile") -> pd.DataFrame:
        """Profile-likelihood (or Wald) intervals; see :func:`bayeslmm.freq._profile.confint`."""
        from ._profile import confint

        return confint(self, level=level, method=method)

    def satterthwaite(self, L: Any = None) -> pd.DataFrame:
        """t tests of fixed effects or contrasts with Satterthwaite's df (lmerTest's method).

        See :func:`bayeslmm.freq._inference.satterthwaite`.
        """
        from ._inference import satterthwaite

        return satterthwaite(self, L)

    # ------------------------------------------------------------ others
    def refit(self, y: np.ndarray, *, start: np.ndarray | None = None) -> LMMFit:
        """Refit the same model to a new response (same rows and design)."""
        y = np.asarray(y, dtype=float)
        spec = self.spec.with_response(y)
        blocks = self.objective.blocks.with_response(self.spec, y)
        return fit_spec(spec, method=self.method, start=self.theta if start is None else start, blocks=blocks)

    def predict(self, newdata: Any = None, *, re_form: bool = True, allow_new_levels: bool = False,
                se_fit: bool = False) -> Any:
        """Predictions; see :func:`bayeslmm.freq._predict.predict`."""
        from ._predict import predict

        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels, se_fit=se_fit)

    def simulate(self, nsim: int = 1, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Simulate responses from the fitted model; see :func:`bayeslmm.freq._predict.simulate`."""
        from ._predict import simulate

        return simulate(self, nsim=nsim, seed=seed)

    def summary(self) -> Any:
        """lme4-style summary (printable; renders as HTML in notebooks)."""
        from ._summary import Summary

        return Summary(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready results (the CLI's ``--json`` output)."""
        from ._summary import fit_to_dict

        return fit_to_dict(self)

    def __repr__(self) -> str:
        return str(self.summary())

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()
