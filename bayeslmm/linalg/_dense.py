"""The dense per-group kernel: ``log|V_rel|`` and ``Y'V_rel^{-1}Y`` for a residual structure without a
Markov factorisation (by visit, spatial, with a variance function ...).

Rows are group by group (each group in time order). Groups of one size are stacked, so each size
class costs one batched Cholesky of its ``(G_s, s, s)`` matrices ``R_i``: the process-whitened
``R_i^{-1/2}[Z_i Y_i]`` and ``log|R_i|``. The random effects are then added by Woodbury's identity
exactly as for the Markov kernel (:meth:`ProcessGram.woodbury`). Cost: ``O(sum_i n_i^3)``, fine
for the visits of a trial or the plots of a field, not for long series (use a Markov structure).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._kalman import FilterResult, GramResult, ProcessGram, SerialLayout


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
        self.classes: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
        for s in np.unique(sizes):
            groups = np.flatnonzero(sizes == s)
            idx = starts[groups][:, None] + np.arange(s)[None, :]  # (G_s, s) rows of U
            self.classes.append((groups, idx, {k: v[idx] for k, v in feats.items()}))

    def _whiten(self, M: np.ndarray, cov: Any) -> tuple[np.ndarray, float] | None:
        """``R^{-1/2} M`` group by group (rows in ``layout.order``) and ``log|R|``; None if ``R`` is not PD."""
        W = np.empty_like(M)
        logdet = 0.0
        for _, idx, f in self.classes:
            try:
                C = np.linalg.cholesky(cov(f))
            except np.linalg.LinAlgError:
                return None
            W[idx] = np.linalg.solve(C, M[idx])
            logdet += 2.0 * float(np.log(np.diagonal(C, axis1=1, axis2=2)).sum())
        return W, logdet

    def evaluate(self, T: np.ndarray | None, structure: Any, psi: np.ndarray) -> GramResult:
        """The criterion's pieces at ``D_rel = T T'`` and the structure's parameters ``psi``."""
        nat = structure.natural(psi, 1.0)
        out = self._whiten(self.U, lambda f: structure.matrix(f, nat))
        if out is None or not np.isfinite(out[1]):
            return GramResult(np.inf, np.full((self.c, self.c), np.nan))
        return self.woodbury(out[0], out[1], T, grouped=True)

    def filter(
        self, Y: np.ndarray, Z: np.ndarray | None, D_rel: np.ndarray | None, structure: Any, psi: np.ndarray
    ) -> FilterResult:
        """``V_rel^{-1/2} Y`` with ``V_rel = Z D_rel Z' + R`` per group (Cholesky, rows in time order: the
        standardised innovations) and ``log|V_rel|``; rows of ``Y``/``Z`` and of the result in the data's order."""
        nat = structure.natural(psi, 1.0)
        rows = self.layout.order
        Yo = Y[rows]
        Zo = None if Z is None else Z[rows]

        def cov(f: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
            V = structure.matrix(f, nat)
            if Zo is not None and D_rel is not None:
                Zi = Zo[idx]
                V = V + Zi @ D_rel @ np.swapaxes(Zi, 1, 2)
            return V

        W = np.empty_like(Yo)
        logdet = 0.0
        for _, idx, f in self.classes:
            try:
                C = np.linalg.cholesky(cov(f, idx))
            except np.linalg.LinAlgError:
                return FilterResult(np.full_like(Y, np.nan), np.inf, None, None)
            W[idx] = np.linalg.solve(C, Yo[idx])
            logdet += 2.0 * float(np.log(np.diagonal(C, axis1=1, axis2=2)).sum())
        out = np.empty_like(W)
        out[rows] = W
        return FilterResult(out, logdet, None, None)

    def draw(self, structure: Any, psi: np.ndarray, scale2: float, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` residuals ``e ~ N(0, s^2 R)``, rows in the data's order."""
        nat = structure.natural(psi, scale2)
        e = np.empty(self.n)
        for _, idx, f in self.classes:
            C = np.linalg.cholesky(structure.matrix(f, nat))
            e[idx] = (C @ rng.standard_normal((*idx.shape, 1)))[:, :, 0]
        out = np.empty(self.n)
        out[self.layout.order] = e
        return out
