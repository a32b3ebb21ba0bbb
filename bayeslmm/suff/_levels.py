"""Levels of a grouping factor kept by value, so that chunks of rows can be merged in any order.

A chunk of rows sees some of the levels of each grouping factor, in the order they
first appear. :class:`LevelKeys` stores those levels by their values (one array per
column of an interaction ``a:b``), merges the levels of several chunks into their
union and, once every chunk is in, sorts them into the order that
:func:`bayeslmm.model_spec` gives them (as R's ``factor()``):

======  ======================================  =====================================
family  column dtype                            order and label
======  ======================================  =====================================
num     numeric or bool                         by value; labelled as R prints numbers
str     anything else (strings)                 by the text, code point by code point
cat     pandas categorical                      the order of the categories
======  ======================================  =====================================

The levels of an interaction are the observed combinations, sorted by the first
column's order, then the second's, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._errors import DataError
from ..spec import num_label


@dataclass(frozen=True)
class FactorKind:
    """How the values of one grouping column are compared, ordered and labelled.

    ``categories`` (``cat`` only) are the category labels in their order.
    """

    family: str
    categories: tuple[str, ...] | None = None

    @classmethod
    def of(cls, col: pd.Series) -> FactorKind:
        """The kind of a data column (see the module docstring)."""
        if isinstance(col.dtype, pd.CategoricalDtype):
            return cls("cat", tuple(str(c) for c in col.cat.categories))
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            return cls("num")
        return cls("str")


def _values(col: pd.Series, kind: FactorKind) -> np.ndarray | pd.Series:
    """The values of a complete (no NA) column in the form used as keys."""
    if kind.family == "num":
        if pd.api.types.is_bool_dtype(col):
            return col.to_numpy(dtype=bool)
        if pd.api.types.is_integer_dtype(col):
            return col.to_numpy(dtype=np.int64)
        return col.to_numpy(dtype=float)
    if kind.family == "cat":
        return col.astype(str)  # category labels; the order lives in ``kind.categories``
    return col.astype(str)


def _factorize(values: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (n,), uniques (l,))``: hash-based, levels in order of first appearance."""
    codes, uniques = pd.factorize(values)
    uniq = np.asarray(uniques, dtype=object) if not isinstance(uniques, np.ndarray) else uniques
    return codes.astype(np.int64, copy=False), uniq


def _combine(codes: Sequence[np.ndarray], sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the observed combinations of several coded columns.

    Returns ``(codes (n,), first (l,))``: the combination index of each row and one row
    index holding each combination.
    """
    key = codes[0]
    for c, s in zip(codes[1:], sizes[1:]):
        key, _ = pd.factorize(key * s + c)  # refactorize at each step: the product stays below n * s
        key = key.astype(np.int64, copy=False)
    nl = int(key.max()) + 1 if key.size else 0
    first = np.empty(nl, dtype=np.int64)
    first[key[::-1]] = np.arange(key.size - 1, -1, -1)
    return key, first


@dataclass(frozen=True)
class LevelKeys:
    """The distinct levels of one grouping factor seen in some rows, stored by value.

    Attributes
    ----------
    values
        One ``(l,)`` array per column of the grouping factor (one for ``g``, two for ``a:b``).
    kinds
        How each column is ordered and labelled.
    """

    values: tuple[np.ndarray, ...]
    kinds: tuple[FactorKind, ...]

    def __len__(self) -> int:
        return len(self.values[0])

    @classmethod
    def from_columns(cls, df: pd.DataFrame, factors: Sequence[str]) -> tuple[np.ndarray, LevelKeys]:
        """Levels of the interaction of ``factors`` in the (complete) rows of ``df``.

        Returns
        -------
        codes
            ``(n,)`` the level of each row, an index into the returned keys.
        keys
            The levels in order of first appearance.
        """
        kinds = tuple(FactorKind.of(df[f]) for f in factors)
        parts = [_factorize(_values(df[f], k)) for f, k in zip(factors, kinds)]
        if len(parts) == 1:
            return parts[0][0], cls((parts[0][1],), kinds)
        codes, first = _combine([p[0] for p in parts], [len(p[1]) for p in parts])
        values = tuple(u[c[first]] for c, u in parts)
        return codes, cls(values, kinds)

    @classmethod
    def merge(cls, parts: Sequence[LevelKeys]) -> tuple[LevelKeys, list[np.ndarray]]:
        """The union of the levels of ``parts``.

        Returns
        -------
        keys
            The union (in order of first appearance along ``parts``).
        maps
            For each part, ``(l_i,)`` the index of each of its levels in the union.

        Raises
        ------
        DataError
            If a grouping column has different kinds in different chunks (numbers in one,
            text in another) or categorical columns with conflicting category orders.
        """
        kinds = tuple(_merge_kinds([p.kinds[j] for p in parts]) for j in range(len(parts[0].kinds)))
        sizes = [len(p) for p in parts]
        cols = []
        for j in range(len(kinds)):
            vals = [p.values[j] for p in parts]
            if kinds[j].family == "num" and len({v.dtype for v in vals}) > 1:
                vals = [v.astype(float) for v in vals]  # int64 in one chunk, float64 (after NA) in another
            cols.append(_factorize(np.concatenate(vals)))
        if len(cols) == 1:
            codes, values = cols[0][0], (cols[0][1],)
        else:
            codes, first = _combine([c for c, _ in cols], [len(u) for _, u in cols])
            values = tuple(u[c[first]] for c, u in cols)
        edges = np.cumsum([0, *sizes])
        maps = [codes[edges[i] : edges[i + 1]] for i in range(len(parts))]
        return cls(values, kinds), maps

    def order(self) -> tuple[np.ndarray, list[str]]:
        """lme4's order of the levels and their labels.

        Returns
        -------
        perm
            ``(l,)``: ``perm[i]`` is the index (in these keys) of the ``i``-th level in lme4's order.
        labels
            ``l`` labels in that order (``"a:b"`` joined for interactions), as :func:`bayeslmm.model_spec`.
        """
        ranks, labels = [], []
        for v, k in zip(self.values, self.kinds):
            if k.family == "cat":
                pos = {c: i for i, c in enumerate(k.categories or ())}
                ranks.append(np.array([pos[x] for x in v], dtype=np.int64))
            else:
                ranks.append(np.unique(v, return_inverse=True)[1].reshape(-1))
        perm = np.lexsort(tuple(reversed(ranks))) if ranks else np.zeros(0, dtype=np.int64)
        for v, k in zip(self.values, self.kinds):
            labels.append(_labels(v[perm], k))
        if len(labels) == 1:
            return perm, labels[0]
        return perm, [":".join(parts) for parts in zip(*labels)]

    def index(self) -> pd.Index:
        """A hash index of these levels (for :meth:`index_of`)."""
        if len(self.values) == 1:
            return pd.Index(self.values[0])
        return pd.MultiIndex.from_arrays(list(self.values))

    def index_of(self, other: LevelKeys, index: pd.Index | None = None) -> np.ndarray:
        """``(len(other),)`` position of each level of ``other`` among these levels (-1 where absent).

        ``index`` is :meth:`index` of these keys, when the caller keeps it between calls.
        """
        index = self.index() if index is None else index
        if len(other.values) == 1:
            return np.asarray(index.get_indexer(other.values[0]), dtype=np.int64)
        return np.asarray(index.get_indexer(pd.MultiIndex.from_arrays(list(other.values))), dtype=np.int64)


def _labels(v: np.ndarray, kind: FactorKind) -> list[str]:
    if kind.family != "num":
        return [str(x) for x in v]
    if v.dtype.kind in "iu":
        return v.astype(str).tolist()
    return [num_label(x) for x in v]


def _merge_kinds(kinds: Sequence[FactorKind]) -> FactorKind:
    first = kinds[0]
    if any(k.family != first.family for k in kinds):
        found = {k.family for k in kinds}
        what = (
            "holds numbers in some chunks and text or categories in others"
            if "num" in found
            else "is categorical in some chunks and text in others"
        )
        raise DataError(
            f"a grouping column {what}; give it one type in every chunk (e.g. cast it to string before fitting)"
        )
    if first.family != "cat":
        return first
    cats = {k.categories for k in kinds}
    if len(cats) == 1:
        return first
    if all(list(c or ()) == sorted(c or ()) for c in cats):  # each sorted: their union sorted is consistent
        union: set[str] = set()
        for c in cats:
            union.update(c or ())
        return FactorKind("cat", tuple(sorted(union)))
    raise DataError(
        "a categorical grouping column has different, unsorted categories in different chunks, so its "
        "level order is ambiguous; give it the same categories everywhere or cast it to string"
    )
