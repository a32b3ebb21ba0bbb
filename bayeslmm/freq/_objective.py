"""The profiled ML and REML criteria, written once, and the interface every engine offers.

With ``beta`` and the scale ``s^2`` profiled out (Bates et al. 2015, eqs. 34 and 41), from the
log-determinant ``log|V_rel|`` of the relative marginal covariance (``V = s^2 V_rel``), that of
``X'V_rel^-1 X`` and the residual sum of squares ``r^2 = (y - X beta)'V_rel^-1 (y - X beta)``::

    ML:    d(psi)   = log|V_rel| + n     (1 + log(2 pi r^2 / n))
    REML:  d_R(psi) = log|V_rel| + log|X'V_rel^-1 X| + (n-p) (1 + log(2 pi r^2 / (n-p)))

``d`` is minus twice the profiled log-likelihood (the deviance), ``d_R`` minus twice the
profiled restricted log-likelihood (lme4's "REML criterion"). For independent errors
``log|V_rel| = log|L_theta|^2`` (the blocked Cholesky factor).

An *engine* computes these pieces for one model at a parameter value ``psi = (theta, residual
parameters)``: :class:`BlockedEngine` (blocked Cholesky over cross-product blocks, independent
errors) and :class:`bayeslmm.freq._grouped.GroupedEngine` (a residual structure within groups:
the Kalman filter for Markov structures, a dense per-group Cholesky otherwise). The fitted model
(:class:`bayeslmm.LMMFit`) is the same whatever the engine; MixedModels.jl's
``objective!(m, θ) = objective(updateL!(setθ!(m, θ)))`` is :meth:`Engine.working`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import DataError, OptionError
from ..linalg import BlockedFactor, CrossProducts, FixedBasis, factorize, theta_from_working, theta_to_working

if TYPE_CHECKING:
    from ..spec import ModelSpec

METHODS = ("REML", "ML")


def check_method(method: str) -> str:
    """Normalise ``method`` to ``"REML"`` or ``"ML"``."""
    m = str(method).upper()
    if m not in METHODS:
        raise OptionError(f"unknown method {method!r}: use 'REML' (the default) or 'ML'")
    return m


@dataclass(frozen=True)
class Pieces:
    """What the criteria need at one parameter value: ``log|V_rel|``, ``log|X'V_rel^-1 X|`` and ``r^2``."""

    logdet_V: float
    logdet_X: float
    r2: float


def profiled_criterion(pc: Pieces, n: int, p: int, reml: bool) -> float:
    """Minus twice the profiled (restricted) log-likelihood (module docstring); ``inf`` where undefined."""
    r2 = pc.r2
    if not (r2 > 0.0 and math.isfinite(r2) and math.isfinite(pc.logdet_V)):
        return np.inf
    if reml:
        nmp = n - p
        val = pc.logdet_V + pc.logdet_X + nmp * (1.0 + math.log(2.0 * math.pi * r2 / nmp))
    else:
        val = pc.logdet_V + n * (1.0 + math.log(2.0 * math.pi * r2 / n))
    return float(val) if math.isfinite(val) else np.inf


def varpar_deviance(pc: Pieces, s2: float, n: int, p: int, reml: bool) -> float:
    """Minus twice the (restricted) log-likelihood at the scale ``s^2``, beta profiled (lmerTest's ``devfun_vp``).

    ``log|V_rel| + r^2/s^2 + n log(2 pi s^2)``; REML adds ``log|X'V_rel^-1 X| - p log(2 pi s^2)``.
    """
    dev = pc.logdet_V + pc.r2 / s2 + n * np.log(2 * np.pi * s2)
    if reml:
        dev += pc.logdet_X - p * np.log(2 * np.pi * s2)
    return float(dev) if np.isfinite(dev) else np.inf


def criterion_from_factor(f: BlockedFactor, n: int, p: int, reml: bool) -> float:
    """The criterion read off the blocked factor ``f``."""
    return profiled_criterion(Pieces(f.logdet_L, f.logdet_RX, f.pwrss), n, p, reml)


@dataclass(frozen=True)
class GLS:
    """The generalised least squares at one parameter value, in the working columns of ``basis``.

    ``beta = basis.beta(beta_w)``; ``cov_w = (X_w'V_rel^-1 X_w)^-1``, so ``cov(beta_hat) = s^2
    basis.cov(cov_w)``; ``state`` is the engine's own (a factor, a Gram result).
    """

    basis: FixedBasis
    beta_w: np.ndarray
    cov_w: np.ndarray
    pieces: Pieces
    state: Any

    @property
    def beta(self) -> np.ndarray:
        """``beta_hat`` in the original columns."""
        return self.basis.beta(self.beta_w)


def _inv_from_lower(R: np.ndarray) -> np.ndarray:
    """``(R R')^-1`` from a lower-triangular factor."""
    p = R.shape[0]
    if not p:
        return np.zeros((0, 0))
    Rinv = np.linalg.solve(R, np.eye(p))
    return Rinv.T @ Rinv


class Engine(ABC):
    """The small interface of an engine (module docstring).

    ``psi`` stacks ``theta`` (the random-effect factors, lme4's) and the residual structure's
    parameters; the optimiser sees the *working* ``psi`` (:mod:`bayeslmm.linalg._basis`).
    """

    spec: ModelSpec
    reml: bool

    @property
    def n(self) -> int:
        return self.spec.n

    @property
    def p(self) -> int:
        return self.spec.p

    @property
    def ntheta(self) -> int:
        """Number of random-effect parameters at the front of ``psi``."""
        return self.spec.ntheta

    # -- parameters -----------------------------------------------------------------
    @abstractmethod
    def names(self) -> list[str]:
        """Names of ``psi``."""

    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``psi``."""

    def start_candidates(self) -> list[np.ndarray] | None:
        """Working starting points to choose from (None: the optimiser's default start)."""
        return None

    @abstractmethod
    def to_working(self, psi: np.ndarray) -> np.ndarray:
        """The working ``psi``."""

    @abstractmethod
    def from_working(self, psi_w: np.ndarray) -> np.ndarray:
        """``psi`` from the working one."""

    # -- evaluation ---------------------------------------------------------------------
    @abstractmethod
    def gls(self, psi: np.ndarray, working: bool = False) -> GLS | None:
        """The GLS pieces at ``psi`` (None where ``V_rel`` is not positive definite)."""

    @abstractmethod
    def pieces(self, psi: np.ndarray, working: bool = False) -> Pieces | None:
        """The criterion's pieces at ``psi`` (cheapest path; None where not evaluable)."""

    @abstractmethod
    def cov_working(self, psi: np.ndarray) -> tuple[FixedBasis, np.ndarray] | None:
        """``(basis, (X_w'V_rel^-1 X_w)^-1)`` at ``psi`` without the modes (None where not evaluable)."""

    def __call__(self, psi: np.ndarray) -> float:
        pc = self.pieces(psi)
        return np.inf if pc is None else profiled_criterion(pc, self.n, self.p, self.reml)

    @property
    def working_gradient(self) -> Callable[[np.ndarray], tuple[float, np.ndarray] | None] | None:
        """``psi_w -> (criterion, gradient)`` where the engine has an analytic gradient, else None."""
        return None

    @property
    def varpar_gradient(self) -> Callable[[np.ndarray], np.ndarray | None] | None:
        """``(psi, s) ->`` the gradient of the deviance at ``(psi, s)`` where it is analytic, else None."""
        return None

    def working(self, psi_w: np.ndarray) -> float:
        """The criterion at the working ``psi``: what the optimiser sees."""
        pc = self.pieces(psi_w, working=True)
        return np.inf if pc is None else profiled_criterion(pc, self.n, self.p, self.reml)

    # -- at the estimate ---------------------------------------------------------------
    @abstractmethod
    def factors(self, psi: np.ndarray) -> list[np.ndarray]:
        """The relative factors ``T_k`` of the random-effect terms (``D_k = s^2 T_k T_k'``)."""

    @abstractmethod
    def modes(self, gls: GLS) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per term the BLUPs ``(nlevels, q)`` and their conditional covariances ``/ s^2`` ``(nlevels, q, q)``."""

    @abstractmethod
    def cross_products(self, psi: np.ndarray) -> tuple[float, np.ndarray, FixedBasis] | None:
        """``log|V_rel|``, ``S = [X_w y_w]'V_rel^-1 [X_w y_w]`` and the basis of the working columns."""

    def residual_variance(self, psi: np.ndarray, scale2: float) -> float:
        """The variance of the "Residual" row of ``varcorr()``."""
        return scale2

    def residual_params(self, psi: np.ndarray, scale2: float) -> dict[str, Any]:
        """``{"kind": "iid", "sigma2": s^2}`` for independent errors."""
        return {"kind": "iid", "sigma2": scale2}

    @abstractmethod
    def draw_residual(self, psi: np.ndarray, scale2: float, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` residuals drawn from ``N(0, R)``."""

    @abstractmethod
    def with_response(self, y: np.ndarray) -> Engine:
        """The same engine for another response (same rows and design)."""

    def process(self, fit: Any, newdata: Any) -> Any:
        """Conditional mean and sd of the residual process (structures that have one)."""
        raise DataError("this model has independent errors: there is no residual process to predict")

    def scaled_residuals(self, fit: Any) -> np.ndarray:
        """Residuals ``(y - X beta_hat - Z b_hat) / sigma`` (independent errors)."""
        return (fit.spec.y - fit.fitted) / fit.sigma

    def predict(
        self,
        fit: Any,
        newdata: Any = None,
        *,
        re_form: bool = True,
        allow_new_levels: bool = False,
        se_fit: bool = False,
    ) -> Any:
        """Predictions ``X beta_hat (+ Z b_hat)``; see :func:`bayeslmm.freq._predict.predict`."""
        from ._predict import predict

        return predict(fit, newdata, re_form=re_form, allow_new_levels=allow_new_levels, se_fit=se_fit)


class BlockedEngine(Engine):
    """``psi = theta -> d(theta)``: the blocked Cholesky factor on fixed cross-product blocks.

    Calling it never touches the rows of the data; the cost is that of one blocked Cholesky
    factorisation (see :mod:`bayeslmm.linalg`).
    """

    def __init__(self, blocks: CrossProducts, reml: bool, spec: ModelSpec) -> None:
        self.blocks = blocks
        self.reml = reml
        self.spec = spec

    @property
    def n(self) -> int:
        return self.blocks.n

    @property
    def p(self) -> int:
        return self.blocks.p

    def names(self) -> list[str]:
        return self.spec.theta_names()

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = self.spec.theta_lower()
        return lo, np.full(lo.size, np.inf)

    def to_working(self, psi: np.ndarray) -> np.ndarray:
        return theta_to_working(self.blocks, psi)

    def from_working(self, psi_w: np.ndarray) -> np.ndarray:
        return theta_from_working(self.blocks, psi_w)

    def factor(self, theta: np.ndarray) -> BlockedFactor:
        """The blocked Cholesky factor at ``theta`` (lme4's)."""
        return factorize(self.blocks, theta)

    def pieces(self, psi: np.ndarray, working: bool = False) -> Pieces | None:
        try:
            f = factorize(self.blocks, psi, working=working)
        except np.linalg.LinAlgError:
            return None
        return Pieces(f.logdet_L, f.logdet_RX, f.pwrss)

    def gls(self, psi: np.ndarray, working: bool = False) -> GLS | None:
        try:
            f = factorize(self.blocks, psi, working=working)
        except np.linalg.LinAlgError:
            return None
        u, beta_w = f.solve_modes_working()
        return GLS(
            self.blocks.fixed_basis, beta_w, _inv_from_lower(f.RXw), Pieces(f.logdet_L, f.logdet_RX, f.pwrss), (f, u)
        )

    def cov_working(self, psi: np.ndarray) -> tuple[FixedBasis, np.ndarray] | None:
        try:
            f = factorize(self.blocks, np.asarray(psi, dtype=float))
        except np.linalg.LinAlgError:
            return None
        return self.blocks.fixed_basis, _inv_from_lower(f.RXw)

    def factors(self, psi: np.ndarray) -> list[np.ndarray]:
        from ..linalg import lambda_blocks

        return lambda_blocks(np.asarray(psi, dtype=float), self.blocks.qs)

    def modes(self, gls: GLS) -> tuple[list[np.ndarray], list[np.ndarray]]:
        f, u = gls.state
        out, start = [], 0
        for t, T in zip(self.spec.terms, f.Ts):
            out.append(u[start : start + t.ncols].reshape(t.nlevels, t.q) @ T.T)
            start += t.ncols
        return out, f.cond_cov_blocks()

    def cross_products(self, psi: np.ndarray) -> tuple[float, np.ndarray, FixedBasis] | None:
        try:
            f = factorize(self.blocks, np.asarray(psi, dtype=float))
        except np.linalg.LinAlgError:
            return None
        Lm = f.L22[f.Qr :, f.Qr :]  # working [X y]
        return f.logdet_L, Lm @ Lm.T, self.blocks.fixed_basis

    def draw_residual(self, psi: np.ndarray, scale2: float, rng: np.random.Generator) -> np.ndarray:
        return np.sqrt(scale2) * rng.standard_normal(self.spec.n)

    def with_response(self, y: np.ndarray) -> BlockedEngine:
        return BlockedEngine(self.blocks.with_response(self.spec, y), self.reml, self.spec.with_response(y))
