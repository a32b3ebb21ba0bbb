"""``C G C'`` for a fixed sparse ``C`` and a block-diagonal ``G`` that changes with theta.

In the Schur complement of the first random-effect term, the rest terms see
``C G C'`` with ``C = Z_r'Z_1`` (sparse, fixed) and ``G = blockdiag_j(G_j)``
(``q1 x q1`` per level of the first term, new at every theta). Entry
``(r, s)`` is ``sum_j sum_ab C[r, ja] G_j[a, b] C[s, jb]``: linear in ``vec(G)``.
The coefficients are gathered once into a sparse matrix ``M`` so that one
evaluation is the single product ``M @ vec(G)`` over the lower triangle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp


@dataclass(frozen=True)
class PairOperator:
    """The lower triangle of ``C G C'`` as one sparse product ``M @ vec(G)``.

    Attributes
    ----------
    M
        ``(Qr * Qr, l1 * q1 * q1)`` sparse coefficients; row ``r * Qr + s`` (``r >= s``)
        gives entry ``(r, s)``, so ``M @ vec(G)`` reshaped to ``(Qr, Qr)`` is the lower
        triangle of ``C G C'`` with zeros above the diagonal.
    Qr
        Order of the result.
    """

    M: sp.csr_matrix
    Qr: int

    @classmethod
    def from_sparse(cls, C: sp.spmatrix, q1: int) -> PairOperator:
        """Gather the coefficients of ``C G C'`` (``C`` of shape ``(Qr, l1 * q1)``)."""
        import scipy.sparse as sp

        Qr, Q1 = C.shape
        l1 = Q1 // q1
        coo = C.tocoo()
        lev = coo.col // q1
        order = np.lexsort((coo.row, lev))  # by level of the first term, then by row
        r, a, v, lev = coo.row[order], coo.col[order] % q1, coo.data[order], lev[order]
        k = np.bincount(lev, minlength=l1)  # nonzeros per level
        starts = np.cumsum(k) - k
        ntri = k * (k + 1) // 2  # pairs e1 >= e2 within a level (rows sorted, so r1 >= r2)
        lev_p = np.repeat(np.arange(l1), ntri)
        p = np.arange(int(ntri.sum())) - np.repeat(np.cumsum(ntri) - ntri, ntri)
        i1 = np.floor((np.sqrt(8.0 * p + 1.0) - 1.0) / 2.0).astype(np.int64)
        i1 += (i1 + 1) * (i1 + 2) // 2 <= p  # guard against rounding in the square root
        i1 -= i1 * (i1 + 1) // 2 > p
        e1 = starts[lev_p] + i1
        e2 = starts[lev_p] + p - i1 * (i1 + 1) // 2
        # a pair of distinct entries in the same row stands for both orders: (a, b) and (b, a)
        w = np.where((r[e1] == r[e2]) & (e1 != e2), 2.0, 1.0)
        key = r[e1].astype(np.int64) * Qr + r[e2]
        gcol = lev_p * (q1 * q1) + a[e1] * q1 + a[e2]
        M = sp.csr_matrix((w * v[e1] * v[e2], (key, gcol)), shape=(Qr * Qr, l1 * q1 * q1))  # duplicates summed
        return cls(M=M, Qr=Qr)

    def lower(self, G: np.ndarray) -> np.ndarray:
        """``(Qr, Qr)`` lower triangle of ``C G C'`` (zeros above), for ``G`` of shape ``(l1, q1, q1)``."""
        return (self.M @ G.reshape(-1)).reshape(self.Qr, self.Qr)
