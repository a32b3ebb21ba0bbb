"""The covariance structures behind the ``marginal`` and ``restricted`` densities, in PyTensor and NumPy.

``V = Z D Z' + R`` is never formed as an ``n x n`` matrix. Three structures:

* :class:`GroupStructure`: independent errors, every term on one grouping factor. Per level ``i``
  the Woodbury identity with ``S_i = I + L'Z_i'Z_i L / sigma^2`` (``D = L L'``, ``q x q``):
  ``log|V_i| = n_i log sigma^2 + log|S_i|``,
  ``a'V_i^-1 c = (a'c - a'Z_i L S_i^-1 L'Z_i'c / sigma^2) / sigma^2``; the data enter only through
  the per-level cross-products ``Z_i'Z_i``, ``Z_i'X_i``, ``Z_i'y_i`` and the totals.
* :class:`FullStructure`: independent errors, several grouping factors (nested or crossed). The
  same identity once, with ``Z'Z`` (``q x q`` over all terms and levels, ``q`` at most
  :data:`MAX_Q`) and ``Lambda = blockdiag_k(I_{l_k} (x) L_k)``.
* :class:`DenseGroupStructure`: a residual structure in ``R`` (``ou``, ``ar1``, ``cs``, ...; all terms on its
  factor). Per group the dense ``V_i = Z_i D Z_i' + R_i`` and its Cholesky factor, batched over
  groups of equal (padded) size: groups are put into at most :data:`MAX_BUCKETS` size classes and
  padded with identity rows (``V = [[V_i, 0], [0, I]]``, zero design rows), which changes neither
  ``log|V_i|`` nor any quadratic form.

Each structure gives the PyTensor log densities of ``y | beta, psi`` (``pt_marginal``) and of
``y | psi`` with ``beta ~ N(0, beta_prior_var I)`` integrated out (``pt_restricted``), and NumPy
routines used after sampling: the GLS pieces ``X'V^-1 X``, ``X'V^-1 y``, an exact draw of
``b | beta, psi, y ~ N(D Z'V^-1 r, D - D Z'V^-1 Z D)``, and the log-likelihood per independent block.

With ``build_model(..., mutable_response=True)`` the response enters the PyTensor densities only
through PyMC data containers (``pm.Data``, created in the model being built; otherwise constants, which
keep the compiled graph and its draws exactly as they were): :data:`Y_ZTY`, :data:`Y_XTY`, :data:`Y_YTY`
and :data:`Y_SHIFT` (the working columns' shift of ``y``) for the Woodbury structures, the rows
:data:`Y_DATA` for the dense one. The design's cross-products are constants. So one compiled model
serves many responses on the same design (``set_response``): :meth:`WoodburyBase.response_data`
gives a new response's containers with the model's own shift, which keeps the density exact.
"""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .._errors import OptionError
from ..linalg import FixedBasis, TermBasis, by_level
from ..spec import ModelSpec, check_terms

#: largest total number of random effects for the dense Woodbury of several grouping factors
MAX_Q = 1500
#: most size classes of the residual structure's padded per-group blocks
MAX_BUCKETS = 12

#: names of the response's data containers in a built model: the rows ``y`` ``(n,)`` (the
#: ``conditional`` model and the residual structures), and for the Woodbury structures ``Z_i'y_w``
#: ``(G, q)``, ``X_w'y_w`` ``(p,)``, ``y_w'y_w`` ``()`` and the shift ``c_y`` of ``y_w = y - c_y``
Y_DATA, Y_ZTY, Y_XTY, Y_YTY, Y_SHIFT = "y_data", "y_Zty", "y_Xty", "y_yty", "y_shift"


#: whether the model being built takes the response as data containers (``build_model(...,
#: mutable_response=True)``); otherwise the response is a constant of the graph
RESPONSE_AS_DATA: contextvars.ContextVar[bool] = contextvars.ContextVar("RESPONSE_AS_DATA", default=False)


def pt_data(name: str, value: Any) -> Any:
    """``value`` as the data container ``name`` of the PyMC model being built (a fixed static shape;
    the one already there if the model has it) when :data:`RESPONSE_AS_DATA` is set; otherwise ``value``
    itself, which the graph takes as a constant exactly as it did before data containers existed (the
    same arithmetic, so the same draws for a seed)."""
    import pymc as pm

    model = pm.Model.get_context(error_if_none=False)
    if model is None or not RESPONSE_AS_DATA.get():
        return value  # as given: the graph is then built from the same NumPy values as always
    arr = np.asarray(value, dtype=float)
    if name in model.named_vars:
        return model[name]
    return pm.Data(name, arr, shape=arr.shape)


@dataclass(frozen=True)
class WoodburyState:
    """Per-draw quantities of the Woodbury structures (one posterior draw of the covariance parameters).

    ``L`` ``(q, q)`` the factor of ``D`` acting on the working columns ``Z_w``, ``Lb`` the one of the
    original columns (``b = Lb u``); ``S = I + L'Z'Z L / s2`` per level ``(G, q, q)`` and its inverse;
    ``s2`` the residual variance; ``LtZtX`` ``(G, q, p)`` and ``LtZty`` ``(G, q, 1)``.
    """

    L: np.ndarray
    Lb: np.ndarray
    S: np.ndarray
    Sinv: np.ndarray
    s2: float
    LtZtX: np.ndarray
    LtZty: np.ndarray


@dataclass(frozen=True)
class SizeClass:
    """Groups of one (padded) size ``s`` of :class:`DenseGroupStructure`: rows, masks, features and data.

    ``idx`` ``(G_s, s)`` rows (``n`` for a padding row), ``m`` its 0/1 mask, ``mm`` the mask of pairs,
    ``pad`` the identity on padding rows, ``feats`` the structure's features ``(G_s, s, ...)``,
    ``X``/``y``/``Z`` the rows, ``n`` the real sizes.
    """

    groups: np.ndarray
    idx: np.ndarray
    m: np.ndarray
    mm: np.ndarray
    pad: np.ndarray
    feats: dict[str, np.ndarray]
    X: np.ndarray
    y: np.ndarray
    Z: np.ndarray
    n: np.ndarray


@dataclass(frozen=True)
class ClassState:
    """One size class at one draw: ``logdet`` ``(G_s,)`` of ``V_i`` and ``W = C_i^-1 [X y Z]`` (``V_i = C_i C_i'``)."""

    logdet: np.ndarray
    W: np.ndarray


@dataclass(frozen=True)
class DenseState:
    """Per-draw quantities of :class:`DenseGroupStructure`: ``D`` ``(q, q)``, the size classes' states and
    the residual structure's natural parameters."""

    D: np.ndarray
    parts: list[ClassState]
    res: dict[str, float]


def psd_sqrt(D: np.ndarray) -> np.ndarray:
    """A square root ``L`` with ``L L' = D`` for (batches of) symmetric PSD ``D``, singular allowed."""
    w, U = np.linalg.eigh(D)
    return U * np.sqrt(np.clip(w, 0, None))[..., None, :]


def _mvn_draw(mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws ``(..., q)`` from ``N(mean, cov)`` batched; ``cov`` may be singular."""
    L = psd_sqrt((cov + np.swapaxes(cov, -1, -2)) / 2)
    return mean + (L @ rng.standard_normal((*mean.shape, 1)))[..., 0]


def _split_terms(spec: ModelSpec, b: np.ndarray) -> list[np.ndarray]:
    """``(G, sum q_k)`` per-level effects (one factor) -> ``[(G, q_k)]`` per term."""
    out, j = [], 0
    for t in spec.terms:
        out.append(b[:, j : j + t.q])
        j += t.q
    return out


class Structure[StateT](ABC):
    """What every structure offers: the PyTensor densities of ``y | beta, psi`` and of ``y | psi`` (beta
    integrated out), and the NumPy pieces used after sampling, from a per-draw state ``StateT``."""

    loglik_dim: str | None
    loglik_labels: list[str]

    @abstractmethod
    def pt_marginal(self, Ls: list[Any], res: dict[str, Any], beta: Any, n: int) -> Any:
        """``log N(y; X beta, V)`` (PyTensor)."""

    @abstractmethod
    def pt_restricted(self, Ls: list[Any], res: dict[str, Any], beta_prior_var: float, n: int) -> Any:
        """``log int N(y; X beta, V) N(beta; 0, beta_prior_var I) dbeta`` (PyTensor)."""

    @abstractmethod
    def np_state(self, Lks: list[np.ndarray], res: dict[str, float]) -> StateT:
        """The per-draw quantities at the terms' factors ``Lks`` and the residual parameters ``res``."""

    @abstractmethod
    def np_gls(self, st: StateT) -> tuple[np.ndarray, np.ndarray]:
        """``(X'V^-1 X, X'V^-1 y)`` in the original columns."""

    @abstractmethod
    def np_draw_beta(self, st: StateT, beta_prior_var: float, rng: np.random.Generator) -> np.ndarray:
        """A draw of ``beta | psi, y`` under ``beta ~ N(0, beta_prior_var I)``."""

    @abstractmethod
    def np_draw_b(self, st: StateT, beta: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """A draw of ``b | beta, psi, y`` per term ``(nlevels, q)``."""

    @abstractmethod
    def np_loglik(self, st: StateT, beta: np.ndarray) -> np.ndarray | None:
        """``log N(y_i; X_i beta, V_i)`` per independent block (None where the density does not factorise)."""


class WoodburyBase(Structure[WoodburyState]):
    """Shared Woodbury algebra of :class:`GroupStructure` (``G`` levels) and :class:`FullStructure` (``G = 1``).

    Every cross-product is of the working columns of :mod:`bayeslmm.linalg._basis` (``[X y]``
    shifted, each term's ``Z`` centred and scaled), so that a large constant in the data costs no
    digits: ``beta`` enters as ``beta_w = A^-1 (beta - c)`` and each term's factor ``L_k`` as
    ``A_z^-1 L_k``; the densities are those of the original model.
    """

    ZtZ: np.ndarray  # (G, q, q)
    ZtX: np.ndarray  # (G, q, p)
    Zty: np.ndarray  # (G, q)
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    q: int
    spec: ModelSpec
    basis: FixedBasis
    zbases: tuple[TermBasis, ...]

    def _set_bases(self, basis: FixedBasis, zbases: tuple[TermBasis, ...]) -> None:
        self.basis, self.zbases = basis, zbases
        p = basis.p
        self._e0 = np.zeros(p)
        if basis.intercept is not None:
            self._e0[basis.intercept] = 1.0
        self._shift = basis.shift_y * self._e0  # c: beta = A beta_w + c

    def _working_rows(self, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """``X_w``, ``y_w`` and each term's ``Z_w`` of the rows of ``spec`` (bases set from them)."""
        self._set_bases(FixedBasis.from_rows(spec.X, spec.y), tuple(TermBasis.from_rows(t.Zraw) for t in spec.terms))
        Xw = self.basis.apply(spec.X, None)[0]
        yw = self.basis.apply_y(spec.y)
        return Xw, yw, [b.apply(t.Zraw) for b, t in zip(self.zbases, spec.terms)]

    def _beta_w(self, beta: Any, shift_y: Any = None) -> Any:
        """``A^-1 (beta - c) = beta - c + e_0 (m'beta)`` (NumPy or PyTensor), ``c = c_y e_0``; ``shift_y``
        replaces the basis' ``c_y`` (the model's data container :data:`Y_SHIFT`)."""
        if self.basis.intercept is None:
            return beta
        c = self._shift if shift_y is None else shift_y * self._e0
        return beta - c + self._e0 * (self.basis.centres @ beta)

    def _pt_response(self) -> tuple[Any, Any, Any, Any]:
        """The response's data containers ``(Z_i'y_w (G, q), X_w'y_w (p,), y_w'y_w, c_y)``; without
        :data:`RESPONSE_AS_DATA` constants, and ``c_y`` None: the graph is then the one of a fixed response,
        built exactly as it always was (same arithmetic, so the same draws for a seed)."""
        return (
            pt_data(Y_ZTY, self.Zty),
            pt_data(Y_XTY, self.Xty),
            pt_data(Y_YTY, self.yty),
            pt_data(Y_SHIFT, self.basis.shift_y) if RESPONSE_AS_DATA.get() else None,
        )

    def response_data(self, y: np.ndarray, shift_y: float) -> dict[str, np.ndarray]:
        """The data containers of the response ``y`` ``(n,)`` on this structure's design, in the working
        columns with the response shift ``shift_y`` (that of the model they go into): any shift gives
        the same density, as long as the containers and the model agree on it."""
        spec = self.spec
        yw = np.asarray(y, dtype=float) - shift_y
        Xw = self.basis.apply(spec.X, None)[0]
        Zs = [b.apply(t.Zraw) for b, t in zip(self.zbases, spec.terms)]
        return {
            Y_ZTY: self._Zt(Zs, yw),
            Y_XTY: Xw.T @ yw,
            Y_YTY: np.array(float(yw @ yw)),
            Y_SHIFT: np.array(float(shift_y)),
        }

    @abstractmethod
    def _Zt(self, Zs: list[np.ndarray], v: np.ndarray) -> np.ndarray:
        """``(G, q)`` ``Z_i'v_i`` per level from the terms' working columns ``Zs``."""

    def _working_Ls(self, Ls: list[Any]) -> list[Any]:
        """``A_z^-1 L_k`` per term (NumPy or PyTensor)."""
        return [L if b.is_identity else b.Ainv @ L for b, L in zip(self.zbases, Ls)]

    def _prior_w(self, beta_prior_var: float) -> tuple[np.ndarray, np.ndarray]:
        """``beta ~ N(0, beta_prior_var I)`` in working coordinates: precision ``P = A'A / beta_prior_var``
        and ``P mu``, ``mu = -c``."""
        A = self.basis.A
        P = A.T @ A / beta_prior_var
        return P, P @ (-self._shift)

    def np_gls(self, st: WoodburyState) -> tuple[np.ndarray, np.ndarray]:
        """``(X'V^-1 X, X'V^-1 y)`` of the original columns: ``A^-T A_w A^-1`` and ``A^-T (b_w + A_w c)``."""
        A, bv = self._np_gls_w(st)
        Ainv = np.linalg.inv(self.basis.A)
        return Ainv.T @ A @ Ainv, Ainv.T @ (bv + A @ self._shift)

    def np_draw_beta(self, st: WoodburyState, beta_prior_var: float, rng: np.random.Generator) -> np.ndarray:
        """A draw of ``beta | psi, y`` under ``beta ~ N(0, beta_prior_var I)``, made in working coordinates."""
        A, bv = self._np_gls_w(st)
        P, Pmu = self._prior_w(beta_prior_var)
        Mi = np.linalg.inv(A + P)
        bw = rng.multivariate_normal(Mi @ (bv + Pmu), (Mi + Mi.T) / 2)
        return self.basis.A @ bw + self._shift

    @abstractmethod
    def _L_pt(self, Ls: list[Any]) -> Any:
        """The ``q x q`` factor ``L`` of ``D`` (PyTensor) from the terms' factors ``Ls``."""

    def _solver(self, L: Any, sigma2: Any) -> tuple[Any, Any]:
        """``(log|S|, quad)`` with ``quad(left, right, total) = sum_i left_i' V_i^-1 right_i`` from the
        per-level ``Z_i'left_i`` ``(G, q, k)``, ``Z_i'right_i`` ``(G, q, m)`` and ``total = left'right``.

        For ``q <= 2`` (random intercepts, intercept + slope) ``L'Z_i'Z_i L``, ``S_i``, its determinant
        and inverse are written out entry by entry as vectors over the levels, which Numba fuses
        into loops: a gradient at 100,000 levels takes about 5 ms, against 690 ms through batched
        2 x 2 Cholesky factors and solves. Larger ``q`` uses the batched factors (``left``/``right``
        are then ``(G, q, k)`` tensors; for ``q <= 2`` their rows, see :meth:`_rows`).
        """
        import pytensor.tensor as pt

        q = self.q
        if q > 2:
            S = pt.eye(q) + pt.swapaxes(L, 0, 1) @ pt.as_tensor_variable(self.ZtZ) @ L / sigma2  # (G, q, q)
            logdetS = _logdet_chol(pt.linalg.cholesky(S), q)

            def quad_general(left: Any, right: Any, total: Any) -> Any:
                Lt = pt.swapaxes(L, 0, 1)
                a, c = Lt @ left, Lt @ right  # (G, q, k), (G, q, m)
                corr = pt.sum(pt.swapaxes(a, 1, 2) @ pt.linalg.solve(S, c, assume_a="pos"), axis=0)
                return (total - corr / sigma2) / sigma2

            return logdetS, quad_general

        # q <= 2: every per-level quantity is a (G,)-vector expression (Numba fuses these into one
        # loop; batched matrix products of tiny matrices are 100 times slower here)
        Lij = [[L[r, j] for j in range(q)] for r in range(q)]
        A = [[np.ascontiguousarray(self.ZtZ[:, r, c]) for c in range(q)] for r in range(q)]
        M = [
            [sum(Lij[r][i] * Lij[c][j] * A[r][c] for r in range(q) for c in range(q)) for j in range(q)]
            for i in range(q)
        ]  # L' A_i L
        if q == 1:
            s00 = 1 + M[0][0] / sigma2
            logdetS = pt.sum(pt.log(s00))
            inv = [[1 / s00]]
        else:
            s00, s11, s01 = 1 + M[0][0] / sigma2, 1 + M[1][1] / sigma2, M[0][1] / sigma2
            det = s00 * s11 - s01**2
            logdetS = pt.sum(pt.log(det))
            i01 = -s01 / det
            inv = [[s11 / det, i01], [i01, s00 / det]]

        def quad_small(left: list[Any], right: list[Any], total: Any) -> Any:
            """``left``/``right``: the ``q`` rows ``(Z_i'left_i)_r`` as ``(G, k)``/``(G, m)`` arrays."""
            a = [sum(Lij[r][j] * left[r] for r in range(q)) for j in range(q)]  # rows of L'Z_i'left_i
            c = [sum(Lij[r][j] * right[r] for r in range(q)) for j in range(q)]
            corr = 0
            for j in range(q):
                u = sum(inv[j][r][:, None] * c[r] for r in range(q))  # (S_i^-1 c_i)_j, (G, m)
                corr = corr + pt.sum(a[j][:, :, None] * u[:, None, :], axis=0)
            return (total - corr / sigma2) / sigma2

        return logdetS, quad_small

    def _rows(self, B: Any) -> Any:
        """What ``quad`` takes: ``B`` ``(G, q, k)`` itself for ``q > 2``, else its ``q`` rows ``(G, k)``."""
        if self.q > 2:
            return B
        return [np.ascontiguousarray(B[:, r, :]) if isinstance(B, np.ndarray) else B[:, r, :] for r in range(self.q)]

    def _Ztr(self, Zty: Any, beta_w: Any) -> Any:
        """``(G, q, 1)`` ``Z_i'(y_i - X_i beta)`` (elementwise over levels, working columns)."""
        import pytensor.tensor as pt

        ZtXb = pt.sum(pt.as_tensor_variable(self.ZtX) * beta_w, axis=2)
        return (Zty - ZtXb)[:, :, None]

    def pt_marginal(self, Ls: list[Any], res: dict[str, Any], beta: Any, n: int) -> Any:
        """``log N(y; X beta, V)``."""
        import pytensor.tensor as pt

        s2 = res["sigma2"]
        Zty, Xty, yty, shift_y = self._pt_response()
        logdetS, quad = self._solver(self._L_pt(self._working_Ls(Ls)), s2)
        bw = self._beta_w(beta, shift_y)
        Ztr = self._rows(self._Ztr(Zty, bw))
        rr = yty - 2 * bw @ Xty + bw @ self.XtX @ bw
        return -0.5 * (n * np.log(2 * np.pi) + n * pt.log(s2) + logdetS + quad(Ztr, Ztr, rr)[0, 0])

    def pt_restricted(self, Ls: list[Any], res: dict[str, Any], beta_prior_var: float, n: int) -> Any:
        """``log int N(y; X beta, V) N(beta; 0, beta_prior_var I) dbeta``."""
        import pytensor.tensor as pt

        s2 = res["sigma2"]
        Zty_d, Xty, yty, shift_y = self._pt_response()
        logdetS, quad = self._solver(self._L_pt(self._working_Ls(Ls)), s2)
        ZtX, Zty = self._rows(self.ZtX), self._rows(Zty_d[:, :, None])
        if self.q > 2:
            ZtX = pt.as_tensor_variable(ZtX)
        A = quad(ZtX, ZtX, self.XtX)
        bv = quad(ZtX, Zty, Xty[:, None])[:, 0]
        yy = quad(Zty, Zty, pt.reshape(yty, (1, 1)))[0, 0]
        P, Pmu = self._prior_w(beta_prior_var)
        if shift_y is None:  # a fixed response
            prior = (P, Pmu, float(Pmu @ np.linalg.solve(P, Pmu)) if np.any(Pmu) else 0.0)
        else:  # the prior's mean in working coordinates is -c = -c_y e_0: P mu = c_y (P mu)|_{c_y=1}
            e0 = self._e0
            Pmu1, mPm1 = (P @ -e0, float(e0 @ P @ e0)) if self.basis.intercept is not None else (0, 0)
            prior = (P, shift_y * Pmu1, shift_y**2 * mPm1)
        return _restricted_tail(n, n * pt.log(s2) + logdetS, A, bv, yy, beta_prior_var, prior)

    # -- NumPy, one posterior draw at a time ---------------------------------
    @abstractmethod
    def _L_np(self, Lks: list[np.ndarray]) -> np.ndarray:
        """The ``q x q`` factor ``L`` of ``D`` (NumPy) from the terms' factors ``Lks``."""

    def np_state(self, Lks: list[np.ndarray], res: dict[str, float]) -> WoodburyState:
        """Per-draw quantities: ``L``, ``S^-1`` and the products with the data blocks."""
        s2 = res["sigma2"]
        L = self._L_np(self._working_Ls(Lks))  # acts on the working columns Z_w = Z A_z
        S = np.eye(self.q) + L.T @ self.ZtZ @ L / s2
        Sinv = np.linalg.inv(S)
        return WoodburyState(
            L=L, Lb=self._L_np(Lks), S=S, Sinv=Sinv, s2=s2, LtZtX=L.T @ self.ZtX, LtZty=L.T @ self.Zty[:, :, None]
        )

    def _np_gls_w(self, st: WoodburyState) -> tuple[np.ndarray, np.ndarray]:
        """``(X_w'V^-1 X_w, X_w'V^-1 y_w)`` (working columns)."""
        s2, Sinv, a, c = st.s2, st.Sinv, st.LtZtX, st.LtZty
        A = (self.XtX - np.sum(np.swapaxes(a, 1, 2) @ Sinv @ a, axis=0) / s2) / s2
        bv = (self.Xty - np.sum(np.swapaxes(a, 1, 2) @ Sinv @ c, axis=0)[:, 0] / s2) / s2
        return A, bv

    def _tvec(self, st: WoodburyState, beta: np.ndarray) -> np.ndarray:
        """``(G, q)`` ``L'Z_i'(y_i - X_i beta)``."""
        return (st.LtZty - st.LtZtX @ self._beta_w(beta)[:, None])[:, :, 0]

    def _b_draw(self, st: WoodburyState, beta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(G, q)``: ``b | beta ~ N(L S^-1 L'Z'r / sigma^2, L S^-1 L')`` (``b = L u`` with the original ``L``)."""
        L, Sinv, s2 = st.Lb, st.Sinv, st.s2
        tvec = self._tvec(st, beta)
        mean = (L @ (Sinv @ tvec[:, :, None]))[:, :, 0] / s2
        R = np.linalg.cholesky((Sinv + np.swapaxes(Sinv, 1, 2)) / 2)
        return mean + (L @ R @ rng.standard_normal((*mean.shape, 1)))[:, :, 0]


def _check_q(q: int) -> None:
    if q > MAX_Q:
        raise OptionError(
            f"the marginal and restricted parameterisations of a model with several grouping "
            f"factors use a dense {q} x {q} matrix (limit {MAX_Q}); use param='conditional' "
            "for this model (with the rows)"
        )


def _totals_from_F(obj: Any, F: np.ndarray, p: int) -> None:
    """``X'X``, ``X'y``, ``y'y`` from ``F = [X y]'[X y]``; no per-level totals."""
    obj.XtX, obj.Xty, obj.yty = F[:p, :p].copy(), F[:p, p].copy(), float(F[p, p])
    obj.XtX_g = obj.Xty_g = obj.yty_g = obj.n_g = None


def _from_blocks_bases(obj: WoodburyBase, blocks: Any) -> None:
    """The working columns the engine's blocks were formed with."""
    obj._set_bases(blocks.fixed_basis, blocks.term_bases)


def _logdet_chol(C: Any, size: int) -> Any:
    """``log|A|`` from the (batched) Cholesky factor ``C`` of ``A``.

    The diagonal is read as ``sum(C * I, -1)``: the gradient of ``pt.diagonal`` on a batch is a
    ``Blockwise{AllocDiag}`` that Numba runs in object mode, ten times slower.
    """
    import pytensor.tensor as pt

    return 2 * pt.sum(pt.log(pt.sum(C * np.eye(size), axis=-1)))


def _restricted_tail(
    n: int,
    logdetV: Any,
    A: Any,
    bv: Any,
    yy: Any,
    beta_prior_var: float,
    prior: tuple[np.ndarray, Any, Any] | None = None,
) -> Any:
    """``log N(y; 0, V + beta_prior_var X X')`` from ``log|V|``, ``A = X'V^-1X``, ``bv = X'V^-1 y``, ``yy = y'V^-1 y``:
    ``log|V + beta_prior_var XX'| = log|V| + p log beta_prior_var + log|M|`` and
    ``y'(V + beta_prior_var XX')^-1 y = yy - bv'M^-1 bv``,
    ``M = A + I / beta_prior_var``.

    With ``prior = (P, P mu, mu'P mu)`` the cross-products are of working columns, where the prior of
    ``beta_w`` is ``N(mu, P^-1)`` with ``|P^-1| = beta_prior_var^p`` (the shift has determinant 1): then
    ``M = A + P`` and the quadratic form is ``yy + mu'P mu - h'M^-1 h``, ``h = bv + P mu``.
    """
    import pytensor.tensor as pt

    p = A.shape[0] if isinstance(A, np.ndarray) else A.type.shape[0]
    if prior is None:
        prior = (np.eye(p) / beta_prior_var, np.zeros(p), 0.0)
    P, Pmu, mPm = prior
    M = A + P
    logdetM = _logdet_chol(pt.linalg.cholesky(M), p)
    h = bv + Pmu
    quad = yy + mPm - h @ pt.linalg.solve(M, h, assume_a="pos")
    neg2 = n * np.log(2 * np.pi) + logdetV + p * np.log(beta_prior_var) + logdetM + quad
    return -0.5 * neg2


class GroupStructure(WoodburyBase):
    """Independent errors, all terms on one grouping factor: Woodbury per level."""

    def __init__(self, spec: ModelSpec) -> None:
        t0 = spec.terms[0]
        X, y, Zs = self._working_rows(spec)
        Z = np.hstack(Zs)
        self.spec = spec
        self.G, self.q = t0.nlevels, Z.shape[1]
        self.ZtZ = by_level(t0.codes, self.G, Z, Z)
        self.ZtX = by_level(t0.codes, self.G, Z, X)
        self.Zty = by_level(t0.codes, self.G, Z, y[:, None])[:, :, 0]
        self.XtX = X.T @ X
        self.Xty = X.T @ y
        self.yty = float(y @ y)
        self.XtX_g = by_level(t0.codes, self.G, X, X)
        self.Xty_g = by_level(t0.codes, self.G, X, y[:, None])[:, :, 0]
        self.yty_g = np.bincount(t0.codes, weights=y * y, minlength=self.G)
        self.n_g = np.bincount(t0.codes, minlength=self.G)
        self.loglik_dim: str | None = t0.group
        self.loglik_labels: list[str] = list(t0.levels)

    @classmethod
    def from_blocks(cls, spec: ModelSpec, blocks: Any) -> GroupStructure:
        """The structure of a row-less specification with one term, from the engine's ``CrossProducts``
        (``bayeslmm.suff``): the same density; no per-level log-likelihood (it needs per-level ``[X y]``
        cross-products, which the statistics do not keep)."""
        self = cls.__new__(cls)
        t0, p = spec.terms[0], blocks.p
        self.spec, self.G, self.q = spec, t0.nlevels, t0.q
        self.ZtZ = blocks.A11
        self.ZtX = np.ascontiguousarray(blocks.B1[:, :, :p])
        self.Zty = np.ascontiguousarray(blocks.B1[:, :, p])
        _totals_from_F(self, blocks.F, p)
        _from_blocks_bases(self, blocks)
        self.loglik_dim, self.loglik_labels = None, []
        return self

    def _L_pt(self, Ls: list[Any]) -> Any:
        from pytensor.tensor.linalg import block_diag

        return block_diag(*Ls) if len(Ls) > 1 else Ls[0]

    def _Zt(self, Zs: list[np.ndarray], v: np.ndarray) -> np.ndarray:
        return by_level(self.spec.terms[0].codes, self.G, np.hstack(Zs), v[:, None])[:, :, 0]

    def _L_np(self, Lks: list[np.ndarray]) -> np.ndarray:
        from scipy.linalg import block_diag

        return block_diag(*Lks)

    def np_draw_b(self, st: WoodburyState, beta: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Per term ``(levels, q_k)`` draws of ``b | beta, psi, y``."""
        return _split_terms(self.spec, self._b_draw(st, beta, rng))

    def np_loglik(self, st: WoodburyState, beta: np.ndarray) -> np.ndarray | None:
        """``(G,)`` ``log N(y_i; X_i beta, V_i)`` per level (``None`` when built from blocks)."""
        if self.loglik_dim is None:
            return None
        s2, Sinv, tvec, bw = st.s2, st.Sinv, self._tvec(st, beta), self._beta_w(beta)
        rr = self.yty_g - 2 * self.Xty_g @ bw + np.einsum("p,gpq,q->g", bw, self.XtX_g, bw)
        quad = (rr - np.einsum("gq,gq->g", tvec, (Sinv @ tvec[:, :, None])[:, :, 0]) / s2) / s2
        return -0.5 * (self.n_g * np.log(2 * np.pi * s2) + np.linalg.slogdet(st.S)[1] + quad)


class FullStructure(WoodburyBase):
    """Independent errors, several grouping factors: one Woodbury over all ``q`` random effects."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.q = sum(t.ncols for t in spec.terms)
        _check_q(self.q)
        X, y, Zs = self._working_rows(spec)
        Z = self._Z(Zs)
        ZtZ = (Z.T @ Z).toarray()
        self.ZtZ = ZtZ[None]
        self.ZtX = (Z.T @ X)[None]
        self.Zty = (Z.T @ y)[None]
        self.XtX = X.T @ X
        self.Xty = X.T @ y
        self.yty = float(y @ y)
        self._blocks(spec, X, y)

    @classmethod
    def from_blocks(cls, spec: ModelSpec, blocks: Any) -> FullStructure:
        """The structure of a row-less specification with several terms, from the engine's
        ``CrossProducts``: ``Z'Z = [[blockdiag(A11), C'], [C, D]]``, ``Z'[X y] = [B1; E]`` (columns
        level by level within each term, terms in the specification's order). No log-likelihood."""
        self = cls.__new__(cls)
        self.spec, p = spec, blocks.p
        self.q = sum(t.ncols for t in spec.terms)
        _check_q(self.q)
        G1, q1 = blocks.A11.shape[:2]
        Q1 = G1 * q1
        ZtZ = np.zeros((self.q, self.q))
        for g in range(G1):
            ZtZ[g * q1 : (g + 1) * q1, g * q1 : (g + 1) * q1] = blocks.A11[g]
        C = blocks.C.toarray()
        ZtZ[Q1:, :Q1] = C
        ZtZ[:Q1, Q1:] = C.T
        ZtZ[Q1:, Q1:] = blocks.D
        ZtXy = np.vstack([blocks.B1.reshape(Q1, p + 1), blocks.E])
        self.ZtZ, self.ZtX, self.Zty = ZtZ[None], ZtXy[None, :, :p], ZtXy[None, :, p]
        _totals_from_F(self, blocks.F, p)
        _from_blocks_bases(self, blocks)
        self.loglik_dim, self.loglik_labels, self.nblocks = None, [], 0
        return self

    def _Z(self, Zs: list[np.ndarray]) -> sp.csr_matrix:
        """The sparse ``n x q`` random-effects design of the terms' columns ``Zs``, level by level within each term."""
        spec, rows, cols, vals, off = self.spec, [], [], [], 0
        for t, Zt in zip(spec.terms, Zs):
            for c in range(t.q):
                rows.append(np.arange(spec.n))
                cols.append(off + t.codes * t.q + c)
                vals.append(Zt[:, c])
            off += t.ncols
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(spec.n, self.q)
        )

    def _blocks(self, spec: ModelSpec, X: np.ndarray, y: np.ndarray) -> None:
        """Independent blocks of rows (levels linked through shared rows), for the log-likelihood per block."""
        offs = np.cumsum([0] + [t.nlevels for t in spec.terms])
        nlev = offs[-1]
        edges = [(offs[0] + spec.terms[0].codes, offs[k] + t.codes) for k, t in enumerate(spec.terms)]
        r = np.concatenate([a for a, _ in edges])
        c = np.concatenate([b for _, b in edges])
        ncomp, lab = connected_components(sp.coo_matrix((np.ones(r.size), (r, c)), shape=(nlev, nlev)), directed=False)
        self.row_block = lab[offs[0] + spec.terms[0].codes]
        self.col_block = np.concatenate([np.repeat(lab[offs[k] : offs[k + 1]], t.q) for k, t in enumerate(spec.terms)])
        self.nblocks = ncomp
        self.loglik_dim, self.loglik_labels = None, []
        if ncomp == 1:
            return  # crossed factors: one joint density, no per-block log-likelihood
        for k, t in enumerate(spec.terms):  # label blocks by a factor whose levels they are, if any
            if t.nlevels == ncomp and len(np.unique(lab[offs[k] : offs[k + 1]])) == ncomp:
                order = lab[offs[k] : offs[k + 1]]
                labels = [""] * ncomp
                for lev, b in zip(t.levels, order):
                    labels[b] = lev
                self.loglik_dim, self.loglik_labels = t.group, labels
                break
        else:
            self.loglik_dim, self.loglik_labels = "block", [str(i) for i in range(ncomp)]
        self.XtX_g = by_level(self.row_block, ncomp, X, X)
        self.Xty_g = by_level(self.row_block, ncomp, X, y[:, None])[:, :, 0]
        self.yty_g = np.bincount(self.row_block, weights=y * y, minlength=ncomp)
        self.n_g = np.bincount(self.row_block, minlength=ncomp)
        self.cols_g = [np.flatnonzero(self.col_block == g) for g in range(ncomp)]

    def _Zt(self, Zs: list[np.ndarray], v: np.ndarray) -> np.ndarray:
        return np.asarray(self._Z(Zs).T @ v)[None]

    def _kron_terms(self, Ls: list[Any], kron: Any, eye: Any, block_diag: Any) -> Any:
        parts = [kron(eye(t.nlevels), L) for t, L in zip(self.spec.terms, Ls)]
        return block_diag(*parts) if len(parts) > 1 else parts[0]

    def _L_pt(self, Ls: list[Any]) -> Any:
        import pytensor.tensor as pt
        from pytensor.tensor.linalg import block_diag, kron

        return self._kron_terms(Ls, kron, pt.eye, block_diag)

    def _L_np(self, Lks: list[np.ndarray]) -> np.ndarray:
        from scipy.linalg import block_diag

        return self._kron_terms(Lks, np.kron, np.eye, block_diag)

    def np_draw_b(self, st: WoodburyState, beta: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        b = self._b_draw(st, beta, rng)[0]
        out, off = [], 0
        for t in self.spec.terms:
            out.append(b[off : off + t.ncols].reshape(t.nlevels, t.q))
            off += t.ncols
        return out

    def np_loglik(self, st: WoodburyState, beta: np.ndarray) -> np.ndarray | None:
        """Per independent block (``None`` for crossed factors: the density does not factorise)."""
        if self.loglik_dim is None:
            return None
        s2, S, tvec, bw = st.s2, st.S[0], self._tvec(st, beta)[0], self._beta_w(beta)
        rr = self.yty_g - 2 * self.Xty_g @ bw + np.einsum("p,gpq,q->g", bw, self.XtX_g, bw)
        out = np.empty(self.nblocks)
        for g, cols in enumerate(self.cols_g):
            Sg = S[np.ix_(cols, cols)]
            tg = tvec[cols]
            quad = (rr[g] - tg @ np.linalg.solve(Sg, tg) / s2) / s2
            out[g] = -0.5 * (self.n_g[g] * np.log(2 * np.pi * s2) + np.linalg.slogdet(Sg)[1] + quad)
        return out


class DenseGroupStructure(Structure[DenseState]):
    """A residual structure in ``R_i`` (:mod:`bayeslmm.cov`): dense per-group ``V_i`` batched over padded
    size classes; ``R_i`` is the structure's matrix, in PyTensor for the densities and in NumPy after sampling."""

    def __init__(self, spec: ModelSpec) -> None:
        res = spec.residual
        if res is None:
            raise OptionError("the dense per-group structure is for a model with a residual structure")
        self.spec, self.structure = spec, res.structure
        G = len(res.levels)
        codes = res.codes
        order = np.lexsort((np.arange(spec.n), res.t, codes))  # by group, then time, then row (as the engine)
        n_g = np.bincount(codes, minlength=G)
        start = np.r_[0, np.cumsum(n_g)[:-1]]
        sizes = np.unique(n_g)
        if sizes.size > MAX_BUCKETS:
            sizes = np.unique(np.quantile(n_g, np.linspace(0, 1, MAX_BUCKETS + 1)[1:], method="higher"))
        bsize = sizes[np.searchsorted(sizes, n_g)]
        Z = np.hstack([t.Zraw for t in spec.terms]) if spec.terms else np.zeros((spec.n, 0))
        self.q = Z.shape[1]
        Xe = np.vstack([spec.X, np.zeros((1, spec.p))])
        ye = np.r_[spec.y, 0.0]
        Ze = np.vstack([Z, np.zeros((1, self.q))])
        self.buckets: list[SizeClass] = []
        for s in np.unique(bsize):
            groups = np.flatnonzero(bsize == s)
            idx = np.full((groups.size, s), spec.n, dtype=np.int64)
            for j, g in enumerate(groups):
                rows = order[start[g] : start[g] + n_g[g]]
                idx[j, : rows.size] = rows
            m = (idx < spec.n).astype(float)
            # padding rows repeat the group's first row, so every feature is valid (masked out below)
            first = np.where(idx < spec.n, idx, idx[:, :1])
            feats = {k: v[first] for k, v in res.feats.items()}
            self.buckets.append(
                SizeClass(
                    groups=groups,
                    idx=idx,
                    m=m,
                    mm=m[:, :, None] * m[:, None, :],
                    pad=np.eye(s)[None] * (1 - m)[:, :, None],
                    feats=feats,
                    X=Xe[idx],
                    y=ye[idx],
                    Z=Ze[idx],
                    n=m.sum(axis=1),
                )
            )
        self.G = G
        self.loglik_dim: str | None = res.group
        self.loglik_labels: list[str] = list(res.levels)

    # -- PyTensor -------------------------------------------------------------
    def _R_pt(self, bk: SizeClass, res: dict[str, Any]) -> Any:
        import pytensor.tensor as pt

        return self.structure.matrix(bk.feats, res, pt) * bk.mm + bk.pad

    def _chol_V(self, Ls: list[Any], res: dict[str, Any]) -> list[Any]:
        import pytensor.tensor as pt
        from pytensor.tensor.linalg import block_diag

        out = []
        Lfull = (block_diag(*Ls) if len(Ls) > 1 else Ls[0]) if Ls else None
        for bk in self.buckets:
            V = self._R_pt(bk, res)
            if Lfull is not None:
                ZL = pt.as_tensor_variable(bk.Z) @ Lfull  # (G_s, s, q)
                V = V + ZL @ pt.swapaxes(ZL, 1, 2)
            out.append(pt.linalg.cholesky(V))
        return out

    @staticmethod
    def _logdet(C: Any) -> Any:
        return _logdet_chol(C, C.type.shape[-1])

    @staticmethod
    def _whiten(C: Any, B: Any) -> Any:
        import pytensor.tensor as pt

        return pt.linalg.solve_triangular(C, pt.as_tensor_variable(B), lower=True, b_ndim=2)

    def _pt_y(self) -> Any:
        """The rows ``y`` (data container :data:`Y_DATA`) with a zero appended for the padding rows ``(n + 1,)``."""
        import pytensor.tensor as pt

        return pt.concatenate([pt_data(Y_DATA, self.spec.y), pt.zeros(1)])

    def pt_marginal(self, Ls: list[Any], res: dict[str, Any], beta: Any, n: int) -> Any:
        import pytensor.tensor as pt

        total = n * np.log(2 * np.pi)
        ye = self._pt_y()
        for bk, C in zip(self.buckets, self._chol_V(Ls, res)):
            r = ye[bk.idx] - pt.as_tensor_variable(bk.X) @ beta  # (G_s, s)
            rw = pt.linalg.solve_triangular(C, r, lower=True, b_ndim=1)
            total = total + self._logdet(C) + pt.sum(rw**2)
        return -0.5 * total

    def pt_restricted(self, Ls: list[Any], res: dict[str, Any], beta_prior_var: float, n: int) -> Any:
        import pytensor.tensor as pt

        logdet, A, bv, yy = 0.0, 0.0, 0.0, 0.0
        ye = self._pt_y()
        for bk, C in zip(self.buckets, self._chol_V(Ls, res)):
            W = self._whiten(C, pt.concatenate([pt.as_tensor_variable(bk.X), ye[bk.idx][:, :, None]], axis=2))
            # W: (G_s, s, p + 1)
            WtW = pt.sum(pt.swapaxes(W, 1, 2) @ W, axis=0)
            logdet = logdet + self._logdet(C)
            A, bv, yy = A + WtW[:-1, :-1], bv + WtW[:-1, -1], yy + WtW[-1, -1]
        return _restricted_tail(n, logdet, A, bv, yy, beta_prior_var)

    def pt_conditional(self, mu: Any, res: dict[str, Any], n: int) -> Any:
        """``log N(y; mu, R)`` for the conditional mean ``mu`` (random effects given)."""
        import pytensor.tensor as pt

        r = self._pt_y() - pt.concatenate([mu, pt.zeros(1)])
        total = n * np.log(2 * np.pi)
        for bk in self.buckets:
            C = pt.linalg.cholesky(self._R_pt(bk, res))
            rw = self._whiten(C, r[bk.idx][:, :, None])
            total = total + self._logdet(C) + pt.sum(rw**2)
        return -0.5 * total

    # -- NumPy -----------------------------------------------------------------
    def _R_np(self, bk: SizeClass, res: dict[str, float]) -> np.ndarray:
        return self.structure.matrix(bk.feats, res) * bk.mm + bk.pad

    def np_state(self, Lks: list[np.ndarray], res: dict[str, float]) -> DenseState:
        from scipy.linalg import block_diag

        L = block_diag(*Lks) if Lks else np.zeros((0, 0))
        D = L @ L.T
        parts = []
        for bk in self.buckets:
            ZL = bk.Z @ L
            C = np.linalg.cholesky(self._R_np(bk, res) + ZL @ np.swapaxes(ZL, 1, 2))
            W = np.linalg.solve(C, np.concatenate([bk.X, bk.y[:, :, None], bk.Z], axis=2))
            parts.append(ClassState(logdet=2 * np.log(np.diagonal(C, axis1=1, axis2=2)).sum(axis=1), W=W))
        return DenseState(D=D, parts=parts, res=res)

    def np_gls(self, st: DenseState) -> tuple[np.ndarray, np.ndarray]:
        p = self.spec.p
        WtW = sum(np.einsum("gsa,gsb->ab", part.W[:, :, : p + 1], part.W[:, :, : p + 1]) for part in st.parts)
        return WtW[:p, :p], WtW[:p, p]

    def np_draw_beta(self, st: DenseState, beta_prior_var: float, rng: np.random.Generator) -> np.ndarray:
        """A draw of ``beta | psi, y`` under ``beta ~ N(0, beta_prior_var I)``."""
        A, bv = self.np_gls(st)
        Mi = np.linalg.inv(A + np.eye(A.shape[0]) / beta_prior_var)
        return rng.multivariate_normal(Mi @ bv, (Mi + Mi.T) / 2)

    def np_draw_b(self, st: DenseState, beta: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        p, D = self.spec.p, st.D
        b = np.zeros((self.G, self.q))
        for bk, part in zip(self.buckets, st.parts):
            W = part.W
            rw = W[:, :, p] - W[:, :, :p] @ beta  # (G_s, s) whitened residuals
            if self.q:
                Zw = W[:, :, p + 1 :]
                mean = np.einsum("ab,gsb,gs->ga", D, Zw, rw)
                cov = D - D @ np.swapaxes(Zw, 1, 2) @ Zw @ D
                b[bk.groups] = _mvn_draw(mean, cov, rng)
        return _split_terms(self.spec, b)

    def np_loglik(self, st: DenseState, beta: np.ndarray) -> np.ndarray:
        """``(G,)`` ``log N(y_i; X_i beta, V_i)``."""
        p, out = self.spec.p, np.empty(self.G)
        for bk, part in zip(self.buckets, st.parts):
            rw = part.W[:, :, p] - part.W[:, :, :p] @ beta
            out[bk.groups] = -0.5 * (bk.n * np.log(2 * np.pi) + part.logdet + np.sum(rw**2, axis=1))
        return out

    def np_residual_draws(self, res: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """``(draws, n)`` residuals ``e_i ~ N(0, R_i)``, one per draw of the process parameters."""
        k = np.asarray(res["sigma2"]).size
        e = np.zeros((k, self.spec.n + 1))
        for bk in self.buckets:
            for d in range(k):
                C = np.linalg.cholesky(self._R_np(bk, {key: float(np.ravel(v)[d]) for key, v in res.items()}))
                e[d, bk.idx] = (C @ rng.standard_normal((*bk.idx.shape, 1)))[:, :, 0] * bk.m
        return e[:, : self.spec.n]


def structure_for(spec: ModelSpec) -> Structure[Any]:
    """The structure of ``spec`` for the ``marginal``/``restricted`` densities and the exact draws.

    A row-less specification from sufficient statistics (``spec.source.blocks``) gets the structure
    built from the blocks: one term per level, several terms dense.
    """
    if not spec.has_rows:
        blocks = spec.source.blocks
        if len(spec.terms) == 1:
            return GroupStructure.from_blocks(spec, blocks)
        return FullStructure.from_blocks(spec, blocks)
    if spec.residual is not None:
        check_terms(spec.residual, spec.terms)
        return DenseGroupStructure(spec)
    if all(t.factors == spec.terms[0].factors for t in spec.terms):
        return GroupStructure(spec)
    return FullStructure(spec)
