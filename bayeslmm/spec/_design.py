"""Build a :class:`ModelSpec` from formula text and a data frame, all rows in memory.

Design matrices come from formulaic (treatment contrasts, interactions,
transforms); the random-effect bars are parsed in :mod:`._formula`. Every
expression is validated by :mod:`._safe` before formulaic sees it. The binding of
the formula to the columns and the checks of the design are those of
:mod:`._builder`, which the chunked :class:`bayeslmm.suff.DesignSchema` uses too.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, MissingValuesWarning
from ..cov import STRUCTURES
from ._builder import (
    FIXED_PART,
    FormulaUses,
    as_float,
    bar_label,
    check_fixed_finite,
    check_grouping,
    check_has_rows,
    check_term_columns,
    check_term_finite,
    coef_names,
    drop_rank_deficient,
    model_matrix,
    no_complete_row,
    response_vector,
)
from ._columns import as_pandas, check_no_infinities, column_problem, text_as_object
from ._formula import parse_formula
from ._residual import ResidualSpec, bind_residual, parse_residual, parse_variance
from ._spec import ModelSpec, ReTerm


def _unique_names(df: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """``df`` with its column labels as text, and the labels that occur more than once."""
    from collections import Counter

    names = [str(c) for c in df.columns]
    if any(not isinstance(c, str) for c in df.columns):
        df = df.set_axis(names, axis=1)
    return df, {n for n, k in Counter(names).items() if k > 1}


def _check_factor_levels(mm: Any, where: str) -> None:
    """Raise DataError for a categorical factor with fewer than 2 levels (as lme4's contrasts error)."""
    from formulaic.parser.types import Factor

    state = getattr(getattr(mm, "model_spec", None), "encoder_state", None) or {}
    for factor, (kind, st) in state.items():
        if kind != Factor.Kind.CATEGORICAL or not isinstance(st, dict):
            continue
        cats = list(st.get("categories", ()))
        if len(cats) < 2:
            seen = f"only the level {str(cats[0])!r}" if cats else "no level"
            raise DataError(
                f"factor {str(factor)!r} in the {where} has {seen} in the rows used; a factor needs at "
                "least 2 levels (lme4: 'contrasts can be applied only to factors with 2 or more levels'): "
                "remove it from the formula"
            )


def level_labels(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of a grouping column, levels sorted as R's factor() sorts them."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.remove_unused_categories()
        labels = [str(c) for c in cats.cat.categories]
        return cats.cat.codes.to_numpy().astype(np.int64), labels
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        uniq = np.sort(col.unique())
        codes = np.searchsorted(uniq, col.to_numpy())
        labels = [num_label(v) for v in uniq]
        return codes.astype(np.int64), labels
    s = col.astype(str)
    uniq = np.sort(s.unique())
    return np.searchsorted(uniq, s.to_numpy()).astype(np.int64), [str(u) for u in uniq]


def num_label(v: Any) -> str:
    """A numeric level as R prints it: a whole float without its ``.0``."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def grouping_codes(df: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes and level labels of the interaction of ``factors`` (observed combinations only)."""
    parts = [level_labels(df[f]) for f in factors]
    if len(parts) == 1:
        return parts[0]
    mat = np.stack([p[0] for p in parts], axis=1)
    combos, codes = np.unique(mat, axis=0, return_inverse=True)  # lexicographic, first factor slowest
    labels = [":".join(parts[k][1][c] for k, c in enumerate(row)) for row in combos]
    return codes.reshape(-1).astype(np.int64), labels


def _residual_column_error(e: DataError, res: ResidualSpec | None, columns: list[str]) -> DataError:
    """``e``, prefixed with the structure or variance function whose column is missing (if one is)."""
    if res is None:
        return e
    for c in res.columns:
        if c not in columns and repr(c) in str(e):
            if res.variance is not None and c == res.variance.column:
                return DataError(f"variance function {res.variance}: {e}")
            return DataError(f"residual structure {res}: {e}")
    return e


def _check_enough_subjects(residual: Any, X: np.ndarray, what: str) -> None:
    """An unstructured covariance of ``m`` visits needs ``m`` independent residual vectors: more subjects than
    ``m`` plus the rank of the fixed-effect columns constant within subjects (per stratum), or its estimate
    is singular.

    Raises
    ------
    DataError
        Naming the counts and what to do.
    """
    from ..cov import Heteroscedastic, Stratified, UnstructuredVisits

    s = residual.structure
    s = s.base if isinstance(s, Heteroscedastic) else s
    strat = s if isinstance(s, Stratified) else None
    bases = list(strat.bases) if strat is not None else [s]
    labels: list[str | None] = list(strat.strata) if strat is not None else [None]
    codes = residual.codes
    for a, (b, label) in enumerate(zip(bases, labels)):
        if not isinstance(b, UnstructuredVisits):
            continue
        keep = np.ones(codes.size, bool) if label is None else residual.feats["stratum"] == a
        g = np.unique(codes[keep], return_inverse=True)[1].reshape(-1)
        ng = int(g.max()) + 1 if g.size else 0
        Xs = X[keep]
        cnt = np.bincount(g, minlength=ng)
        between = []
        for j in range(Xs.shape[1]):
            mean = np.bincount(g, weights=Xs[:, j], minlength=ng) / np.maximum(cnt, 1)
            scale = max(float(np.max(np.abs(Xs[:, j]))) if Xs.size else 0.0, 1e-300)
            if np.max(np.abs(Xs[:, j] - mean[g]), initial=0.0) <= 1e-10 * scale:
                between.append(mean)
        rank = int(np.linalg.matrix_rank(np.column_stack(between))) if between else 0
        if ng - rank < b.m:
            where = f" in {strat.column} = {label!r}" if strat is not None else ""
            raise DataError(
                f"{what}{where}: an unstructured covariance of {b.m} visits needs at least {b.m + rank} subjects "
                f"(the {b.m} visits plus {rank} fixed effect(s) constant within subjects), but there are {ng}: its "
                "estimate would be singular; use a structure with fewer parameters (toeph, ar1h, csh, cs) or "
                "more subjects"
            )


def build_spec(
    formula: str, data: Any, residual: str | ResidualSpec | None = None, variance: str | None = None
) -> ModelSpec:
    """Parse ``formula`` against ``data`` and build the model specification.

    ``residual`` is ``None``/``"iid"`` (independent errors) or a structure such as ``"ou(t | g)"``,
    ``"us(visit | id)"``, ``"exp(x + y | 1)"``; ``variance`` a variance function ``"ident(v)"``,
    ``"power(x)"``, ``"exp(x)"`` (see :mod:`bayeslmm.spec._residual`).

    Rows with missing values in any used column are dropped (as lme4's
    ``na.omit``) and counted in ``ModelSpec.n_dropped``, with a
    :class:`~bayeslmm.MissingValuesWarning` that counts the missing values of each
    column; the input frame is not modified. A rank-deficient fixed-effects matrix loses its redundant columns,
    with a warning naming them, as lme4 does.

    Raises
    ------
    FormulaError, DataError
        With a message that says what to change.
    """
    parsed = parse_formula(formula)
    if isinstance(residual, ResidualSpec):
        res: ResidualSpec | None = residual
        if variance is not None:
            res = dataclasses.replace(residual, variance=parse_variance(variance))
    else:
        res = parse_residual(residual, variance)
    df0, duplicated = _unique_names(as_pandas(data))
    columns = [str(c) for c in df0.columns]
    check_has_rows(df0)
    try:
        uses = FormulaUses.of(parsed, columns, res)  # validates every expression on the way
    except DataError as e:  # say which part of the model names a missing column of the residual structure
        raise _residual_column_error(e, res, columns) from None
    if uses.used & duplicated:
        dup = sorted(uses.used & duplicated)
        raise DataError(
            f"the data has more than one column named {', '.join(map(repr, dup))}, which the formula "
            "uses: rename the columns so that each name is unique (or drop the copies, e.g. "
            "df.loc[:, ~df.columns.duplicated()]) and fit again"
        )
    positions = [i for i, c in enumerate(columns) if c in uses.used]
    df = text_as_object(df0.iloc[:, positions].copy())
    for c in df.columns:
        if c == parsed.response or c not in uses.design | uses.values:
            continue
        problem = column_problem(c, df[c], as_value=c in uses.values)
        if problem:
            raise DataError(problem)
    check_no_infinities(df)
    if parsed.response in columns and df[parsed.response].isna().all():
        raise DataError(f"the response {parsed.response!r} is missing (NA) in every row")
    for c in df.columns:
        if df[c].isna().all():
            raise DataError(
                f"column {c!r} is missing (NA) in every row: remove it from the formula or fill in its values"
            )
    if res is not None:  # a structure's coordinates and strata are not dropped silently
        strict = [
            *(res.lhs if res.kind in STRUCTURES and STRUCTURES[res.kind].lhs == "coords" else ()),
            *((res.strata,) if res.strata else ()),
        ]
        for c in strict:
            k = int(df[c].isna().sum())
            if k:
                raise DataError(
                    f"column {c!r} of the residual structure {res} is missing in {k} row(s): the structure needs it "
                    "in every row; fill it in or remove those rows before fitting"
                )
    complete = df.notna().all(axis=1).to_numpy()
    n_dropped = int((~complete).sum())
    df = df.loc[complete]
    if n_dropped:  # lme4's na.omit is silent; say what was dropped, per column
        missing = {str(c): int(k) for c, k in df0.iloc[:, positions].isna().sum().items() if k}
        if df.shape[0] == 0:
            raise no_complete_row(missing)
        warnings.warn(MissingValuesWarning(n_dropped, len(complete), missing), stacklevel=3)
    for c in df.columns:  # levels not seen in the rows used are not levels (as R's droplevels)
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].cat.remove_unused_categories()
    y = response_vector(parsed, df, columns)
    fx = model_matrix(parsed.fixed, df, FIXED_PART)
    _check_factor_levels(fx, FIXED_PART)
    X = as_float(fx, FIXED_PART)
    names = coef_names(fx.columns)
    check_fixed_finite(X, names)
    X, names, dropped = drop_rank_deficient(X, names, stacklevel=3)
    n = y.shape[0]
    terms = []
    for bar in parsed.bars:
        where = bar_label(bar)
        zx = model_matrix(bar.lhs, df, where)
        _check_factor_levels(zx, where)
        Zraw = as_float(zx, where)
        check_term_columns(Zraw.shape[1], bar)
        check_term_finite(Zraw, bar)
        codes, levels = grouping_codes(df, bar.factors)
        check_grouping(bar, len(levels), Zraw.shape[1], n)
        terms.append((bar, codes, levels, Zraw, coef_names(zx.columns), zx.model_spec))
    # lme4 orders terms by decreasing number of levels (stable)
    terms.sort(key=lambda t: -len(t[2]))
    seen: dict[str, int] = {}
    re_terms = []
    for bar, codes, levels, Zraw, cnames, zspec in terms:
        k = seen.get(bar.group, 0)
        seen[bar.group] = k + 1
        re_terms.append(
            ReTerm(
                group=bar.group,
                name=bar.group if k == 0 else f"{bar.group}.{k}",
                factors=bar.factors,
                lhs=bar.lhs,
                coef_names=tuple(cnames),
                levels=tuple(levels),
                codes=codes,
                Zraw=Zraw,
                design=zspec,
            )
        )
    residual_process = None if res is None else bind_residual(res, df, tuple(t.factors for t in re_terms))
    if residual_process is not None:
        k = len(residual_process.structure.param_names) + 1 + sum(t.q * (t.q + 1) // 2 for t in re_terms)
        if k > n - X.shape[1]:
            raise DataError(
                f"the model has {k} covariance parameters and {X.shape[1]} fixed effects but {n} observations: "
                f"more parameters than the data can identify; use a structure with fewer parameters than {res}"
            )
        _check_enough_subjects(residual_process, X, str(res))
    return ModelSpec(
        formula=parsed.text,
        response=parsed.response,
        y=y,
        X=X,
        fixef_names=tuple(names),
        terms=tuple(re_terms),
        row_index=df.index.to_numpy(),
        residual=residual_process,
        n_dropped=n_dropped,
        dropped_columns=tuple(dropped),
        fixed_design=(fx.model_spec, parsed, tuple(names)),
    )
