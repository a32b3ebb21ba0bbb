"""ML/REML with a serial residual process: OU plus nugget, or AR(1).

Marginal model within group ``i`` (all random-effect terms on the process's factor)::

    V_i = s^2 (Z_i D_rel Z_i' + var_w P_i + kappa I)

* ``ou``:  ``P_i[j, k] = rho^|t_ij - t_ik|``, ``var_w = 1 - nu``, ``kappa = nu``: ``s^2`` is the
  within-group variance, split into the process (``process_var = s^2 (1 - nu)``) and the
  nugget (``nugget = s^2 nu``); nlme's ``corExp(nugget = TRUE)`` with
  ``rho = exp(-1 / range)`` and ``nu`` its nugget.
* ``ar1``: ``P_i[j, k] = phi^|j - k|`` by order of time, ``var_w = 1``, ``kappa = 0``:
  ``s^2`` is nlme's ``sigma^2`` with ``corAR1``.

``theta`` = (lower triangles of the relative factors ``T_k``, ``D_rel = blockdiag(T_k T_k')``;
then ``tau, nu`` (``rho = exp(-tau / median gap)``) or ``phi``). ``beta`` and ``s^2`` are profiled
out exactly as in the iid engine, from ``log|V_rel|`` and the cross-products
``[X_w y_w]'V_rel^{-1}[X_w y_w]`` of the working columns (:mod:`bayeslmm.linalg._basis`: ``X``'s
covariates centred and ``y`` shifted, so that a large constant in the data costs no digits). Each
evaluation whitens ``[Z X y]`` by the process alone (AR(1) in closed form, OU + nugget by the
scalar Kalman filter) and adds the random effects by Woodbury's identity, group by group
(:class:`bayeslmm.linalg._kalman.ProcessGram`): linear in the group sizes, a few dozen NumPy
calls per evaluation. The full Kalman filter (state ``(w, b)``) gives the normalized residuals.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..linalg import lambda_blocks
from ..linalg._basis import FixedBasis, TermBasis
from ..linalg._kalman import FilterResult, GramResult, ProcessGram, SerialLayout, kalman_smooth, kalman_whiten
from ..spec import ModelSpec
from ._fit import LMMFit
from ._optimize import minimize_bobyqa

#: AR(1) correlation is kept inside (-PHI_MAX, PHI_MAX).
PHI_MAX = 1 - 1e-8
#: Upper bound of tau = -gap log(rho): a correlation of exp(-50) over the median gap is rho = 0 in effect.
TAU_MAX = 50.0


def _tril_index(qs: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column in ``blockdiag(T_k)`` of each random-effect entry of theta (lme4's order)."""
    ri, ci, off = [], [], 0
    for q in qs:
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))  # column-major order of the lower triangle
        ri.append(rows[order] + off)
        ci.append(cols[order] + off)
        off += q
    return (np.concatenate(ri).astype(np.int64), np.concatenate(ci).astype(np.int64)) if qs else (
        np.zeros(0, np.int64), np.zeros(0, np.int64))


class SerialObjective:
    """``theta -> d(theta)``, minus twice the profiled (restricted) log-likelihood.

    The data enter in working coordinates (:mod:`bayeslmm.linalg._basis`): ``[X_w y_w]`` with
    the non-intercept columns of ``X`` centred and ``y`` shifted (when ``X`` has an intercept),
    and each random-effect term's columns ``Z_w = Z A_z`` (a ``q > 1`` term's covariates centred
    on its intercept, every column scaled). ``theta`` is in the original coordinates (lme4's
    ``T_k``, ``D_rel = blockdiag(T_k T_k')``); :meth:`working` takes the working one
    (``T_w = A_z^-1 T``, lower triangular), which the optimiser uses, so that neither shifts nor
    units of the data change its path. ``det A = 1``: the criterion needs no correction.
    """

    def __init__(self, spec: ModelSpec, reml: bool, y: np.ndarray | None = None) -> None:
        res = spec.residual
        for t in spec.terms:
            if t.factors != res.factors:
                raise DataError(
                    f"random-effect term ({t.lhs} | {t.group}) with residual process {res.kind}({res.time} | "
                    f"{res.group}): a serial process combines with random-effect terms of its own grouping "
                    f"factor {res.group!r} only (crossed or nested terms are not supported with it yet)"
                )
        self.spec = spec
        self.reml = reml
        self.kind = res.kind
        self.qs = tuple(t.q for t in spec.terms)
        self.nre = spec.ntheta
        yy = spec.y if y is None else np.asarray(y, dtype=float)
        #: original random-effect columns (``D_rel`` of :meth:`unpack` acts on these)
        self.Z = np.hstack([t.Zraw for t in spec.terms]) if spec.terms else None
        self.basis = FixedBasis.from_rows(spec.X, yy)
        self.term_bases = [TermBasis.from_rows(t.Zraw) for t in spec.terms]
        qt = sum(self.qs)
        self._Ainv = np.zeros((qt, qt))  # blockdiag(A_z^-1): T_w = Ainv T, Z_w = Z Ainv^-1
        i = 0
        for b in self.term_bases:
            self._Ainv[i : i + b.q, i : i + b.q] = b.Ainv
            i += b.q
        self._Az = np.linalg.inv(self._Ainv) if qt else self._Ainv
        self._ti, self._tj = _tril_index(self.qs)
        self.layout = SerialLayout.build(res.codes, res.t, len(res.levels), by_order=(res.kind == "ar1"))
        gaps = self.layout.gap_all[self.layout.bounds[1]:] if self.layout.bounds.size > 1 else np.zeros(0)
        pos = gaps[gaps > 0]
        #: the OU decay is optimised as tau = -gap * log(rho): the log-correlation over the median gap
        self.gap = float(np.median(pos)) if pos.size else 1.0
        # The kernel keeps the only copy of the working columns [Z_w X_w y_w] (FixedBasis.apply and
        # TermBasis.apply), in its row order, written column by column (see :attr:`Y`, :attr:`Zw`).
        closed = res.kind == "ar1"
        rows = ProcessGram.row_order(self.layout, closed)
        p = spec.p
        U = np.empty((spec.n, qt + p + 1))
        i = 0
        for b, t in zip(self.term_bases, spec.terms):
            U[:, i : i + b.q] = b.apply(t.Zraw[rows])
            i += b.q
        shift = self.basis.intercept is not None
        for j in range(p):
            U[:, qt + j] = spec.X[rows, j]
            if shift:
                U[:, qt + j] -= self.basis.centres[j]
        U[:, qt + p] = self.basis.apply_y(yy[rows])
        self._gram = ProcessGram(self.layout, None, None, closed_form=closed, U=U, q=qt)

    @property
    def Y(self) -> np.ndarray:
        """Working ``[X_w y_w]``, rows in the data's order (a new array)."""
        return self._gram.columns("Y")

    @property
    def Zw(self) -> np.ndarray | None:
        """Working random-effect columns ``Z_w = Z A_z`` (a new array), or None."""
        return self._gram.columns("Z")

    # -- parameters ---------------------------------------------------------
    def names(self) -> list[str]:
        """Names of theta."""
        return self.spec.theta_names() + (["tau (-log rho per median gap)", "nu"] if self.kind == "ou" else ["phi"])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of theta: ``tau = 0`` is ``rho = 1``, ``TAU_MAX`` is ``rho`` ~ 0; ``nu`` in [0, 1]."""
        lo = self.spec.theta_lower()
        if self.kind == "ou":
            return np.r_[lo, 0.0, 0.0], np.r_[np.full(self.nre, np.inf), TAU_MAX, 1.0]
        return np.r_[lo, -PHI_MAX], np.r_[np.full(self.nre, np.inf), PHI_MAX]

    def unpack(self, theta: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None, float, float, float]:
        """``(T_k list, D_rel, decay, var_w, kappa)`` at theta (original coordinates)."""
        theta = np.asarray(theta, dtype=float)
        Ts = lambda_blocks(theta[: self.nre], self.qs)
        D = None
        if Ts:
            q = sum(self.qs)
            D = np.zeros((q, q))
            i = 0
            for T in Ts:
                D[i : i + T.shape[0], i : i + T.shape[0]] = T @ T.T
                i += T.shape[0]
        return (Ts, D, *self._process(theta))

    def _process(self, theta: np.ndarray) -> tuple[float, float, float]:
        """``(decay, var_w, kappa)`` at theta."""
        if self.kind == "ou":
            tau, nu = float(theta[self.nre]), float(theta[self.nre + 1])
            return float(np.exp(-tau / self.gap)), 1.0 - nu, nu
        return float(theta[self.nre]), 1.0, 0.0

    def _factor(self, theta: np.ndarray, working: bool) -> np.ndarray | None:
        """``(q, q)`` factor ``T`` of the working ``D_w = Ainv D Ainv'`` (block diagonal)."""
        if not self.nre:
            return None
        qt = self._Ainv.shape[0]
        T = np.zeros((qt, qt))
        T[self._ti, self._tj] = theta[: self.nre]
        return T if working else self._Ainv @ T

    def theta_to_working(self, theta: np.ndarray) -> np.ndarray:
        """Working theta (``T_w`` lower triangular with ``T_w T_w' = A_z^-1 T T' A_z^-T``; process unchanged)."""
        theta = np.array(theta, dtype=float)
        Ts = lambda_blocks(theta[: self.nre], self.qs)
        Tw = [b.to_working(T) for b, T in zip(self.term_bases, Ts)]
        theta[: self.nre] = self._pack(Tw)
        return theta

    def theta_from_working(self, theta_w: np.ndarray) -> np.ndarray:
        """Original theta from the working one."""
        theta = np.array(theta_w, dtype=float)
        Tw = lambda_blocks(theta[: self.nre], self.qs)
        theta[: self.nre] = self._pack([b.from_working(T) for b, T in zip(self.term_bases, Tw)])
        return theta

    def _pack(self, Ts: list[np.ndarray]) -> np.ndarray:
        qt = self._Ainv.shape[0]
        full = np.zeros((qt, qt))
        i = 0
        for T in Ts:
            full[i : i + T.shape[0], i : i + T.shape[0]] = T
            i += T.shape[0]
        return full[self._ti, self._tj]

    def start_candidates(self) -> list[np.ndarray]:
        """A few starting points (working theta): RE factors 1; OU correlation at the median gap 0.3, 0.7
        or 0.95 with nugget share 0.2 or 0.5; AR(1) phi 0, 0.4, 0.8 or 0.95.

        The best of them (one evaluation each) starts BOBYQA. phi = 0.95 is there for slowly varying
        series (growth curves such as BodyWeight), where a random intercept and a phi near 1 are
        nearly confounded: from phi <= 0.8 BOBYQA crawls along that valley (and on BodyWeight with a
        random slope stopped 3.7 short of the optimum).
        """
        re0 = np.where(np.isfinite(self.spec.theta_lower()), 1.0, 0.0)
        if self.kind == "ou":
            return [np.r_[re0, -np.log(c), nu] for c in (0.3, 0.7, 0.95) for nu in (0.2, 0.5)]
        return [np.r_[re0, phi] for phi in (0.0, 0.4, 0.8, 0.95)]

    # -- evaluation ---------------------------------------------------------
    def gram(self, theta: np.ndarray, working: bool = False) -> GramResult:
        """``log|V_rel|`` and the working cross-products ``[X_w y_w]'V_rel^{-1}[X_w y_w]`` at theta."""
        theta = np.asarray(theta, dtype=float)
        return self._gram(self._factor(theta, working), *self._process(theta))

    def filter(self, theta: np.ndarray, working: bool = False) -> FilterResult:
        """Kalman filter at theta: whitened ``[X y]`` (``working``: ``[X_w y_w]``), ``log|V_rel|``, BLUP states.

        ``a_b``/``P_b`` are those of ``b`` in the original coordinates (of the working ``b_w`` with
        ``working``); the columns of ``white`` and ``a_b`` follow ``[X y]``.
        """
        theta = np.asarray(theta, dtype=float)
        T = self._factor(theta, False)
        D = None if T is None else T @ T.T
        g = self._gram
        fr = kalman_whiten(self.layout, g.columns("Y"), g.columns("Z"), D, *self._process(theta))
        if working or not np.isfinite(fr.logdet):
            return fr
        Minv = self._to_original()
        a_b, P_b = fr.a_b, fr.P_b
        if a_b is not None:
            a_b = self._Az @ a_b @ Minv
            P_b = self._Az @ P_b @ self._Az.T
        return FilterResult(fr.white @ Minv, fr.logdet, a_b, P_b)

    def _to_original(self) -> np.ndarray:
        """``(c, c)`` map of columns: ``[X y] = [X_w y_w] M``."""
        p = self.spec.p
        M = np.eye(p + 1)
        b = self.basis
        if b.intercept is not None:
            M[b.intercept, :p] += b.centres
            M[b.intercept, p] = b.shift_y
        return M

    def profile(self, g: GramResult) -> tuple[np.ndarray, np.ndarray, float, float]:
        """GLS from the working cross-products: ``beta_w``, ``X_w'V_rel^-1 X_w``, ``r^2`` and the criterion."""
        p = self.spec.p
        L = np.linalg.cholesky(g.C)
        r2 = float(L[p, p] ** 2)
        L11 = L[:p, :p]
        beta = np.linalg.solve(L11.T, L[p, :p]) if p else np.zeros(0)
        return beta, g.C[:p, :p], r2, self._criterion(g.logdet, L)

    def _criterion(self, logdet: float, L: np.ndarray) -> float:
        """The criterion from ``log|V_rel|`` and the Cholesky factor of the working cross-products."""
        n, p = self.spec.n, self.spec.p
        d = np.diagonal(L)
        r2 = float(d[p]) ** 2
        if not (r2 > 0.0 and np.isfinite(r2)):
            return np.inf
        if self.reml:
            nmp = n - p
            return float(logdet + 2.0 * float(np.log(d[:p]).sum()) + nmp * (1.0 + math.log(2.0 * math.pi * r2 / nmp)))
        return float(logdet + n * (1.0 + math.log(2.0 * math.pi * r2 / n)))

    def _evaluate(self, theta: np.ndarray, working: bool) -> float:
        theta = np.asarray(theta, dtype=float)
        g = self._gram(self._factor(theta, working), *self._process(theta))
        if not np.isfinite(g.logdet):
            return np.inf
        try:
            L = np.linalg.cholesky(g.C)
        except np.linalg.LinAlgError:
            return np.inf
        val = self._criterion(g.logdet, L)
        return val if np.isfinite(val) else np.inf

    def __call__(self, theta: np.ndarray) -> float:
        return self._evaluate(theta, False)

    def working(self, theta_w: np.ndarray) -> float:
        """The criterion at the working theta (what the optimiser sees)."""
        return self._evaluate(theta_w, True)


def fit_serial(spec: ModelSpec, method: str, start: np.ndarray | None = None, y: np.ndarray | None = None
               ) -> SerialFit:
    """Fit a model whose ``spec.residual`` is a serial process."""
    t0 = time.perf_counter()
    obj = SerialObjective(spec, reml=(method == "REML"), y=y)
    lo, hi = obj.bounds()
    extra = 0
    if start is None:
        cands = obj.start_candidates()
        start_w = cands[int(np.argmin([obj.working(c) for c in cands]))]
        extra = len(cands)
    else:
        start_w = obj.theta_to_working(np.asarray(start, dtype=float))
    rec = minimize_bobyqa(obj.working, lo, start_w, upper=hi, names=obj.names())
    rec = replace(rec, theta=obj.theta_from_working(rec.theta), theta_start=obj.theta_from_working(rec.theta_start),
                  n_evals=rec.n_evals + extra)
    return SerialFit(spec if y is None else spec.with_response(y), method, obj, rec, time.perf_counter() - t0)


class SerialFit(LMMFit):
    """A fitted LMM with a serial residual process (same accessors as :class:`LMMFit`).

    In :meth:`varcorr` the "Residual" row is the measurement error: the nugget for
    ``ou``, the AR(1) error variance for ``ar1``; the process parameters are in
    :meth:`residual_params`.
    """

    objective: SerialObjective

    def _estimate(self) -> None:
        """beta, the scale ``s^2``, the process and the criterion at theta_hat (working coordinates, mapped back)."""
        spec, method, objective = self.spec, self.method, self.objective
        g = objective.gram(self.theta)
        beta_w, XtX_w, r2, crit = objective.profile(g)
        self._gram = g
        self._beta_w = beta_w
        self._XtX_w = XtX_w  # X_w'V_rel^-1 X_w; X'V_rel^-1 X = A^-T (.) A^-1
        self._beta = objective.basis.beta(beta_w)
        n, p = spec.n, spec.p
        self.scale2 = r2 / (n - p if method == "REML" else n)  # s^2
        self.criterion = crit
        self._Ts, _, self._decay, self._var_w, self._kappa = objective.unpack(self.theta)
        self.sigma2 = self.scale2 * (self._kappa if objective.kind == "ou" else 1.0)

    @property
    def npar(self) -> int:
        """Fixed effects, theta (random effects and process) and the scale ``s^2``."""
        return self.spec.p + self.theta.size + 1

    def residual_params(self) -> dict[str, Any]:
        """The process: ``{"kind": "ou", "process_var", "rho", "nugget"}`` or ``{"kind": "ar1", "phi", "sigma2"}``."""
        if self.objective.kind == "ou":
            return {"kind": "ou", "process_var": self.scale2 * self._var_w, "rho": self._decay,
                    "nugget": self.scale2 * self._kappa}
        return {"kind": "ar1", "phi": self._decay, "sigma2": self.scale2}

    @cached_property
    def _filter(self) -> FilterResult:
        """The Kalman filter at theta_hat on the working columns (normalized residuals)."""
        return self.objective.filter(self.theta, working=True)

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """``cov(beta_hat) = s^2 (X'V_rel^{-1}X)^{-1} = A cov(beta_w) A'``."""
        names = list(self.spec.fixef_names)
        V = self.objective.basis.cov(self.scale2 * np.linalg.inv(self._XtX_w)) if names else np.zeros((0, 0))
        return pd.DataFrame(V, index=names, columns=names)

    def cov_matrices(self) -> dict[str, np.ndarray]:
        """Covariance ``s^2 T_k T_k'`` of each term's random effects."""
        return {t.name: self.scale2 * (T @ T.T) for t, T in zip(self.spec.terms, self._Ts)}

    @cached_property
    def _group_slot(self) -> np.ndarray:
        """Position of each level (level order) in the filter's group order."""
        slot = np.empty(len(self.spec.residual.levels), dtype=np.int64)
        slot[self.objective.layout.group_order] = np.arange(self.objective.layout.group_order.size)
        return slot

    @cached_property
    def _blup_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """``E(b_w | y)`` per working column ``(G, q, c)`` and ``cov(b_w | y) / s^2``, level order."""
        a, P = self._gram.blup()
        return a[self._group_slot], P[self._group_slot]

    @cached_property
    def _b(self) -> list[np.ndarray]:
        """BLUPs per term: ``b = A_z b_w`` with ``b_w = D_w Z_w'V^-1 (y_w - X_w beta_w)`` (Woodbury pieces)."""
        if not self.spec.terms:
            return []
        a_b = self._blup_parts[0]  # (G, q, c) in level order
        p = self.spec.p
        b = (a_b[:, :, p] - a_b[:, :, :p] @ self._beta_w) @ self.objective._Az.T  # (G, q)
        out, i = [], 0
        for t in self.spec.terms:
            out.append(b[:, i : i + t.q])
            i += t.q
        return out

    @cached_property
    def _condcov(self) -> list[np.ndarray]:
        if not self.spec.terms:
            return []
        Az = self.objective._Az
        P = self.scale2 * (Az @ self._blup_parts[1] @ Az.T)
        out, i = [], 0
        for t in self.spec.terms:
            out.append(P[:, i : i + t.q, i : i + t.q])
            i += t.q
        return out

    def varpar(self) -> np.ndarray:
        """``(theta, s)``: covariance and process parameters, then the scale ``s``."""
        return np.r_[self.theta, np.sqrt(self.scale2)]

    def deviance_varpar(self, varpar: np.ndarray) -> float:
        """Minus twice the (restricted) log-likelihood at ``(theta, s)`` with beta profiled."""
        theta, s = np.asarray(varpar[:-1], float), float(varpar[-1])
        g = self.objective.gram(theta)
        if not np.isfinite(g.logdet):
            return np.inf
        try:
            _, XtX_w, r2, _ = self.objective.profile(g)
        except np.linalg.LinAlgError:
            return np.inf
        s2 = s * s
        n, p = self.spec.n, self.spec.p
        dev = g.logdet + r2 / s2 + n * np.log(2 * np.pi * s2)
        if self.reml:  # log|X'V^-1 X| = log|X_w'V^-1 X_w| (det A = 1)
            dev += np.linalg.slogdet(XtX_w)[1] - p * np.log(2 * np.pi * s2)
        return float(dev)

    def vcov_varpar(self, varpar: np.ndarray) -> np.ndarray:
        """``cov(beta_hat) = s^2 (X'V_rel^{-1}X)^{-1}`` as a function of ``(theta, s)``."""
        _, XtX_w, _, _ = self.objective.profile(self.objective.gram(np.asarray(varpar[:-1], float)))
        return self.objective.basis.cov(float(varpar[-1]) ** 2 * np.linalg.inv(XtX_w))

    def residuals(self, scaled: bool = False) -> np.ndarray:
        """Raw residuals ``y - X beta_hat - Z b_hat``; with ``scaled``, the normalized residuals.

        The normalized residuals (nlme's ``type = "normalized"``) are the standardised
        innovations ``V^{-1/2}(y - X beta_hat)``: independent N(0, 1) under the model,
        unlike raw residuals divided by a standard deviation, which keep the serial
        correlation.
        """
        if not scaled:
            return self.spec.y - self.fitted
        p = self.spec.p
        w = self._filter.white  # working columns
        return (w[:, p] - w[:, :p] @ self._beta_w) / np.sqrt(self.scale2)

    def process(self, newdata: Any = None) -> pd.DataFrame:
        """Conditional mean and sd of the serial process at observed or new times.

        Smoothing (Kalman filter and Rauch-Tung-Striebel smoother, group by group, linear
        in the group size) of ``y - X beta_hat``, with new rows passed through as times
        without an observation. Conditional on ``beta_hat``, as lme4's ``condVar``.

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
        from ..spec._design import as_pandas
        from ._predict import _apply_design, _codes_for

        spec, res = self.spec, self.spec.residual
        if newdata is None:
            codes_new, t_new = np.zeros(0, dtype=np.int64), np.zeros(0)
            Z_new = np.zeros((0, sum(self.objective.qs)))
        else:
            if res.kind == "ar1":
                raise DataError("ar1() is defined by the order of the observations; predicting the process at new "
                                "times needs a continuous-time process: use ou(t | g)")
            df = as_pandas(newdata)
            if res.time not in df.columns:
                raise DataError(f"new data lacks the time column {res.time!r}")
            codes_new = _codes_for(df, res.factors, res.levels)
            t_new = df[res.time].to_numpy(dtype=float)
            Z_new = (np.hstack([_apply_design(t.design, df, f"random-effect columns of ({t.lhs} | {t.group})")
                                .to_numpy(dtype=float) for t in spec.terms])
                     if spec.terms else np.zeros((len(df), 0)))
        known = codes_new >= 0
        n = spec.n
        codes = np.concatenate([res.codes, codes_new[known]])
        t_all = np.concatenate([res.t, t_new[known]])
        observed = np.r_[np.ones(n, bool), np.zeros(int(known.sum()), bool)]
        Yw, p = self.objective.Y, spec.p  # y - X beta, computed in the working columns
        resid = np.r_[Yw[:, p] - Yw[:, :p] @ self._beta_w, np.zeros(int(known.sum()))]
        Z = np.vstack([self.objective.Z, Z_new[known]]) if spec.terms else None
        _, D, decay, var_w, kappa = self.objective.unpack(self.theta)
        layout = SerialLayout.build(codes, t_all, len(res.levels), by_order=(res.kind == "ar1"))
        mean, cov = kalman_smooth(layout, resid, observed, Z, D, decay, var_w, kappa)
        h = np.ones((codes.size, cov.shape[1]))
        if spec.terms:
            h[:, 1:] = Z
        rand = np.einsum("ns,ns->n", h, mean)
        rand_var = self.scale2 * np.einsum("ns,nst,nt->n", h, cov, h)
        sel = slice(0, n) if newdata is None else slice(n, None)
        if newdata is None:
            out = pd.DataFrame({"process": mean[sel, 0], "process_sd": np.sqrt(self.scale2 * cov[sel, 0, 0]),
                                "random": rand[sel], "random_sd": np.sqrt(np.maximum(rand_var[sel], 0))})
            return out
        m = len(codes_new)
        marg = self.scale2 * (var_w + (np.einsum("nq,qp,np->n", Z_new, D, Z_new) if spec.terms else 0.0))
        out = pd.DataFrame({"process": np.zeros(m), "process_sd": np.full(m, np.sqrt(self.scale2 * var_w)),
                            "random": np.zeros(m), "random_sd": np.sqrt(marg)})
        k = np.flatnonzero(known)
        out.loc[k, "process"] = mean[sel, 0]
        out.loc[k, "process_sd"] = np.sqrt(self.scale2 * cov[sel, 0, 0])
        out.loc[k, "random"] = rand[sel]
        out.loc[k, "random_sd"] = np.sqrt(np.maximum(rand_var[sel], 0))
        return out

    def predict(self, newdata: Any = None, *, re_form: bool = True, allow_new_levels: bool = False,
                se_fit: bool = False) -> Any:
        """Predictions ``X beta_hat + E(z'b + w | y)`` (``re_form``) or ``X beta_hat``.

        The conditional part comes from :meth:`process`: the random effects and the serial
        process at the new times given the group's observations. ``se_fit`` adds
        ``se_fixed`` (from ``cov(beta_hat)``) and ``sd_random`` (conditional sd of the
        random part).
        """
        from ..spec._design import as_pandas
        from ._predict import _apply_design, _codes_for

        spec = self.spec
        if newdata is None:
            X = spec.X
            unseen = np.zeros(spec.n, bool)
        else:
            df = as_pandas(newdata)
            fixed_design, _, names = spec.fixed_design
            mm = _apply_design(fixed_design, df, "fixed-effects matrix")
            mm.columns = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
            X = mm.loc[:, list(names)].to_numpy(dtype=float)
            unseen = _codes_for(df, spec.residual.factors, spec.residual.levels) < 0
        pred = X @ self._beta
        sd_rand = np.zeros(len(pred))
        if re_form:
            if unseen.any() and not allow_new_levels:
                raise DataError(f"{int(unseen.sum())} new row(s) belong to levels of {spec.residual.group!r} not in "
                                "the fit; pass allow_new_levels=True to predict them at the population level")
            pr = self.process(newdata)
            pred = pred + np.where(unseen, 0.0, pr.random.to_numpy())
            sd_rand = pr.random_sd.to_numpy()
        if not se_fit:
            return pred
        se = np.sqrt(np.einsum("np,pq,nq->n", X, self.vcov.to_numpy(), X))
        return pd.DataFrame({"fit": pred, "se_fixed": se, "sd_random": sd_rand})

    def shrinkage(self) -> pd.DataFrame:
        """Not defined here: the closed form holds for independent errors only."""
        raise DataError("the closed-form shrinkage factor holds for a random intercept with independent errors only")

    def refit(self, y: np.ndarray, *, start: np.ndarray | None = None) -> SerialFit:
        """Refit the same model to a new response."""
        return fit_serial(self.spec, self.method, start=self.theta if start is None else start,
                          y=np.asarray(y, dtype=float))

    def simulate(self, nsim: int = 1, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Simulate responses: new random effects, process paths and measurement errors."""
        if int(nsim) < 1:
            raise DataError("nsim must be a positive integer")
        rng = np.random.default_rng(seed)
        spec = self.spec
        mu = spec.X @ self._beta
        s = np.sqrt(self.scale2)
        out = np.empty((spec.n, int(nsim)))
        lay = self.objective.layout
        for k in range(int(nsim)):
            y = mu + s * np.sqrt(self._kappa) * rng.standard_normal(spec.n)
            for t, T in zip(spec.terms, self._Ts):
                b = s * rng.standard_normal((t.nlevels, t.q)) @ T.T
                y += np.einsum("nq,nq->n", t.Zraw, b[t.codes])
            w_prev = None
            for rows, gap in zip(lay.rows, lay.gaps):
                e = rng.standard_normal(rows.size)
                if w_prev is None:
                    w = np.sqrt(self._var_w) * e
                else:
                    r = np.power(self._decay, gap)
                    w = r * w_prev[: rows.size] + np.sqrt(self._var_w * (1 - r * r)) * e
                y[rows] += s * w
                w_prev = w
            out[:, k] = y
        return out
