"""Sufficient statistics of a Gaussian LMM with independent errors, mergeable across chunks of rows.

The REML/ML criterion depends on the data only through cross-products of
``[Z X y]`` (see :mod:`bayeslmm.linalg._blocks`). Per chunk of rows, with
``m = p_full + 1`` columns ``[X y]`` (every column of the fixed design) and, per
random-effect term ``k`` (in formula order), ``q_k`` columns and the ``l_k`` levels the
chunk holds:

==========  ============================  ===================================================
statistic   shape                         content
==========  ============================  ===================================================
n           int                           complete rows
F           (m, m)                        ``[X y]'[X y]``
R           (<= m, m)                     upper-triangular ``R`` of ``[X y] = QR`` (rank checks)
counts_k    (l_k,)                        rows per level
ZtZ_k       (l_k, q_k, q_k)               ``Z_ki'Z_ki`` per level ``i``
ZtXy_k      (l_k, q_k, m)                 ``Z_ki'[X y]_i`` per level
pair (j,k)  (npairs, q_j, q_k)            ``Z_j'Z_k`` per observed pair of levels (several terms)
==========  ============================  ===================================================

Two chunks merge by adding: the levels are matched by value (:class:`LevelKeys`), so the
chunks may hold different subsets of the levels in any order; ``R`` merges as in TSQR
(the ``R`` of the two stacked ``R``'s). Merging is associative and commutative up to
rounding. :meth:`SuffStats.to_model` sorts the levels into lme4's order, drops
rank-deficient fixed-effect columns as :func:`bayeslmm.model_spec` does and returns the
:class:`~bayeslmm.linalg.CrossProducts` the engine fits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..linalg import CrossProducts, FixedBasis, PairOperator, by_level
from ..spec import as_pandas, check_grouping, check_has_rows, drop_rank_deficient, no_complete_row
from ._levels import LevelKeys
from ._schema import DesignSchema


def _scatter_add(size: int, maps: Sequence[np.ndarray], arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``(size, ...)`` sums: part ``i`` adds its rows ``arrays[i]`` at the merged positions ``maps[i]``.

    One ``bincount`` per entry of the trailing shape, over the parts' rows stacked one entry at a
    time (memory for one column of all parts, not for all parts stacked).
    """
    codes = np.concatenate(maps)
    shape = arrays[0].shape[1:]
    width = int(np.prod(shape, dtype=np.int64))
    flat = [a.reshape(a.shape[0], width) for a in arrays]
    out = np.empty((size, width))
    for j in range(out.shape[1]):
        out[:, j] = np.bincount(codes, weights=np.concatenate([f[:, j] for f in flat]), minlength=size)
    return out.reshape((size, *shape))


@dataclass(frozen=True)
class TermStats:
    """Per-level cross-products of one random-effect term (see the module docstring)."""

    keys: LevelKeys
    counts: np.ndarray
    ZtZ: np.ndarray
    ZtXy: np.ndarray


@dataclass(frozen=True)
class PairStats:
    """``Z_j'Z_k`` of two terms ``j < k`` over the observed pairs of their levels.

    ``left``/``right`` ``(npairs,)`` index the levels of terms ``j``/``k``; ``blocks`` is
    ``(npairs, q_j, q_k)``.
    """

    left: np.ndarray
    right: np.ndarray
    blocks: np.ndarray


def _pair_index(T: int) -> list[tuple[int, int]]:
    return [(j, k) for j in range(T) for k in range(j + 1, T)]


@dataclass(frozen=True, eq=False)
class SuffStats:
    """What fitting an LMM with independent errors needs from a set of rows; add two to merge them.

    Build with :meth:`from_chunk` (one pass over a chunk of rows), merge with ``a + b``
    or :meth:`merge`, fit with :func:`bayeslmm.suff.lmm_from_stats`.

    Attributes
    ----------
    schema
        The design every chunk was built with.
    n, n_dropped
        Complete rows, and rows dropped for a missing value.
    F, R
        ``(m, m)`` ``[X y]'[X y]``, and the ``R`` factor of ``[X y]`` (``(min(n, m), m)``).
    terms
        One :class:`TermStats` per random-effect term, in formula order.
    pairs
        :class:`PairStats` for the term pairs ``(0, 1), (0, 2), ..., (1, 2), ...``.
    """

    schema: DesignSchema
    n: int
    n_dropped: int
    F: np.ndarray
    R: np.ndarray
    terms: tuple[TermStats, ...]
    pairs: tuple[PairStats, ...]

    @property
    def nlevels(self) -> tuple[int, ...]:
        """Levels seen so far per term (formula order)."""
        return tuple(len(t.keys) for t in self.terms)

    @classmethod
    def from_chunk(cls, schema: DesignSchema, data: Any) -> SuffStats:
        """Statistics of the complete rows of one chunk (a pandas or polars frame), in one pass.

        Raises
        ------
        DataError
            As :meth:`DesignSchema.prepare`.
        """
        ch = schema.prepare(data)
        Xy, Zw = schema.working(ch)
        n, m = Xy.shape
        F = Xy.T @ Xy
        R = np.linalg.qr(Xy, mode="r") if n else np.zeros((0, m))
        terms = []
        for c, k, Z in zip(ch.codes, ch.keys, Zw):
            nl = len(k)
            terms.append(
                TermStats(
                    keys=k,
                    counts=np.bincount(c, minlength=nl).astype(np.int64),
                    ZtZ=by_level(c, nl, Z, Z),
                    ZtXy=by_level(c, nl, Z, Xy),
                )
            )
        pairs = []
        for j, kk in _pair_index(len(terms)):
            nk = len(ch.keys[kk])
            pc, first = pd.factorize(ch.codes[j] * nk + ch.codes[kk])
            pc = pc.astype(np.int64, copy=False)
            blocks = by_level(pc, len(first), Zw[j], Zw[kk])
            first = np.asarray(first, dtype=np.int64)
            pairs.append(PairStats(left=first // nk if nk else first, right=first % nk if nk else first, blocks=blocks))
        return cls(schema, n, ch.n_dropped, F, R, tuple(terms), tuple(pairs))

    @classmethod
    def merge(cls, parts: Iterable[SuffStats]) -> SuffStats:
        """The statistics of the union of the rows of ``parts`` (all merged at once).

        Raises
        ------
        DataError
            If the parts were built with different schemas (formula, dtypes or levels).
        """
        parts = list(parts)
        if not parts:
            raise DataError("nothing to merge: give at least one SuffStats")
        if len(parts) == 1:
            return parts[0]
        schema = parts[0].schema
        for p in parts[1:]:
            if p.schema.key != schema.key:
                raise DataError(
                    "these statistics were built with different schemas (formula, column types or "
                    "categorical levels); build every chunk with the same DesignSchema"
                )
        m = parts[0].F.shape[0]
        Rs = [p.R for p in parts if p.R.shape[0]]
        R = np.linalg.qr(np.vstack(Rs), mode="r") if Rs else np.zeros((0, m))
        terms, maps = [], []
        for k in range(len(parts[0].terms)):
            keys, mk = LevelKeys.merge([p.terms[k].keys for p in parts])
            nl = len(keys)
            counts = _scatter_add(nl, mk, [p.terms[k].counts for p in parts]).round().astype(np.int64)
            terms.append(
                TermStats(
                    keys=keys,
                    counts=counts,
                    ZtZ=_scatter_add(nl, mk, [p.terms[k].ZtZ for p in parts]),
                    ZtXy=_scatter_add(nl, mk, [p.terms[k].ZtXy for p in parts]),
                )
            )
            maps.append(mk)
        pairs = []
        for a, (j, k) in enumerate(_pair_index(len(terms))):
            nk = len(terms[k].keys)
            keyed = [maps[j][i][p.pairs[a].left] * nk + maps[k][i][p.pairs[a].right] for i, p in enumerate(parts)]
            pc, first = pd.factorize(np.concatenate(keyed))
            first = np.asarray(first, dtype=np.int64)
            edges = np.cumsum([0, *(len(x) for x in keyed)])
            pm = [pc[edges[i] : edges[i + 1]] for i in range(len(parts))]
            blocks = _scatter_add(len(first), pm, [p.pairs[a].blocks for p in parts])
            pairs.append(PairStats(left=first // nk, right=first % nk, blocks=blocks))
        return cls(
            schema,
            sum(p.n for p in parts),
            sum(p.n_dropped for p in parts),
            np.sum([p.F for p in parts], axis=0),
            R,
            tuple(terms),
            tuple(pairs),
        )

    def __add__(self, other: SuffStats) -> SuffStats:
        if not isinstance(other, SuffStats):
            return NotImplemented
        return SuffStats.merge([self, other])

    def __radd__(self, other: Any) -> SuffStats:
        if isinstance(other, int) and other == 0:  # sum(list_of_stats) starts from 0
            return self
        return NotImplemented

    def to_model(self) -> tuple[CrossProducts, ModelLayout]:
        """The engine's cross-product blocks and the model layout, levels in lme4's order.

        Rank-deficient fixed-effect columns are detected from ``R`` exactly as
        :func:`bayeslmm.model_spec` detects them from ``X`` (R's ``qr``, tolerance 1e-7),
        dropped with the same warning, and left out of every block.

        Raises
        ------
        DataError
            For no complete row, a grouping factor with fewer than 2 levels, or more
            random effects than observations (the checks of :func:`bayeslmm.model_spec`).
        """
        schema, n = self.schema, self.n
        if n == 0:
            raise no_complete_row()
        p_full = schema.p_full
        Rx = self.R[:, :p_full]
        _, kept_names, dropped = drop_rank_deficient(Rx, list(schema.fixef_names), stacklevel=3)
        keep = [schema.fixef_names.index(nm) for nm in kept_names]
        cols = np.array([*keep, p_full])
        layouts = []
        for bar, t, cn in zip(schema.parsed.bars, self.terms, schema.coef_names):
            perm, labels = t.keys.order()
            check_grouping(bar, len(labels), len(cn), n)
            inv = np.empty_like(perm)
            inv[perm] = np.arange(perm.size)
            layouts.append((perm, inv, labels))
        order = sorted(range(len(self.terms)), key=lambda k: -len(layouts[k][2]))  # lme4: most levels first
        qs = [len(schema.coef_names[k]) for k in order]
        nls = [len(layouts[k][2]) for k in order]
        t1 = self.terms[order[0]]
        perm1 = layouts[order[0]][0]
        A11 = t1.ZtZ[perm1]
        B1 = t1.ZtXy[perm1][:, :, cols]
        F = self.F[np.ix_(cols, cols)]
        C = D = E = pairs = None
        if len(order) > 1:
            C, D, E = self._rest_blocks(order, qs, nls, layouts, cols)
            pairs = PairOperator.from_sparse(C, qs[0])
        basis = zbases = None
        if schema.fbasis is not None and schema.zbases is not None:
            fb = schema.fbasis
            j0 = keep.index(fb.intercept) if fb.intercept in keep else None
            basis = FixedBasis(j0, fb.centres[keep], fb.shift_y) if j0 is not None else FixedBasis.identity(len(keep))
            zbases = tuple(schema.zbases[k] for k in order)
        cp = CrossProducts(
            A11=A11,
            B1=B1,
            C=C,
            D=D,
            E=E,
            F=F,
            n=n,
            p=len(keep),
            qs=tuple(qs),
            nlevels=tuple(nls),
            pairs=pairs,
            basis=basis,
            zbases=zbases,
        )
        layout = ModelLayout(
            order=tuple(order),
            labels=tuple(tuple(layouts[k][2]) for k in order),
            counts=tuple(self.terms[k].counts[layouts[k][0]] for k in order),
            keys=tuple(self.terms[k].keys for k in order),
            level_index=tuple(layouts[k][1] for k in order),
            fixef_names=tuple(kept_names),
            dropped_columns=tuple(dropped),
            keep=tuple(keep),
        )
        return cp, layout

    def _pair_between(self, u: int, v: int, layouts: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``Z_u'Z_v`` as (rows, cols, values) in lme4's level order (``u != v`` in formula order)."""
        T = len(self.terms)
        j, k = min(u, v), max(u, v)
        ps = self.pairs[_pair_index(T).index((j, k))]
        qj, qk = ps.blocks.shape[1:]
        lj, lk = layouts[j][1][ps.left], layouts[k][1][ps.right]  # global level indices
        ia, ib = np.meshgrid(np.arange(qj), np.arange(qk), indexing="ij")
        rows = (lj[:, None, None] * qj + ia[None]).reshape(-1)
        cols = (lk[:, None, None] * qk + ib[None]).reshape(-1)
        vals = ps.blocks.reshape(-1)
        return (rows, cols, vals) if u == j else (cols, rows, vals)

    def _rest_blocks(
        self, order: list[int], qs: list[int], nls: list[int], layouts: list[Any], cols: np.ndarray
    ) -> tuple[Any, np.ndarray, np.ndarray]:
        """``C = Z_r'Z_1`` (sparse), ``D = Z_r'Z_r`` (dense) and ``E = Z_r'[X y]`` of the rest terms."""
        import scipy.sparse as sp

        first, rest = order[0], order[1:]
        sizes = [q * nl for q, nl in zip(qs[1:], nls[1:])]
        offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        Qr, Q1 = int(offs[-1]), qs[0] * nls[0]
        r_all, c_all, v_all = [], [], []
        D = np.zeros((Qr, Qr))
        E = np.empty((Qr, len(cols)))
        for a, k in enumerate(rest):
            r, c, v = self._pair_between(k, first, layouts)
            r_all.append(r + offs[a])
            c_all.append(c)
            v_all.append(v)
            t, q = self.terms[k], qs[a + 1]
            perm = layouts[k][0]
            blk = slice(offs[a], offs[a + 1])
            idx = np.arange(nls[a + 1])[:, None] * q + np.arange(q)[None, :]  # (nl, q)
            D[blk, blk][idx[:, :, None], idx[:, None, :]] = t.ZtZ[perm]
            E[blk] = t.ZtXy[perm][:, :, cols].reshape(-1, len(cols))
            for b in range(a):
                r2, c2, v2 = self._pair_between(k, rest[b], layouts)
                D[r2 + offs[a], c2 + offs[b]] = v2
                D[c2 + offs[b], r2 + offs[a]] = v2
        C = sp.csr_matrix((np.concatenate(v_all), (np.concatenate(r_all), np.concatenate(c_all))), shape=(Qr, Q1))
        return C, D, E


@dataclass(frozen=True)
class ModelLayout:
    """How the merged statistics map onto the engine's blocks (terms in lme4's order).

    Attributes
    ----------
    order
        Formula index of each term, most levels first.
    labels, counts
        Per term, the level labels in lme4's order and the rows per level.
    keys, level_index
        Per term, the merged level keys and ``(l,)`` the lme4 position of each key.
    fixef_names, dropped_columns, keep
        Kept fixed-effect names, dropped ones, and the kept columns' indices in the full design.
    """

    order: tuple[int, ...]
    labels: tuple[tuple[str, ...], ...]
    counts: tuple[np.ndarray, ...]
    keys: tuple[LevelKeys, ...]
    level_index: tuple[np.ndarray, ...]
    fixef_names: tuple[str, ...]
    dropped_columns: tuple[str, ...]
    keep: tuple[int, ...]


def suff_stats(
    formula: str, data: Any, *, levels: dict[str, Sequence[Any]] | None = None, chunk_rows: int = 1_000_000
) -> SuffStats:
    """Sufficient statistics of an in-memory frame, built chunk by chunk.

    Parameters
    ----------
    formula
        lme4 syntax (independent errors), e.g. ``"y ~ x + (1 + x | g)"``.
    data
        A pandas or polars frame.
    levels
        Levels of categorical design columns (column -> levels); collected from ``data`` when absent.
    chunk_rows
        Rows per chunk: bounds the memory of the design matrices.
    """
    if int(chunk_rows) < 1:
        raise DataError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    df = as_pandas(data)
    check_has_rows(df)
    schema = DesignSchema.from_frame(formula, df, levels)
    df = df.loc[:, list(schema.columns)]
    step = int(chunk_rows)
    parts = [SuffStats.from_chunk(schema, df.iloc[i : i + step]) for i in range(0, df.shape[0], step)]
    return SuffStats.merge(parts)
