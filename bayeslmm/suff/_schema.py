"""One design for every chunk: the formula bound to the columns, dtypes and categorical levels.

Fitting from sufficient statistics builds the fixed-effects matrix ``X`` and the
random-effect columns chunk by chunk, so their columns must not depend on which rows
a chunk holds. :class:`DesignSchema` fixes them once: formulaic builds the design on a
small *prototype* frame that holds every level of every categorical column used by
the formula (collected by a first, cheap pass over the data, or given by the user),
and the same formulaic model spec is then applied to each chunk
(``get_model_matrix``), as :func:`bayeslmm.freq._predict.predict` does for new data.

The columns are those :func:`bayeslmm.model_spec` would build from all the rows at
once: same names, same order, same reference levels. Transforms whose result
depends on all rows (``center``, ``scale``, ``standardize``, ``poly``, splines) cannot
be applied chunk by chunk and are refused.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, FormulaError
from ..linalg import FixedBasis, TermBasis
from ..spec import (
    FIXED_PART,
    FormulaUses,
    ParsedFormula,
    as_pandas,
    bar_label,
    check_fixed_finite,
    check_no_infinities,
    check_term_columns,
    check_term_finite,
    coef_names,
    evaluation_context,
    model_matrix,
    parse_formula,
    response_vector,
)
from ._levels import LevelKeys

#: rows of the first chunk that fix the working columns' centres and scales (see :meth:`DesignSchema.with_centres`)
CENTRE_ROWS = 1_000_000

#: formulaic transforms that learn a state (mean, sd, knots, orthogonal basis) from all the rows.
STATEFUL = ("center", "scale", "standardize", "poly", "bs", "cs", "cr", "cc")
_STATEFUL_RE = re.compile(rf"\b({'|'.join(STATEFUL)})\s*\(")
_UNKNOWN_CATEGORIES = "__UNKNOWN_CATEGORIES__"  # dask's placeholder for categories not yet known


def _is_text(dtype: Any) -> bool:
    return not (
        pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def _known_categorical(dtype: Any) -> bool:
    return isinstance(dtype, pd.CategoricalDtype) and _UNKNOWN_CATEGORIES not in list(dtype.categories)


@dataclass(frozen=True)
class FormulaColumns:
    """Which data columns a formula uses, and which of them need their levels collected.

    Attributes
    ----------
    parsed
        The formula split into response, fixed part and bars.
    columns
        Used data columns, in the order of the data.
    design
        Columns of the fixed part and of the bars' left-hand sides.
    categorical
        Design columns whose levels must be collected from the data: text columns, pandas
        categoricals whose categories are not known yet (dask's placeholder) and numeric columns
        inside ``C(...)``, in the order of the data. (Known categoricals carry their levels.)
    """

    parsed: ParsedFormula
    columns: tuple[str, ...]
    design: tuple[str, ...]
    categorical: tuple[str, ...]

    @classmethod
    def of(cls, formula: str, dtypes: Mapping[str, Any]) -> FormulaColumns:
        """Bind ``formula`` to the columns ``dtypes`` (name -> dtype) of the data.

        Raises
        ------
        FormulaError, DataError
            For a malformed formula, an unknown column or a transform that needs all the rows.
        """
        parsed = parse_formula(formula)
        names = [str(c) for c in dtypes]
        for part in (parsed.response, parsed.fixed, *(b.lhs for b in parsed.bars)):
            m = _STATEFUL_RE.search(part)
            if m:
                raise FormulaError(
                    f"{m.group(1)}() learns its transform from all the rows, but a fit from sufficient "
                    "statistics builds the design chunk by chunk: compute the transformed column before "
                    "fitting, or fit the data in memory with bayeslmm.lmm"
                )
        uses = FormulaUses.of(parsed, names)
        in_c = set()
        for part in (parsed.fixed, *(b.lhs for b in parsed.bars)):
            for m in re.finditer(r"\bC\s*\(\s*(`[^`]+`|[^,)]+)", part):
                arg = m.group(1).strip().strip("`")
                if arg not in names:
                    raise FormulaError(
                        f"C({arg}) codes an expression as categorical; its levels would have to come from all "
                        "the rows: compute it as a column before fitting from sufficient statistics"
                    )
                in_c.add(arg)
        design = [c for c in names if c in uses.design]
        categorical = [
            c
            for c in design
            if not _known_categorical(dtypes[c])
            and (c in in_c or _is_text(dtypes[c]) or isinstance(dtypes[c], pd.CategoricalDtype))
        ]
        return cls(parsed, tuple(c for c in names if c in uses.used), tuple(design), tuple(categorical))


def complete_rows(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """The rows of ``df[columns]`` with no missing value (lme4's ``na.omit``), after checking for infinities."""
    sub = df.loc[:, list(columns)]
    check_no_infinities(sub)
    complete = sub.notna().all(axis=1).to_numpy()
    return sub if complete.all() else sub.iloc[np.flatnonzero(complete)]


def chunk_levels(df: Any, formula: str) -> dict[str, np.ndarray]:
    """Distinct values of the categorical design columns in the complete rows of one chunk.

    The first, cheap pass over the data; merge the results of several chunks with
    :func:`merge_levels`.
    """
    df = as_pandas(df)
    fc = FormulaColumns.of(formula, dict(df.dtypes))
    sub = complete_rows(df, fc.columns)
    out = {}
    # a column categorical in every partition may be 'unknown categories' in the whole (Dask reading
    # a pandas categorical from Parquet): collect the levels of those too
    cats = [
        *fc.categorical,
        *(c for c in fc.design if c not in fc.categorical and isinstance(sub[c].dtype, pd.CategoricalDtype)),
    ]
    for c in cats:
        col = sub[c]
        if isinstance(col.dtype, pd.CategoricalDtype) or _is_text(col.dtype):
            col = col.astype(str)
        out[c] = np.asarray(pd.unique(col), dtype=object if _is_text(col.dtype) else None)
    return out


def merge_levels(parts: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The union of the per-chunk levels from :func:`chunk_levels`."""
    out: dict[str, list[np.ndarray]] = {}
    for p in parts:
        for c, v in p.items():
            out.setdefault(c, []).append(np.asarray(v))
    return {c: pd.unique(np.concatenate(v)) if len(v) > 1 else v[0] for c, v in out.items()}


@dataclass(frozen=True)
class PreparedChunk:
    """The model arrays of the complete rows of one chunk.

    Attributes
    ----------
    y : ``(n,)``; X : ``(n, p_full)`` every column of the fixed design (none dropped yet);
    Z : per bar ``(n, q_k)``; codes : per bar ``(n,)`` the row's level in ``keys``;
    keys : per bar, the levels seen in the chunk; rows : ``(n,)`` positions of the complete rows
    in the chunk; n_dropped : rows of the chunk with a missing value.
    """

    y: np.ndarray
    X: np.ndarray
    Z: tuple[np.ndarray, ...]
    codes: tuple[np.ndarray, ...]
    keys: tuple[LevelKeys, ...]
    rows: np.ndarray
    n_dropped: int


@dataclass(frozen=True, eq=False)
class DesignSchema:
    """The formula bound to the data's columns and levels; builds identical designs for every chunk.

    Build it with :meth:`from_frame` (levels from a data frame) or :meth:`from_levels`
    (dtypes and levels given, no pass over the data).

    Attributes
    ----------
    formula
        The formula text.
    parsed
        Response, fixed part and random-effect bars.
    columns
        Data columns the formula uses.
    dtypes
        Their dtypes (text columns are read as pandas' ``str``).
    levels
        Levels of the categorical design columns.
    fixef_names
        Names of all the columns of ``X`` (before rank-deficient columns are dropped).
    coef_names
        Per bar, the names of its random-effect columns.
    key
        A fingerprint: statistics are merged only between chunks built with equal keys.
    fbasis, zbases
        The working columns every chunk's cross-products are formed with
        (:class:`bayeslmm.linalg.FixedBasis`, :class:`bayeslmm.linalg.TermBasis`; ``zbases`` per bar in
        formula order): centres and scales
        taken once from the first rows (:meth:`with_centres`), so that a large constant in a column
        costs no digits and chunks still add up. None: the raw columns.
    """

    formula: str
    parsed: ParsedFormula
    columns: tuple[str, ...]
    dtypes: dict[str, Any]
    levels: dict[str, tuple[Any, ...]]
    fixef_names: tuple[str, ...]
    coef_names: tuple[tuple[str, ...], ...]
    key: str
    fixed_design: Any = field(repr=False)
    bar_designs: tuple[Any, ...] = field(repr=False)
    fbasis: FixedBasis | None = field(default=None, repr=False)
    zbases: tuple[TermBasis, ...] | None = field(default=None, repr=False)

    def with_centres(self, data: Any) -> DesignSchema:
        """This schema with the working columns' centres and scales taken from the complete rows of ``data``.

        Any rows will do (the first chunk, the first partition): the centres need only be near the
        data, not its exact means. A chunk without complete rows leaves the schema as it is.
        """
        from dataclasses import replace

        ch = self.prepare(data)
        if ch.y.shape[0] == 0:
            return self
        fb = FixedBasis.from_rows(ch.X, ch.y)
        zb = tuple(TermBasis.from_rows(Z) for Z in ch.Z)
        centres = (
            fb.intercept,
            fb.centres.tolist(),
            fb.shift_y,
            [(b.intercept, b.centres.tolist(), b.scales.tolist()) for b in zb],
        )
        return replace(self, fbasis=fb, zbases=zb, key=repr((self.key, centres)))

    def working(self, ch: PreparedChunk) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """``[X_w y_w]`` and the bars' ``Z_w`` of a prepared chunk (the raw columns without centres)."""
        if self.fbasis is None or self.zbases is None:
            return np.column_stack([ch.X, ch.y]), ch.Z
        Xw = self.fbasis.apply(ch.X, None)[0]
        return np.column_stack([Xw, self.fbasis.apply_y(ch.y)]), tuple(b.apply(Z) for b, Z in zip(self.zbases, ch.Z))

    @property
    def p_full(self) -> int:
        """Columns of ``X`` before rank-deficient ones are dropped."""
        return len(self.fixef_names)

    @classmethod
    def from_frame(cls, formula: str, data: Any, levels: Mapping[str, Iterable[Any]] | None = None) -> DesignSchema:
        """The schema of ``formula`` on a pandas or polars frame (levels collected from its complete rows).

        ``levels`` (column -> levels) skips the collection for the columns it names.
        """
        df = as_pandas(data)
        fc = FormulaColumns.of(formula, dict(df.dtypes))
        given = dict(levels or {})
        if any(c not in given for c in fc.categorical):
            given = {**chunk_levels(df.loc[:, list(fc.columns)], formula), **given}
        return cls.from_levels(formula, dict(df.dtypes), given).with_centres(df.iloc[:CENTRE_ROWS])

    @classmethod
    def from_levels(cls, formula: str, dtypes: Mapping[str, Any], levels: Mapping[str, Iterable[Any]]) -> DesignSchema:
        """The schema from the data's dtypes (column -> dtype, e.g. ``ddf.dtypes``) and categorical levels.

        Raises
        ------
        DataError
            If a categorical design column has no levels in ``levels``.
        """
        fc = FormulaColumns.of(formula, dtypes)
        dt = {
            c: (
                pd.StringDtype(na_value=np.nan)
                if _is_text(dtypes[c])
                or (isinstance(dtypes[c], pd.CategoricalDtype) and not _known_categorical(dtypes[c]))
                else dtypes[c]
            )
            for c in fc.columns
        }
        lev: dict[str, tuple[Any, ...]] = {c: tuple(dt[c].categories) for c in fc.design if _known_categorical(dt[c])}
        for c in fc.categorical:
            if c not in levels:
                raise DataError(
                    f"column {c!r} is categorical in the formula but its levels are unknown: pass "
                    f"levels={{{c!r}: [...]}} or let the first pass over the data collect them"
                )
            vals = pd.unique(np.asarray(list(levels[c]), dtype=object))
            if len(vals) == 0:
                raise DataError(f"column {c!r} has no level in the complete rows")
            if _is_text(dt[c]):
                lev[c] = tuple(sorted(str(v) for v in vals))
            else:
                lev[c] = tuple(sorted(vals))
        proto = _prototype(fc.columns, dt, lev)
        parsed = fc.parsed
        fx = model_matrix(parsed.fixed, proto, FIXED_PART)
        bars = [model_matrix(b.lhs, proto, bar_label(b)) for b in parsed.bars]
        for b, z in zip(parsed.bars, bars):
            check_term_columns(z.shape[1], b)
        key = repr((parsed.text, fc.columns, sorted((c, str(dt[c])) for c in fc.columns), sorted(lev.items())))
        return cls(
            formula=parsed.text,
            parsed=parsed,
            columns=fc.columns,
            dtypes=dt,
            levels=lev,
            fixef_names=tuple(coef_names(fx.columns)),
            coef_names=tuple(tuple(coef_names(z.columns)) for z in bars),
            key=key,
            fixed_design=fx.model_spec,
            bar_designs=tuple(z.model_spec for z in bars),
        )

    def prepare(self, data: Any) -> PreparedChunk:
        """The model arrays of the complete rows of one chunk (a pandas or polars frame).

        Raises
        ------
        DataError
            For a missing column, infinite values, a categorical level not in the schema,
            or non-finite design columns.
        """
        df = as_pandas(data)
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise DataError(f"the chunk lacks the column(s) {', '.join(missing)} that the formula uses")
        n_all = df.shape[0]
        sub = complete_rows(df.set_axis(pd.RangeIndex(n_all), axis=0), self.columns)
        sub = self._normalise(sub)
        n = sub.shape[0]
        parsed = self.parsed
        if n == 0:
            X = np.zeros((0, self.p_full))
            return PreparedChunk(
                np.zeros(0),
                X,
                tuple(np.zeros((0, len(c))) for c in self.coef_names),
                tuple(np.zeros(0, dtype=np.int64) for _ in parsed.bars),
                tuple(LevelKeys.from_columns(sub, b.factors)[1] for b in parsed.bars),
                np.zeros(0, dtype=np.int64),
                n_all,
            )
        y = response_vector(parsed, sub, list(self.columns))
        X = _apply(self.fixed_design, sub, "fixed-effects matrix")
        check_fixed_finite(X, self.fixef_names)
        Z, codes, keys = [], [], []
        for bar, design in zip(parsed.bars, self.bar_designs):
            Zk = _apply(design, sub, f"random-effect columns of ({bar.lhs} | {bar.group})")
            check_term_finite(Zk, bar)
            c, k = LevelKeys.from_columns(sub, bar.factors)
            Z.append(Zk)
            codes.append(c)
            keys.append(k)
        return PreparedChunk(y, X, tuple(Z), tuple(codes), tuple(keys), sub.index.to_numpy(), n_all - n)

    def _normalise(self, sub: pd.DataFrame) -> pd.DataFrame:
        """Give the chunk's design columns the schema's dtypes; refuse levels the schema does not know."""
        out = {}
        for c in self.columns:
            col = sub[c]
            dt = self.dtypes[c]
            if c in self.levels:
                if isinstance(dt, pd.CategoricalDtype):
                    new = col.astype(str).astype(dt) if col.dtype != dt else col
                    unknown = new.isna() & col.notna()
                elif _is_text(dt):
                    new = col.astype(dt)
                    unknown = ~new.isin(self.levels[c])
                else:
                    new = col
                    unknown = ~col.isin(self.levels[c])
                if unknown.any():
                    bad = sorted({str(v) for v in col[unknown].unique()[:5]})
                    raise DataError(
                        f"column {c!r} has level(s) {', '.join(bad)} not among the levels of the schema "
                        f"({len(self.levels[c])} known); collect the levels from all the data first or add "
                        "them to levels="
                    )
                col = new
            out[c] = col
        return pd.DataFrame(out, index=sub.index)


def _prototype(
    columns: tuple[str, ...], dtypes: Mapping[str, Any], levels: Mapping[str, tuple[Any, ...]]
) -> pd.DataFrame:
    """A few rows holding every level of every categorical column (others: ones of their dtype)."""
    k = max([1, *(len(v) for v in levels.values())])
    out = {}
    for c in columns:
        dt = dtypes[c]
        if c in levels:
            vals = list(levels[c])
            cyc = [vals[i % len(vals)] for i in range(k)]
            out[c] = pd.Series(cyc, dtype=dt)
        elif _is_text(dt):
            out[c] = pd.Series(["a"] * k, dtype=dt)
        elif isinstance(dt, pd.CategoricalDtype):
            out[c] = pd.Series(pd.Categorical([dt.categories[0]] * k, dtype=dt))
        else:
            out[c] = pd.Series(np.ones(k), dtype=dt)
    return pd.DataFrame(out)


def _apply(design: Any, df: pd.DataFrame, what: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mm = design.get_model_matrix(df, context=evaluation_context())
    except Exception as e:  # formulaic raises several types (missing column, bad values)
        raise DataError(f"cannot build the {what} of a chunk: {e}") from None
    return np.asarray(mm, dtype=float)
