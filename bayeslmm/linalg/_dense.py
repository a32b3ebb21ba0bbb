"""The dense per-group kernel: ``log|V_rel|`` and ``Y'V_rel^{-1}Y`` for a residual structure without a
Markov factorisation (by visit, spatial, with a variance function ...).

Rows are group by group (each group in time order). Groups of one size are stacked, so each size
class costs one batched Cholesky of its ``(G_s, s, s)`` matrices ``R_i``: the process-whitened
``R_i^{-1/2}[Z_i Y_i]`` and ``log|R_i|``. The random effects are then added by Woodbury's identity
exactly as for the Markov kernel (:meth:`ProcessGram.woodbury`). Cost: ``O(sum_i n_i^3)``, fine
for the visits of a trial or the plots of a field, not for long series (use a Markov structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._kalman import FilterResult, GramResult, ProcessGram, SerialLayout

#: pad every group to the largest where that adds at most this factor to the sum of the n_i^2
PAD_RATIO = 2.0


@dataclass(frozen=True)
class SizeBatch:
    """Groups whitened together: ``idx`` ``(G_s, s)`` rows of ``U`` (layout order; a padding row repeats
    the group's first row), ``mask`` the real rows, ``rows = idx[mask]``, ``pad``/``mm`` the identity on
    padding rows and the mask of pairs (None without padding), ``feats`` the features ``(G_s, s, ...)``."""

    groups: np.ndarray
    idx: np.ndarray
    mask: np.ndarray
    rows: np.ndarray
    pad: np.ndarray | None
    mm: np.ndarray | None
    feats: dict[str, np.ndarray]


class DenseGram(ProcessGram):
    """:class:`ProcessGram` with the process whitened by a dense Cholesky factor per group.

    Parameters
    ----------
    layout
        Row order (:class:`SerialLayout`); rows are taken group by group (``layout.order``).
    U
        ``(n, q + c)`` columns ``[Z Y]`` already in ``layout.order``.
    q
        Number of random-effect columns in ``U``.
    feats
        The structure's per-row features (:mod:`bayeslmm.cov._base`), rows of ``layout.order``.
    """

    def __init__(self, layout: SerialLayout, U: np.ndarray, q: int, feats: dict[str, np.ndarray]) -> None:
        super().__init__(layout, None, None, closed_form=True, U=U, q=q)
        starts = np.asarray(layout.starts, dtype=np.int64)
        sizes = np.diff(np.r_[starts, self.n])
        self.sizes = sizes
        self.classes: list[SizeBatch] = []
        smax = int(sizes.max()) if sizes.size else 0
        # one batch padded to the largest group where that costs little (the visits of a trial, with
        # some missed): one LAPACK call per evaluation instead of one per group size
        if sizes.size and sizes.size * smax**2 <= PAD_RATIO * float(np.sum(sizes.astype(float) ** 2)):
            batches = [(np.arange(sizes.size), smax)]
        else:
            batches = [(np.flatnonzero(sizes == s), int(s)) for s in np.unique(sizes)]
        for groups, s in batches:
            pos = np.arange(s)[None, :]
            mask = pos < sizes[groups][:, None]  # (G_s, s) real rows
            idx = np.where(mask, starts[groups][:, None] + pos, starts[groups][:, None])  # pads repeat row 1
            self.classes.append(
                SizeBatch(
                    groups=groups,
                    idx=idx,
                    mask=mask,
                    rows=idx[mask],
                    pad=None if mask.all() else np.eye(s)[None] * (~mask)[:, :, None],
                    mm=None if mask.all() else (mask[:, :, None] & mask[:, None, :]).astype(float),
                    feats={k: v[idx] for k, v in feats.items()},
                )
            )

    def _gather(self, b: SizeBatch, M: np.ndarray) -> np.ndarray:
        """``(G_s, s, k)`` rows of ``M`` (layout order) in batch ``b``, zero on padding rows."""
        out = M[b.idx]
        if b.pad is not None:
            out[~b.mask] = 0.0
        return out

    def _batch_U(self, b: SizeBatch) -> np.ndarray:
        """:meth:`_gather` of ``U`` (constant: kept after the first call)."""
        cache: dict[int, np.ndarray] = self.__dict__.setdefault("_U_batches", {})
        key = id(b)
        if key not in cache:
            cache[key] = self._gather(b, self.U)
        return cache[key]

    @staticmethod
    def _padded(b: SizeBatch, R: np.ndarray) -> np.ndarray:
        """``R`` on the real rows, the identity on padding rows (uncorrelated, no data, log-determinant 0)."""
        if b.pad is None:
            return R
        assert b.mm is not None
        return R * b.mm + b.pad

    def _whiten(self, M: np.ndarray, cov: Any) -> tuple[np.ndarray, float] | None:
        """``R^{-1/2} M`` group by group (rows in ``layout.order``) and ``log|R|``; None if ``R`` is not PD."""
        W = np.empty_like(M)
        logdet = 0.0
        for b in self.classes:
            try:
                C = np.linalg.cholesky(self._padded(b, cov(b.feats)))
            except np.linalg.LinAlgError:
                return None
            W[b.rows] = np.linalg.solve(C, self._gather(b, M))[b.mask]
            logdet += 2.0 * float(np.log(np.diagonal(C, axis1=1, axis2=2)).sum())
        return W, logdet

    def evaluate(self, T: np.ndarray | None, structure: Any, psi: np.ndarray) -> GramResult:
        """The criterion's pieces at ``D_rel = T T'`` and the structure's parameters ``psi``."""
        nat = structure.natural(psi, 1.0)
        out = self._whiten(self.U, lambda f: structure.matrix(f, nat))
        if out is None or not np.isfinite(out[1]):
            return GramResult(np.inf, np.full((self.c, self.c), np.nan))
        return self.woodbury(out[0], out[1], T, grouped=True)

    def criterion_gradient(
        self, structure: Any, psi: np.ndarray, reml: bool, T: np.ndarray | None = None, scale2: float | None = None
    ) -> tuple[float, np.ndarray, np.ndarray] | tuple[float, np.ndarray, np.ndarray, float] | None:
        """Minus twice the profiled (restricted) log-likelihood and its gradient in the factor ``T`` of
        ``D_rel = T T'`` (of the random-effect columns ``Z`` of ``U``) and in the structure's parameters.

        ``V_i = Z_i T T'Z_i' + R_i`` is formed densely per group. With ``r = y - X beta_hat``,
        ``A = X'V^-1 X`` and ``s^2 = r'V^-1 r / (n - p)`` (REML; ``/ n`` ML) the derivative in ``V_i`` is
        ``G_i = V_i^-1 - [V_i^-1 X_i A^-1 X_i'V_i^-1] - V_i^-1 r_i r_i'V_i^-1 / s^2`` (the bracket for
        REML only; beta_hat is profiled, so it does not move); the gradient is ``sum_i tr(G_i dV_i)``:
        ``2 K T`` in ``T`` with ``K = sum_i Z_i'G_i Z_i``, and :meth:`ResidualStructure.gradient` in the
        structure's parameters. Each group costs ``O(n_i^3)``.

        With ``scale2`` the scale is not profiled: the deviance at ``V = scale2 V_rel`` (lmerTest's
        ``devfun_vp``, :func:`bayeslmm.freq._objective.varpar_deviance`), ``1 / scale2`` in place of
        ``1 / s^2`` above, and its derivative in ``s = sqrt(scale2)`` is returned as well.

        Returns ``(criterion, d/dT (q, q), d/dpsi)`` (and ``d/ds`` with ``scale2``), or None where ``V``
        is not positive definite.
        """
        nat = structure.natural(psi, 1.0)
        q = self.q
        c = self.c
        p = c - 1
        parts = []
        logdet = 0.0
        A = np.zeros((c, c))
        D = None if T is None or not q else T @ T.T
        for b in self.classes:
            V = structure.matrix(b.feats, nat)
            Ub = self._batch_U(b)
            Zb = Ub[:, :, :q]
            if D is not None:
                V = V + Zb @ D @ np.swapaxes(Zb, 1, 2)
            try:
                C = np.linalg.cholesky(self._padded(b, V))
            except np.linalg.LinAlgError:
                return None
            Q = np.linalg.inv(C)  # (G_s, s, s) C^-1
            W = Q @ Ub[:, :, q:]  # (G_s, s, c) whitened [X y]
            Wf = W.reshape(-1, c)
            A += Wf.T @ Wf
            logdet += 2.0 * float(np.log(np.diagonal(C, axis1=1, axis2=2)).sum())
            parts.append((b, Q, W, Zb))
        if not np.isfinite(logdet):
            return None
        try:
            L = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            return None
        d = np.diagonal(L)
        r2 = float(d[p]) ** 2
        if not r2 > 0:
            return None
        nmp = self.n - p if reml else self.n
        if scale2 is None:
            val = logdet + nmp * (1.0 + np.log(2.0 * np.pi * r2 / nmp))
            weight = nmp / r2  # 1 / s^2 at the profiled s^2
        else:
            val = logdet + r2 / scale2 + nmp * np.log(2.0 * np.pi * scale2)
            weight = 1.0 / scale2
        if reml:
            val += 2.0 * float(np.log(d[:p]).sum())
        try:
            # beta from the factor; A^-1 = La La' with La = L11^-T (A = L11 L11'): M A^-1 M' = (M La)(M La)'
            Linv = np.linalg.inv(L[:p, :p]) if p else np.zeros((0, 0))
        except np.linalg.LinAlgError:
            return None
        if p and not np.all(np.isfinite(Linv)):
            return None
        beta = Linv.T @ (Linv @ A[:p, p]) if p else np.zeros(0)
        grad = np.zeros(len(psi))
        K = np.zeros((q, q))
        La = Linv.T if (reml and p) else None
        for b, Q, W, Zb in parts:
            Qt = np.swapaxes(Q, 1, 2)
            u = Qt @ (W[:, :, p] - W[:, :, :p] @ beta)[:, :, None]  # (G_s, s, 1) V^-1 r
            G = Qt @ Q - weight * (u @ np.swapaxes(u, 1, 2))
            if La is not None:
                XL = (W[:, :, :p].reshape(-1, p) @ La).reshape(W.shape[0], W.shape[1], p)  # one GEMM
                B = Qt @ XL  # V^-1 X chol(A^-1): M A^-1 M' = B B'
                G -= B @ np.swapaxes(B, 1, 2)
            if b.mm is not None:
                G *= b.mm
            grad += structure.gradient(b.feats, G, psi)
            if D is not None:
                K += np.einsum("gsa,gst,gtb->ab", Zb, G, Zb, optimize=True)
        dT = 2.0 * K @ T if (D is not None and T is not None) else np.zeros((q, q))
        if scale2 is not None:
            s = np.sqrt(scale2)
            return float(val), dT, grad, float(-2.0 * r2 / s**3 + 2.0 * nmp / s)
        return float(val), dT, grad

    def filter(
        self, Y: np.ndarray, Z: np.ndarray | None, D_rel: np.ndarray | None, structure: Any, psi: np.ndarray
    ) -> FilterResult:
        """``V_rel^{-1/2} Y`` with ``V_rel = Z D_rel Z' + R`` per group (Cholesky, rows in time order: the
        standardised innovations) and ``log|V_rel|``; rows of ``Y``/``Z`` and of the result in the data's order."""
        nat = structure.natural(psi, 1.0)
        rows = self.layout.order
        Yo = Y[rows]
        Zo = None if Z is None else Z[rows]

        def cov(b: SizeBatch) -> np.ndarray:
            V = structure.matrix(b.feats, nat)
            if Zo is not None and D_rel is not None:
                Zi = self._gather(b, Zo)
                V = V + Zi @ D_rel @ np.swapaxes(Zi, 1, 2)
            return self._padded(b, V)

        W = np.empty_like(Yo)
        logdet = 0.0
        for b in self.classes:
            try:
                C = np.linalg.cholesky(cov(b))
            except np.linalg.LinAlgError:
                return FilterResult(np.full_like(Y, np.nan), np.inf, None, None)
            W[b.rows] = np.linalg.solve(C, self._gather(b, Yo))[b.mask]
            logdet += 2.0 * float(np.log(np.diagonal(C, axis1=1, axis2=2)).sum())
        out = np.empty_like(W)
        out[rows] = W
        return FilterResult(out, logdet, None, None)

    def draw(self, structure: Any, psi: np.ndarray, scale2: float, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` residuals ``e ~ N(0, s^2 R)``, rows in the data's order."""
        nat = structure.natural(psi, scale2)
        e = np.empty(self.n)
        for b in self.classes:
            C = np.linalg.cholesky(self._padded(b, structure.matrix(b.feats, nat)))
            e[b.rows] = (C @ rng.standard_normal((*b.idx.shape, 1)))[:, :, 0][b.mask]
        out = np.empty(self.n)
        out[self.layout.order] = e
        return out
