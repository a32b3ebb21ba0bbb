"""Blocked Cholesky factor of the penalised system at a value of theta.

The matrix factored is (lme4's, with ``Lambda = blockdiag(I_{l_k} (x) T_k)``)::

    Omega(theta) = [ Lambda'Z'Z Lambda + I    Lambda'Z'[X y] ]  =  L L'
                   [ [X y]'Z Lambda           [X y]'[X y]    ]

partitioned into the first term (block diagonal, factored level by level with
the batched kernels) and the rest (other terms, then ``X``, then ``y``), whose
Schur complement is dense and factored with LAPACK::

    L11 = chol(T1' A11_j T1 + I)                (per level)
    L21 = Omega21 L11^{-T}                      (sparse for rest terms, per level for [X y])
    L22 = chol(Omega22 - L21 L21')

``L21`` of the rest terms is never formed during optimisation: with
``G_j = T1 (T1' A11_j T1 + I)^{-1} T1'`` the Schur complement is
``Lr'(D - C G C')Lr + I`` next to ``Lr'(E - C G B1)`` (see :mod:`._pairs`).

Everything the profiled criteria need is read off ``L``: ``log|L_theta|^2``,
``log|R_X|^2`` and the penalised residual sum of squares ``r^2 = L[-1, -1]^2``.
"""

from __future__ import annotations

import functools
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ._batched import chol_batched, logdet_chol_batched, solve_lower_batched, solve_upper_batched
from ._blocks import CrossProducts

if TYPE_CHECKING:  # scipy.sparse is imported only for models with several terms (fast start-up)
    import scipy.sparse as sp


@functools.cache
def _tril_colmajor(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the lower triangle of a ``q x q`` matrix, column by column."""
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    return rows[order], cols[order]


def lambda_blocks(theta: np.ndarray, qs: tuple[int, ...]) -> list[np.ndarray]:
    """Split theta into the lower-triangular ``q_k x q_k`` factors ``T_k``.

    Within a term theta lists the lower triangle column by column, as lme4 does
    (``[T11, T21, T22]`` for ``q = 2``).
    """
    out, i = [], 0
    for q in qs:
        if q == 1:
            out.append(np.array([[theta[i]]], dtype=float))
            i += 1
            continue
        T = np.zeros((q, q))
        r, c = _tril_colmajor(q)
        k = r.size
        T[r, c] = theta[i : i + k]
        out.append(T)
        i += k
    return out


def pack_theta(Ts: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`lambda_blocks`: the lower triangles of ``T_k``, column by column."""
    out = []
    for T in Ts:
        r, c = _tril_colmajor(T.shape[0])
        out.append(T[r, c])
    return np.concatenate(out) if out else np.zeros(0)


def theta_to_working(cp: CrossProducts, theta: np.ndarray) -> np.ndarray:
    """Theta of the working columns (:mod:`._basis`): ``T_w`` lower triangular, ``T_w T_w' = A_z^-1 T T' A_z^-T``."""
    Ts = lambda_blocks(np.asarray(theta, dtype=float), cp.qs)
    return pack_theta([b.to_working(T) for b, T in zip(cp.term_bases, Ts)])


def theta_from_working(cp: CrossProducts, theta_w: np.ndarray) -> np.ndarray:
    """Theta of the original columns (lme4's) from the working one."""
    Tw = lambda_blocks(np.asarray(theta_w, dtype=float), cp.qs)
    return pack_theta([b.from_working(T) for b, T in zip(cp.term_bases, Tw)])


def _lambda_rest(Ts: list[np.ndarray], nlevels: tuple[int, ...]) -> sp.csr_matrix:
    """Sparse ``blockdiag_k(I_{l_k} (x) T_k)`` for the rest terms."""
    import scipy.sparse as sp

    return sp.block_diag([sp.kron(sp.eye(nl), T) for T, nl in zip(Ts, nlevels)], format="csr")


def _blockdiag(blocks: np.ndarray) -> sp.bsr_matrix:
    """Sparse block-diagonal matrix from ``(m, q, q)`` blocks."""
    import scipy.sparse as sp

    m, q, _ = blocks.shape
    return sp.bsr_matrix((blocks, np.arange(m), np.arange(m + 1)), shape=(m * q, m * q))


def _left_scale(M: np.ndarray, Ts: list[np.ndarray], nlevels: tuple[int, ...]) -> np.ndarray:
    """``Lr' M`` for ``Lr = blockdiag_k(I_{l_k} (x) T_k)`` applied to the rows of dense ``M``."""
    out = np.empty_like(M)
    start = 0
    for T, nl in zip(Ts, nlevels):
        q = T.shape[0]
        sl = slice(start, start + nl * q)
        if q == 1:
            out[sl] = T[0, 0] * M[sl]
        else:  # (nl, q, N) blocks, T' applied to each
            out[sl] = np.einsum("ab,lan->lbn", T, M[sl].reshape(nl, q, -1)).reshape(nl * q, -1)
        start += nl * q
    return out


def _sym_scale(M: np.ndarray, Ts: list[np.ndarray], nlevels: tuple[int, ...]) -> np.ndarray:
    """``Lr' M Lr`` for symmetric ``M``; when every ``q_k`` is 1 only the lower triangle is used and set."""
    if all(T.shape[0] == 1 for T in Ts):  # Lr is diagonal, constant within a term: scale each block once
        edges = np.concatenate([[0], np.cumsum(nlevels)])
        for k, Tk in enumerate(Ts):
            for j in range(k + 1):
                M[edges[k] : edges[k + 1], edges[j] : edges[j + 1]] *= Tk[0, 0] * Ts[j][0, 0]
        return M
    M = np.tril(M) + np.tril(M, -1).T  # the general path mixes the two triangles
    return _left_scale(_left_scale(M, Ts, nlevels).T, Ts, nlevels).T


class BlockedFactor:
    """``L`` at one theta; see the module docstring.

    Attributes
    ----------
    Ts : the ``T_k`` factors of the original columns (lme4's ``Lambda``); Tw : those acting on the
    working columns of the blocks (``A_z^-1 T_k``, see :mod:`._basis`); L11 : ``(l1, q1, q1)``;
    W : ``(l1, q1, m)`` the ``[X y]`` part of ``L21`` (``L11^{-1} T1w' Z1w'[X y]_w``);
    L22 : ``(Qr + m, Qr + m)`` dense lower factor (working ``[X y]``).
    """

    def __init__(
        self,
        cp: CrossProducts,
        Ts: list[np.ndarray] | None,
        Tw: list[np.ndarray],
        L11: np.ndarray,
        W: np.ndarray,
        L22: np.ndarray,
    ) -> None:
        self.cp = cp
        self._Ts = Ts
        self.Tw = Tw
        self.L11 = L11
        self.W = W
        self.L22 = L22
        self.Qr = cp.Qr
        self.p = cp.p

    @property
    def Ts(self) -> list[np.ndarray]:
        """The relative factors ``T_k`` of the original columns (``Lambda``, lme4's)."""
        if self._Ts is None:
            self._Ts = [b.from_working(T) for b, T in zip(self.cp.term_bases, self.Tw)]
        return self._Ts

    @property
    def logdet_L(self) -> float:
        """``log|L_theta|^2``: log-determinant of ``Lambda'Z'Z Lambda + I``."""
        d = np.diag(self.L22)[: self.Qr]
        return logdet_chol_batched(self.L11) + 2.0 * float(np.sum(np.log(d)))

    @property
    def RXw(self) -> np.ndarray:
        """``(p, p)`` lower-triangular factor of ``X_w'V_theta^-1 X_w`` (working columns, ``V_theta = V / sigma^2``)."""
        s = slice(self.Qr, self.Qr + self.p)
        return self.L22[s, s]

    @property
    def RX(self) -> np.ndarray:
        """``(p, p)`` square ``R`` with ``R R' = X'V_theta^-1 X`` (original columns; triangular without a shift)."""
        return self.cp.fixed_basis.precision_factor(self.RXw)

    @property
    def logdet_RX(self) -> float:
        """``log|R_X|^2`` (the shift of the columns has determinant 1)."""
        return 2.0 * float(np.sum(np.log(np.diag(self.RXw))))

    @property
    def pwrss(self) -> float:
        """Penalised weighted residual sum of squares ``r^2(theta)`` at the conditional modes."""
        return float(self.L22[-1, -1] ** 2)

    @cached_property
    def _L11inv(self) -> np.ndarray:
        return solve_lower_batched(self.L11, np.broadcast_to(np.eye(self.L11.shape[1]), self.L11.shape))

    @cached_property
    def L21r(self) -> sp.csr_matrix | None:
        """Sparse ``(Qr, Q1)`` block ``Lr' C T1 L11^{-T}`` of ``L`` (formed only after optimisation)."""
        if self.cp.C is None:
            return None
        Lr = _lambda_rest(self.Tw[1:], self.cp.nlevels[1:])
        right = _blockdiag(self.Tw[0] @ np.swapaxes(self._L11inv, 1, 2))
        return (Lr.T @ self.cp.C @ right).tocsr()

    def solve_modes(self) -> tuple[np.ndarray, np.ndarray]:
        """Conditional modes ``u`` (spherical, all terms stacked) and ``beta`` at this theta.

        Returns
        -------
        u : ``(Q1 + Qr,)`` with the first term's levels first.
        beta : ``(p,)``.
        """
        u, beta_w = self.solve_modes_working()
        return u, self.cp.fixed_basis.beta(beta_w)

    def solve_modes_working(self) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`solve_modes`, with the coefficients ``beta_w`` of the working columns."""
        l1, q1, m = self.W.shape
        c = self.L22[-1, :-1]
        rest = np.linalg.solve(self.L22[:-1, :-1].T, c)  # once per fit: LU on a triangle is fine
        u_r, beta = rest[: self.Qr], rest[self.Qr :]
        # L21a' [u_r; beta]: contribution of the rest unknowns to the first block's equations
        t = self.W[:, :, :-1] @ beta  # (l1, q1)
        if self.L21r is not None:
            t = t + (self.L21r.T @ u_r).reshape(l1, q1)
        rhs = (self.W[:, :, -1] - t)[:, :, None]
        u1 = solve_upper_batched(self.L11, rhs)[:, :, 0].reshape(-1)
        return np.concatenate([u1, u_r]), beta

    def cond_cov_blocks(self) -> list[np.ndarray]:
        """Diagonal blocks of ``Lambda (L_theta L_theta')^{-1} Lambda'`` per term and level.

        Multiply by ``sigma^2`` to get lme4's conditional covariances of the random
        effects (``ranef(condVar = TRUE)``), which hold beta at its estimate.

        Returns
        -------
        A list over terms of ``(nlevels_k, q_k, q_k)`` arrays.
        """
        l1, q1, _ = self.L11.shape
        Linv = self._L11inv  # (l1, q1, q1) = L11_j^{-1}
        M11 = np.swapaxes(Linv, 1, 2) @ Linv  # L11^{-T} L11^{-1} per level
        out = []
        if self.L21r is not None and self.Qr > 0:
            L22r = self.L22[: self.Qr, : self.Qr]
            Ginv = np.linalg.inv(L22r)  # (Qr, Qr) = L22r^{-1}
            B = (self.L21r @ _blockdiag(Linv)).tocsc()  # sparse (Qr, Q1) = L21r L11^{-1}
            H = np.asarray((B.T @ Ginv.T).T)  # (Qr, Q1) = L22r^{-1} B, sparse-times-dense
            Hb = H.reshape(self.Qr, l1, q1)
            M11 = M11 + np.einsum("rla,rlb->lab", Hb, Hb)
            M22 = Ginv.T @ Ginv  # (Qr, Qr) = L22r^{-T} L22r^{-1}
        T1 = self.Ts[0]
        out.append(T1 @ M11 @ T1.T)
        start = 0
        for T, nl in zip(self.Ts[1:], self.cp.nlevels[1:]):
            q = T.shape[0]
            idx = start + np.arange(nl)[:, None] * q + np.arange(q)[None, :]  # (nl, q)
            blocks = M22[idx[:, :, None], idx[:, None, :]]  # (nl, q, q)
            out.append(T @ blocks @ T.T)
            start += nl * q
        return out


def factorize(cp: CrossProducts, theta: np.ndarray, *, working: bool = False) -> BlockedFactor:
    """Factor ``Omega(theta)`` from the cross-product blocks (no pass over the rows).

    ``theta`` is lme4's (the original columns), or with ``working=True`` that of the working
    columns (:func:`theta_to_working`); ``Omega`` is the same matrix either way.

    Raises
    ------
    numpy.linalg.LinAlgError
        If a block is numerically not positive definite.
    """
    T_in = lambda_blocks(np.asarray(theta, dtype=float), cp.qs)
    Ts, Tw = (None, T_in) if working else (T_in, cp.working_factors(T_in))
    T1 = Tw[0]
    q1 = T1.shape[0]
    O11 = T1.T @ cp.A11 @ T1
    O11[:, np.arange(q1), np.arange(q1)] += 1.0
    L11 = chol_batched(O11)
    W = solve_lower_batched(L11, T1.T @ cp.B1)  # (l1, q1, m): L11^{-1} T1' Z1'[X y]
    Wf = W.reshape(-1, W.shape[2])  # (Q1, m)
    S_xx = cp.F - Wf.T @ Wf
    if cp.C is None:
        return BlockedFactor(cp, Ts, Tw, L11, W, np.linalg.cholesky(S_xx))
    C, D, E, pairs = cp.C, cp.D, cp.E, cp.pairs  # the blocks of the other terms: all set when C is
    if D is None or E is None or pairs is None:
        raise ValueError("cross products of several terms need the blocks D and E and their pair operator")
    import scipy.linalg

    Qr, m = cp.Qr, S_xx.shape[0]
    Linv = solve_lower_batched(L11, np.broadcast_to(np.eye(q1), L11.shape))
    TL = T1 @ np.swapaxes(Linv, 1, 2)  # T1 L11^{-T}
    G = TL @ np.swapaxes(TL, 1, 2)  # (l1, q1, q1): T1 (T1'A11 T1 + I)^{-1} T1'
    S = np.empty((Qr + m, Qr + m))
    rest_T, rest_l = Tw[1:], cp.nlevels[1:]
    S_rr = S[:Qr, :Qr]
    np.subtract(D, pairs.lower(G), out=S_rr)
    S_rr[...] = _sym_scale(S_rr, rest_T, rest_l)  # lower triangle of Lr'(D - C G C')Lr (in place for q = 1)
    S_rr[np.diag_indices(Qr)] += 1.0
    S_rx = _left_scale(E - C @ (G @ cp.B1).reshape(-1, m), rest_T, rest_l)
    S[:Qr, Qr:] = S_rx
    S[Qr:, :Qr] = S_rx.T
    S[Qr:, Qr:] = S_xx
    # S.T is Fortran-ordered and its upper triangle is S's lower one: LAPACK factors it in place
    U, info = scipy.linalg.lapack.dpotrf(S.T, lower=0, clean=1, overwrite_a=1)
    L22 = U.T
    if info != 0:
        raise np.linalg.LinAlgError("Schur complement not positive definite")
    return BlockedFactor(cp, Ts, Tw, L11, W, L22)
