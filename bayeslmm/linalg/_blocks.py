"""Cross-product blocks of ``[Z X y]``, formed once per model.

One evaluation of the ML/REML criterion needs the data only through these
blocks (MixedModels.jl's ``A = [Z X y]'[Z X y]``). The first random-effect
term (the one with most levels, as lme4 orders them) is kept block diagonal
by level; the other terms ("rest") are stored sparse.

With ``m = p + 1`` columns ``[X y]`` and ``Q1 = l1 q1`` columns in the first term:

=====  =================  ==========================================
block  shape              content
=====  =================  ==========================================
A11    (l1, q1, q1)       ``Z_1'Z_1``, one ``q1 x q1`` block per level
B1     (l1, q1, m)        ``Z_1'[X y]`` per level
C      sparse (Qr, Q1)    ``Z_r'Z_1`` (rest terms against the first)
D      (Qr, Qr)           ``Z_r'Z_r`` (dense: the Schur complement it enters is dense)
E      (Qr, m)            ``Z_r'[X y]``
F      (m, m)             ``[X y]'[X y]``
=====  =================  ==========================================

Blocks computed from disjoint sets of rows add up. ``pairs`` holds the
coefficients of ``C G C'`` (see :mod:`._pairs`), derived from ``C``.

Every block is formed from the working columns of :mod:`._basis` (``[X y]`` shifted, each term's
columns centred and scaled), never from the raw ones: ``basis`` and ``zbases`` (per term, in
the blocks' order) say how to map results back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..spec import ModelSpec, ReTerm
from ._basis import FixedBasis, TermBasis
from ._pairs import PairOperator

if TYPE_CHECKING:  # scipy.sparse is imported only for models with several terms (fast start-up)
    import scipy.sparse as sp


def term_matrix(term: ReTerm, Zcols: np.ndarray | None = None) -> sp.csr_matrix:
    """The sparse ``(n, nlevels * q)`` matrix ``Z_k`` of one term, columns level by level.

    ``Zcols`` replaces the term's raw columns (the working columns of :mod:`._basis`).
    """
    import scipy.sparse as sp

    Zc = term.Zraw if Zcols is None else Zcols
    n, q = Zc.shape
    rows = np.repeat(np.arange(n), q)
    cols = (term.codes[:, None] * q + np.arange(q)[None, :]).reshape(-1)
    return sp.csr_matrix((np.ascontiguousarray(Zc).reshape(-1), (rows, cols)), shape=(n, term.ncols))


def by_level(codes: np.ndarray, nlev: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``(nlev, a, b)`` sums over rows of each level of ``left[r, :, None] * right[r, None, :]``."""
    a, b = left.shape[1], right.shape[1]
    out = np.empty((nlev, a, b))
    for i in range(a):
        for j in range(b):
            out[:, i, j] = np.bincount(codes, weights=left[:, i] * right[:, j], minlength=nlev)
    return out


@dataclass(frozen=True)
class CrossProducts:
    """The blocks of ``[Z X y]'[Z X y]`` (see the module docstring for shapes)."""

    A11: np.ndarray
    B1: np.ndarray
    C: sp.csr_matrix | None
    D: np.ndarray | None
    E: np.ndarray | None
    F: np.ndarray
    n: int
    p: int
    qs: tuple[int, ...]
    nlevels: tuple[int, ...]
    pairs: PairOperator | None = None
    basis: FixedBasis | None = None
    zbases: tuple[TermBasis, ...] | None = None

    @property
    def fixed_basis(self) -> FixedBasis:
        """The shift of ``[X y]`` the blocks were formed with (identity if none)."""
        return self.basis if self.basis is not None else FixedBasis.identity(self.p)

    @property
    def term_bases(self) -> tuple[TermBasis, ...]:
        """Per term (blocks' order), the working columns' map (identity if none)."""
        return self.zbases if self.zbases is not None else tuple(TermBasis.identity(q) for q in self.qs)

    def working_factors(self, Ts: list[np.ndarray]) -> list[np.ndarray]:
        """``A_z^-1 T_k``: the relative factors acting on the working columns (not triangular)."""
        return [T if b.is_identity else b.Ainv @ T for b, T in zip(self.term_bases, Ts)]

    @property
    def Q1(self) -> int:
        """Columns of the first term."""
        return self.qs[0] * self.nlevels[0]

    @property
    def Qr(self) -> int:
        """Columns of the other terms together."""
        return sum(q * nl for q, nl in zip(self.qs[1:], self.nlevels[1:]))

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, basis: FixedBasis | None = None, zbases: tuple[TermBasis, ...] | None = None
    ) -> CrossProducts:
        """Form the blocks from the rows of a model specification (one pass).

        ``basis`` and ``zbases`` fix the working columns (default: from these rows); blocks of
        disjoint sets of rows add up when they share them.
        """
        if not spec.terms:
            raise ValueError("a linear mixed model needs at least one random-effect term")
        basis = FixedBasis.from_rows(spec.X, spec.y) if basis is None else basis
        Xy = np.column_stack([basis.apply(spec.X, None)[0], basis.apply_y(spec.y)])
        if zbases is None:
            zbases = tuple(TermBasis.from_rows(t.Zraw) for t in spec.terms)
        Zw = [b.apply(t.Zraw) for b, t in zip(zbases, spec.terms)]
        t1 = spec.terms[0]
        A11 = by_level(t1.codes, t1.nlevels, Zw[0], Zw[0])
        B1 = by_level(t1.codes, t1.nlevels, Zw[0], Xy)
        F = Xy.T @ Xy
        pairs = None
        if len(spec.terms) == 1:
            C = D = E = None
        else:
            import scipy.sparse as sp

            Z1 = term_matrix(t1, Zw[0])
            Zr = sp.hstack([term_matrix(t, z) for t, z in zip(spec.terms[1:], Zw[1:])], format="csr")
            ZrT = Zr.T.tocsr()
            C = (ZrT @ Z1).tocsr()
            D = (ZrT @ Zr).toarray()
            E = np.asarray(ZrT @ Xy)
            pairs = PairOperator.from_sparse(C, t1.q)
        return cls(
            A11=A11,
            B1=B1,
            C=C,
            D=D,
            E=E,
            F=F,
            n=spec.n,
            p=spec.p,
            qs=tuple(t.q for t in spec.terms),
            nlevels=tuple(t.nlevels for t in spec.terms),
            pairs=pairs,
            basis=basis,
            zbases=zbases,
        )

    def with_response(self, spec: ModelSpec, y: np.ndarray) -> CrossProducts:
        """Blocks for a new response on the same design: only the ``y`` columns change."""
        from dataclasses import replace

        basis, zb = self.fixed_basis.with_response(y), self.term_bases
        y = basis.apply_y(y)
        Xw, _ = basis.apply(spec.X, None)
        t1 = spec.terms[0]
        B1 = self.B1.copy()
        B1[:, :, -1] = by_level(t1.codes, t1.nlevels, zb[0].apply(t1.Zraw), y[:, None])[:, :, 0]
        F = self.F.copy()
        Xty = Xw.T @ y
        F[-1, :-1] = Xty
        F[:-1, -1] = Xty
        F[-1, -1] = y @ y
        E = None
        if self.E is not None:
            import scipy.sparse as sp

            Zr = sp.hstack([term_matrix(t, b.apply(t.Zraw)) for t, b in zip(spec.terms[1:], zb[1:])], format="csr")
            E = self.E.copy()
            E[:, -1] = Zr.T @ y
        return replace(self, B1=B1, F=F, E=E, basis=basis)
