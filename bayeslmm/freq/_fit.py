"""Fit an LMM by ML or REML and assemble the results (lme4's ``mkMerMod`` stage).

Pipeline (lme4's ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``)::

    ModelSpec --make_engine--> engine (blocks, or the grouped kernel of a residual structure)
              --optimize--> psi_hat --LMMFit--> estimates, BLUPs, summaries

``psi`` stacks ``theta`` (the random-effect factors, lme4's) and the parameters of the residual
structure, if any; the engine gives the criterion and the GLS pieces, the fit is the same type
whatever the engine.
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
from ._objective import GLS, BlockedEngine, Engine, check_method, profiled_criterion, varpar_deviance
from ._optimize import OptimizerRecord, minimize_bobyqa, minimize_gradient


def lmm(
    formula: str,
    data: Any,
    *,
    method: str = "REML",
    residual: str | None = None,
    variance: str | None = None,
    start: np.ndarray | None = None,
) -> LMMFit:
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
        ``None``/``"iid"`` (independent errors) or a residual structure within groups: in time
        ``"ou(t | g)"`` (Ornstein-Uhlenbeck plus a nugget), ``"ar1(t | g)"`` (AR(1) by order of
        ``t``); by visit (a factor) ``"us(visit | id)"``, ``"cs"``, ``"csh"``, ``"ar1h"``, ``"toep"``,
        ``"toeph"``, ``"diag"``, with ``"us(visit | arm/id)"`` for one matrix per arm; spatial
        ``"exp(x + y | g)"``, ``"gau"``, ``"sph"`` (with a nugget; ``, nugget=false`` without; ``| 1``
        one group). See :mod:`bayeslmm.cov`.
    variance
        A variance function of the residual: ``"ident(v)"`` (an sd ratio per level of ``v``),
        ``"power(x)"`` (``|x|^delta``) or ``"exp(x)"`` (``exp(delta x)``), nlme's ``varIdent``,
        ``varPower``, ``varExp``; with or without a residual structure.
    start
        Starting value of theta (default: the best of a few scalings of lme4's start).

    Returns
    -------
    LMMFit
    """
    method = check_method(method)
    spec = build_spec(formula, data, residual=residual, variance=variance)
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


def fit_spec(
    spec: ModelSpec, *, method: str = "REML", start: np.ndarray | None = None, blocks: CrossProducts | None = None
) -> LMMFit:
    """Fit a model given its :class:`ModelSpec` (the engine behind :func:`lmm`)."""
    method = check_method(method)
    if not spec.terms and spec.residual is None:
        raise DataError(
            "the formula has no random-effect term such as (1 | group) and no residual process; "
            "a linear mixed model needs at least one"
        )
    if spec.n <= spec.p:
        raise DataError(f"{spec.n} observations cannot estimate {spec.p} fixed effects and a variance")
    t0 = time.perf_counter()
    with one_blas_thread(len(spec.terms) > 1 or spec.residual is not None):
        engine = make_engine(spec, method, blocks)
        rec = optimize(engine, start)
        fit = LMMFit(spec, method, engine, rec, 0.0)
    fit.fit_seconds = time.perf_counter() - t0
    return fit


def make_engine(spec: ModelSpec, method: str, blocks: CrossProducts | None = None) -> Engine:
    """The engine of ``spec``: blocked Cholesky for independent errors, grouped for a residual structure."""
    reml = method == "REML"
    if spec.residual is not None:
        from ._grouped import GroupedEngine

        return GroupedEngine(spec, reml)
    return BlockedEngine(CrossProducts.from_spec(spec) if blocks is None else blocks, reml, spec)


def optimize(engine: Engine, start: np.ndarray | None) -> OptimizerRecord:
    """Minimise the criterion over the working ``psi`` and report the original ``psi``.

    The optimiser sees the criterion of the working columns (:mod:`bayeslmm.linalg._basis`), so
    that its path does not depend on shifts or units of the covariates; ``theta`` and
    ``theta_start`` of the record (the whole ``psi``) are mapped back to the original columns.
    ``gradient`` and ``hessian`` stay in the working coordinates. Without a given ``start`` the
    best of the engine's candidates (one evaluation each) starts BOBYQA.
    """
    from dataclasses import replace

    lo, hi = engine.bounds()
    extra = 0
    cands = engine.start_candidates()
    if start is not None:
        start_w = engine.to_working(np.asarray(start, dtype=float))
    elif cands:
        start_w = cands[int(np.argmin([engine.working(c) for c in cands]))]
        extra = len(cands)
    else:
        start_w = None
    upper = hi if np.any(np.isfinite(hi)) else None
    fg = engine.working_gradient
    if fg is not None and start_w is not None:
        rec = minimize_gradient(fg, lo, hi, start_w, names=engine.names())
    else:
        rec = minimize_bobyqa(engine.working, lo, start_w, upper=upper, names=engine.names())
    return replace(
        rec, x=engine.from_working(rec.x), x_start=engine.from_working(rec.x_start), n_evals=rec.n_evals + extra
    )


def one_blas_thread(dense_schur: bool) -> Any:
    """One BLAS thread while a model with a dense Schur complement (several terms) or a residual
    structure is fitted.

    Each evaluation then alternates NumPy work with a LAPACK Cholesky from SciPy's own
    OpenBLAS; two OpenBLAS pools that wake and spin between the calls were seen to make an
    evaluation 10-40x slower on this 2-core machine (a structure's per-group Cholesky factors:
    6x, 46 ms against 7.6 ms for Wheat2's 224 x 224 field under load). A single-term model makes no
    large BLAS call, and skipping threadpoolctl there keeps the command line's start-up short.
    """
    if not dense_schur:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class LMMFit:
    """A fitted linear mixed model (the frequentist path), whatever the engine.

    Composed of the specification (``spec``), the engine (``objective``: the criterion and its
    pieces, see :mod:`._objective`) and the optimiser's record (``optimizer``). Tidy pandas
    outputs mirror lme4's accessors (``fixef``, ``vcov``, ``VarCorr``, ``ranef``, ``fitted``,
    ``residuals``, ``logLik``...). A specification without rows (a fit from sufficient
    statistics, :mod:`bayeslmm.suff`) gives everything the cross-products determine; what needs the
    rows says so, with what to do.

    ``psi`` is the optimiser's vector: ``theta`` (the random-effect factors, lme4's), then the
    residual structure's parameters. ``scale2`` is the profiled scale ``s^2`` (``V = s^2 V_rel``);
    ``sigma2`` the variance of the "Residual" row (``s^2`` except for structures with a nugget).
    """

    #: seconds of each pass over the data, for fits from sufficient statistics made with Dask
    timings: dict[str, float]

    def __init__(
        self, spec: ModelSpec, method: str, objective: Engine, record: OptimizerRecord, fit_seconds: float
    ) -> None:
        self.timings = {}
        self.spec = spec
        self.method = method
        self.objective = objective
        self.optimizer = record
        self.fit_seconds = fit_seconds
        self.psi = record.x.copy()
        self.psi.setflags(write=False)
        self.theta = self.psi[: objective.ntheta]
        gls = objective.gls(self.psi)
        if gls is None:
            raise DataError("the marginal covariance is not positive definite at the estimate")
        self._gls: GLS = gls
        self._beta = gls.beta
        n, p = objective.n, objective.p
        self.scale2 = gls.pieces.r2 / (n - p if self.reml else n)
        self.sigma2 = objective.residual_variance(self.psi, self.scale2)
        self.criterion = profiled_criterion(gls.pieces, n, p, self.reml)

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
        """Residual standard deviation (of the "Residual" row)."""
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
        """Number of parameters: fixed effects, ``psi`` and the scale."""
        return self.spec.p + self.psi.size + 1

    def _need_rows(self, what: str) -> None:
        self.spec.require_rows(what)

    # ------------------------------------------------------- fixed effects
    @property
    def fixef(self) -> pd.Series:
        """Fixed-effect estimates ``beta_hat`` (GLS at the estimate)."""
        return pd.Series(self._beta, index=list(self.spec.fixef_names), name="Estimate")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """``cov(beta_hat) = s^2 (X'V_rel^{-1}X)^{-1}``."""
        basis, V = self.vcov_working()
        names = list(self.spec.fixef_names)
        return pd.DataFrame(basis.cov(V) if names else np.zeros((0, 0)), index=names, columns=names)

    def vcov_working(self) -> tuple[Any, np.ndarray]:
        """``(basis, cov(beta_w))``: the covariance of the working coefficients (:mod:`bayeslmm.linalg._basis`).

        ``x'cov(beta)x = x_w'cov(beta_w)x_w`` with ``x_w`` the shifted row: computed so, the SE of a
        prediction at covariates carrying a large constant loses no digits.
        """
        return self._gls.basis, self.scale2 * self._gls.cov_w

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
    @cached_property
    def _Ts(self) -> list[np.ndarray]:
        return self.objective.factors(self.psi)

    def cov_matrices(self) -> dict[str, np.ndarray]:
        """Covariance matrix ``D_k = s^2 T_k T_k'`` of each term's random effects."""
        return {t.name: self.scale2 * (T @ T.T) for t, T in zip(self.spec.terms, self._Ts)}

    def varcorr(self) -> pd.DataFrame:
        """Variance components as R's ``as.data.frame(VarCorr(fit))``.

        Columns ``grp, var1, var2, vcov, sdcor``: for each term the variances
        (``var2`` None, ``sdcor`` the sd), then the covariances (``sdcor`` the
        correlation), then the residual row (``grp`` = "Residual").
        """
        rows: list[tuple[str, str | None, str | None, float, float]] = []
        for t, D in zip(self.spec.terms, self.cov_matrices().values()):
            cov = t.covariance
            for (v1, v2), (v, sc) in zip(cov.component_names(), cov.component_values(D)):
                rows.append((t.name, v1, v2, v, sc))
        rows.append(("Residual", None, None, self.sigma2, self.sigma))
        cols = list(zip(*rows))
        return pd.DataFrame(
            {
                "grp": pd.Series(cols[0], dtype=object),
                "var1": pd.Series(cols[1], dtype=object),  # None where R has NA
                "var2": pd.Series(cols[2], dtype=object),
                "vcov": np.array(cols[3], dtype=float),
                "sdcor": np.array(cols[4], dtype=float),
            }
        )

    # ------------------------------------------------------ random effects
    @cached_property
    def _modes(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return self.objective.modes(self._gls)

    @property
    def _b(self) -> list[np.ndarray]:
        """Per term ``(nlevels, q)`` BLUPs."""
        return self._modes[0]

    @cached_property
    def _condcov(self) -> list[np.ndarray]:
        return [self.scale2 * c for c in self._modes[1]]

    def ranef(self, cond_var: bool = True) -> pd.DataFrame:
        """BLUPs (conditional modes) as R's ``as.data.frame(ranef(fit, condVar = TRUE))``.

        Columns ``grpvar, term, grp, condval`` and, with ``cond_var``, ``condsd``:
        the conditional standard deviation given the data at the estimates of psi and beta.
        """
        frames = []
        for k, t in enumerate(self.spec.terms):
            for i, name in enumerate(t.coef_names):
                d = {"grpvar": t.name, "term": name, "grp": list(t.levels), "condval": self._b[k][:, i]}
                if cond_var:
                    d["condsd"] = np.sqrt(self._condcov[k][:, i, i])
                frames.append(pd.DataFrame(d))
        if not frames:  # a model with a residual structure only
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
            If the model is not a single random intercept with independent errors, or has no rows.
        """
        self._need_rows("the shrinkage table needs the mean residual per group")
        terms = self.spec.terms
        if len(terms) != 1 or terms[0].coef_names != ("(Intercept)",) or self.spec.residual is not None:
            raise DataError(
                "the closed-form shrinkage factor applies to a model with one random intercept (1 | g) and "
                "independent errors only"
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
        self._need_rows("fitted values need the rows")
        return self.spec.X @ self._beta + self._zb()

    def residuals(self, scaled: bool = False) -> np.ndarray:
        """Raw residuals ``y - fitted``; with ``scaled``, divided by sigma (independent errors) or the
        normalized residuals ``V^{-1/2}(y - X beta_hat)`` of a residual structure (nlme's ``"normalized"``),
        which are independent N(0, 1) under the model, unlike raw residuals divided by an sd."""
        self._need_rows("residuals need the rows")
        return self.objective.scaled_residuals(self) if scaled else self.spec.y - self.fitted

    def process(self, newdata: Any = None) -> pd.DataFrame:
        """Conditional mean and sd of the residual process at observed or new times.

        For a Markov structure (``ou``, ``ar1``) by Kalman smoothing (linear in the group size),
        otherwise densely per group; new rows are times without an observation. Conditional on
        ``beta_hat``, as lme4's ``condVar``.

        Parameters
        ----------
        newdata
            Rows with the time and grouping columns (and the random-effect columns, if
            any); ``None`` for the rows of the fit. Rows of groups not in the fit get the
            process's marginal mean 0 and sd.

        Returns
        -------
        DataFrame with ``process`` (``E(w | y)``), ``process_sd``, ``random`` (``E(z'b + w | y)``,
        what :meth:`predict` adds to ``X beta_hat``) and ``random_sd``.
        """
        self._need_rows("the conditional process needs the rows")
        return self.objective.process(self, newdata)

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
        """The residual structure: ``{"kind": "iid", "sigma2": sigma^2}`` for independent errors, else its
        natural parameters (``{"kind": "ou", "process_var", "rho", "nugget"}``, ``{"kind": "ar1", "phi",
        "sigma2"}``, ``{"kind": "cs", "rho", "sigma2"}``, ...)."""
        return self.objective.residual_params(self.psi, self.scale2)

    def residual_report(self) -> dict[str, Any]:
        """The residual structure's estimates in the parameterisation of the docs (``fit --json``'s
        ``residual``): ``kind`` and, for ``us`` and the other structures by visit, ``levels``, ``cov``,
        ``sd``, ``corr``; spatial ``range``, ``nugget``, ``sill``; a structure per stratum ``by`` and
        ``strata`` (one report per level); see :func:`bayeslmm.freq._structures.residual_report`."""
        from ._structures import residual_report

        return residual_report(self)

    def variance_report(self) -> dict[str, Any] | None:
        """The variance function's estimates (``fit --json``'s ``variance``): ``ratios`` per level for
        ``ident(v)``, ``delta`` for ``power(x)`` and ``exp(x)``; None without a variance function."""
        from ._structures import variance_report

        return variance_report(self)

    def marginal_cov(
        self, group: str | None = None, stratum: str | None = None, max_rows: int | None = None
    ) -> pd.DataFrame:
        """``V_i = Z_i D Z_i' + R_i`` of one subject, rows and columns labelled (visits, times or coordinates).

        By default, for a structure by visit a subject with every visit (all visit levels in order), otherwise
        the group with the most observations; ``group`` picks one, ``stratum`` a level of the strata of
        ``us(visit | arm/id)``, ``max_rows`` the first rows of a large group. ``attrs["group"]`` says which
        subject (None: a complete subject that the data lack). See :func:`bayeslmm.freq._structures.marginal_cov`.
        """
        from ._structures import marginal_cov

        return marginal_cov(self, group, stratum, max_rows)

    # ------------------------------------ the likelihood in (psi, s)
    def varpar(self) -> np.ndarray:
        """``(psi, s)`` at the optimum: lmerTest's variance parameters (``s = sigma`` for independent errors)."""
        return np.r_[self.psi, np.sqrt(self.scale2)]

    def deviance_varpar(self, varpar: np.ndarray) -> float:
        """Minus twice the (restricted) log-likelihood at ``(psi, s)``, beta profiled (lmerTest's ``devfun_vp``)."""
        s = float(varpar[-1])
        pc = self.objective.pieces(np.asarray(varpar[:-1], float))
        if pc is None:
            return np.inf
        return varpar_deviance(pc, s * s, self.objective.n, self.objective.p, self.reml)

    def vcov_varpar(self, varpar: np.ndarray) -> np.ndarray:
        """``cov(beta_hat) = s^2 (X'V_rel^{-1}X)^{-1}`` as a function of ``(psi, s)``."""
        out = self.objective.cov_working(np.asarray(varpar[:-1], float))
        if out is None:
            raise np.linalg.LinAlgError("the marginal covariance is not positive definite")
        basis, cov_w = out
        return basis.cov(float(varpar[-1]) ** 2 * cov_w)

    def score(self) -> np.ndarray:
        """Gradient of the (restricted) log-likelihood in ``(psi, s)`` at the estimate: ~0 inside."""
        from ._numderiv import jacobian

        return -0.5 * jacobian(lambda v: np.array(self.deviance_varpar(v)), self.varpar())

    def vc_se(self) -> pd.DataFrame:
        """``varcorr()`` with standard errors from the expected information (see ``_information``)."""
        from ._information import vc_standard_errors

        return vc_standard_errors(self)

    def confint(self, level: float = 0.95, method: str | None = None) -> pd.DataFrame:
        """Profile-likelihood (default) or Wald intervals; see :func:`bayeslmm.freq._profile.confint`.

        Without rows (a fit from sufficient statistics) the default is ``"wald"``: profiles refit the rows.
        """
        from ._profile import confint

        if method is None:
            method = "profile" if self.spec.has_rows else "wald"
        if method != "wald":
            self._need_rows("profile intervals refit the model to the rows; use method='wald'")
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
        self._need_rows("a refit to a new response needs the design rows")
        y = np.asarray(y, dtype=float)
        engine = self.objective.with_response(y)
        t0 = time.perf_counter()
        with one_blas_thread(len(self.spec.terms) > 1 or self.spec.residual is not None):
            rec = optimize(engine, self.psi if start is None else start)
            fit = LMMFit(engine.spec, self.method, engine, rec, 0.0)
        fit.fit_seconds = time.perf_counter() - t0
        return fit

    def predict(
        self, newdata: Any = None, *, re_form: bool = True, allow_new_levels: bool = False, se_fit: bool = False
    ) -> Any:
        """Predictions; see :func:`bayeslmm.freq._predict.predict` (and :meth:`process` for a residual
        structure, whose conditional mean at the new rows the prediction includes)."""
        if newdata is None:
            self._need_rows("predict() needs newdata")
        return self.objective.predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels, se_fit=se_fit)

    def simulate(self, nsim: int = 1, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Simulate responses ``X beta_hat + Z b* + e*``: new random effects and residuals
        (``e* ~ N(0, R)`` of the residual structure), as lme4's ``simulate(fit)``.

        Returns
        -------
        ``(n, nsim)`` array.
        """
        if int(nsim) < 1:
            raise DataError("nsim must be a positive integer")
        self._need_rows("simulation needs the design rows")
        rng = np.random.default_rng(seed)
        spec = self.spec
        mu = spec.X @ self._beta
        s = np.sqrt(self.scale2)
        out = np.empty((spec.n, int(nsim)))
        for k in range(int(nsim)):
            y = mu + self.objective.draw_residual(self.psi, self.scale2, rng)
            for t, T in zip(spec.terms, self._Ts):
                b = s * rng.standard_normal((t.nlevels, t.q)) @ T.T
                y += np.einsum("nq,nq->n", t.Zraw, b[t.codes])
            out[:, k] = y
        return out

    def fitted_frame(self, data: Any) -> pd.DataFrame:
        """Fitted values and residuals of the rows of ``data`` (for a fit from sufficient statistics:
        a chunk of the fitted data); see :func:`bayeslmm.suff.fitted_frame`."""
        source = self.spec.source
        if source is None:
            raise DataError(
                "fitted_frame() is for fits from sufficient statistics; use fit.fitted and fit.residuals() here"
            )
        return source.fitted_frame(self, data)

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
