"""Build a :class:`ModelSpec` from formula text and a data frame.

Design matrices come from formulaic (treatment contrasts, interactions,
transforms); the random-effect bars are parsed in :mod:`._formula`. Every
expression is validated by :mod:`._safe` before formulaic sees it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, FormulaError, MissingValuesWarning
from ._formula import ParsedFormula, parse_formula
from ._residual import ResidualSpec, bind_residual, parse_residual
from ._safe import ALLOWED_CONSTANTS, evaluation_context, validate_expression
from ._spec import ModelSpec, ReTerm

#: Relative tolerance of the pivoted QR that detects a rank-deficient X (as lme4).
RANK_TOL = 1e-7


def as_pandas(data: Any) -> pd.DataFrame:
    """Accept a pandas or polars data frame (or anything with ``to_pandas``)."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):
        return data.to_pandas()
    raise DataError(
        f"data must be a pandas or polars DataFrame, got {type(data).__name__}; "
        "read a file with pandas.read_csv or pass a bundled dataset name to the CLI"
    )


def _na_text(dtype: Any) -> bool:
    """A text dtype whose missing value is ``pd.NA`` (``string``, ``string[pyarrow]``, arrow strings).

    formulaic codes ``object`` and ``str`` columns as categorical but not these (it tries to
    read them as numbers); Dask reads Parquet text columns with such a dtype.
    """
    types = pd.api.types
    if types.is_object_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype) or not types.is_string_dtype(dtype):
        return False
    return not (isinstance(dtype, pd.StringDtype) and dtype.na_value is not pd.NA)


def text_as_object(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``pd.NA``-text columns as object text (missing values NaN), as text read from CSV.

    Such columns are then categorical in formulaic, with levels sorted as strings. A frame
    without such columns is returned as it is.
    """
    conv = [c for c in df.columns if _na_text(df[c].dtype)]
    if not conv:
        return df
    out = df.copy(deep=False)
    for c in conv:
        out[c] = df[c].to_numpy(dtype=object, na_value=np.nan)
    return out


def _formula_columns(expr_formula: str, columns: list[str], where: str) -> set[str]:
    """Validate every factor of a Wilkinson formula and return the data columns it uses."""
    return _formula_uses(expr_formula, columns, where)[0]


def _formula_uses(expr_formula: str, columns: list[str], where: str) -> tuple[set[str], set[str]]:
    """Validate every factor of a Wilkinson formula.

    Returns the data columns it uses and, among them, those used as values (not only as
    ``C(column)``, which makes a factor of any column).
    """
    from formulaic import Formula
    from formulaic.parser.types import Factor

    try:
        terms = list(Formula(expr_formula))
    except Exception as e:  # formulaic raises several types for malformed formulas
        raise FormulaError(f"cannot parse the {where} {expr_formula!r}: {e}") from None
    used: set[str] = set()
    as_values: set[str] = set()
    for term in terms:
        for f in term.factors:
            if f.eval_method == Factor.EvalMethod.LITERAL:
                continue
            if f.eval_method == Factor.EvalMethod.LOOKUP:
                if f.expr not in columns and f.expr.split(".")[-1] in ALLOWED_CONSTANTS and (
                    f.expr.count(".") == 0 or f.expr.split(".")[0] in ("np", "numpy")
                ):
                    raise FormulaError(
                        f"the constant {f.expr!r} stands as a term of its own in the {where} "
                        f"{expr_formula!r} (in a formula '+', '*' and ':' combine terms): write "
                        "arithmetic with constants inside I() or a function, e.g. I(2 * pi * t) "
                        "or sin(2 * pi * t)"
                    )
                if f.expr not in columns:
                    raise DataError(_unknown_column(f.expr, columns))
                used.add(f.expr)
                as_values.add(f.expr)
            else:
                names = _checked_expression(f.expr, columns)
                used |= names
                if not _is_factor_call(f.expr):
                    as_values |= names
    return used, as_values


def _is_factor_call(expr: str) -> bool:
    """True for ``C(column, ...)``: any column may be made a factor."""
    import ast

    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return False
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "C"
        and len(node.args) >= 1
        and isinstance(node.args[0], ast.Name)
    )


def _checked_expression(expr: str, columns: list[str]) -> set[str]:
    try:
        return validate_expression(expr, columns)
    except FormulaError as e:
        names = [c for c in columns if c in expr]
        if "no such column" in str(e) and not names:
            raise DataError(f"{e}; available columns: {', '.join(map(str, columns))}") from None
        raise


def check_no_infinities(df: pd.DataFrame) -> None:
    """Raise :class:`DataError` naming the first numeric column of ``df`` that holds an infinity."""
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            vals = col.to_numpy(dtype=complex if pd.api.types.is_complex_dtype(col) else float, na_value=np.nan)
            if np.isinf(vals).any():
                raise DataError(
                    f"column {c!r} has {int(np.isinf(vals).sum())} infinite value(s); "
                    "remove or replace them before fitting"
                )


def _unique_names(df: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """``df`` with its column labels as text, and the labels that occur more than once."""
    from collections import Counter

    names = [str(c) for c in df.columns]
    if any(not isinstance(c, str) for c in df.columns):
        df = df.set_axis(names, axis=1)
    return df, {n for n, k in Counter(names).items() if k > 1}


def _dates_hint(name: str, what: str, dtype: Any, factor_ok: bool = True) -> str:
    if what == "durations":
        how = f"df[{name!r}] / pd.Timedelta(days=1) (days) or df[{name!r}].dt.total_seconds()"
    else:
        how = f"days since a start date, (df[{name!r}] - df[{name!r}].min()) / pd.Timedelta(days=1)"
    return (
        f"column {name!r} holds {what} (dtype {dtype}), which cannot be used as a number: convert it "
        f"to a number before fitting, e.g. {how}" + (f", or make it a factor with C({name})" if factor_ok else "")
    )


def _value_kinds(col: pd.Series) -> dict[str, Any]:
    """Kinds of the Python objects in an object column: {'text'|'number'|'bool'|'date'|'other': example}."""
    import datetime
    import numbers

    values = col.dropna().to_numpy()
    out: dict[str, Any] = {}
    for t in set(map(type, values)):
        v = next(x for x in values if type(x) is t)
        if issubclass(t, str):
            kind = "text"
        elif issubclass(t, (bool, np.bool_)):
            kind = "bool"
        elif issubclass(t, numbers.Number):
            kind = "number"
        elif issubclass(t, (datetime.date, datetime.time, datetime.timedelta, np.datetime64, np.timedelta64)):
            kind = "date"
        else:
            kind = "other"
        out.setdefault(kind, v)
    return out


def _column_problem(name: str, col: pd.Series, as_value: bool, factor_ok: bool = True) -> str | None:
    """Why column ``name`` cannot be a predictor (None when it can).

    ``as_value``: the column is used as it is (``x``, ``log(x)``), not only as ``C(x)``.
    """
    types = pd.api.types
    dtype = col.dtype
    if types.is_complex_dtype(dtype):
        return (
            f"column {name!r} holds complex numbers (dtype {dtype}); a linear mixed model needs real "
            "numbers: put the real part or the modulus in a new column and use that"
        )
    if isinstance(dtype, pd.CategoricalDtype) or not types.is_object_dtype(dtype):
        if not as_value:
            return None
        if types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
            return _dates_hint(name, "dates/times", dtype, factor_ok)
        if types.is_timedelta64_dtype(dtype):
            return _dates_hint(name, "durations", dtype, factor_ok)
        return None
    kinds = _value_kinds(col)
    if "text" in kinds and "number" in kinds:
        return (
            f"column {name!r} mixes numbers and text (e.g. {kinds['number']!r} and {kinds['text']!r}): "
            f"convert it with pd.to_numeric(df[{name!r}], errors='coerce') to use it as a number "
            f"(text becomes missing), or with df[{name!r}].astype(str) to use it as a factor"
        )
    if "other" in kinds:
        return (
            f"column {name!r} holds values of type {type(kinds['other']).__name__}, which are neither "
            "numbers nor text: convert it to numbers or text before fitting"
        )
    if as_value and "text" not in kinds and "bool" not in kinds:
        if "date" in kinds:
            return _dates_hint(name, "dates/times", dtype, factor_ok)
        if "number" in kinds:
            return (
                f"column {name!r} holds numbers stored as Python objects (dtype object), which would be "
                f"read as a factor with one level per value: convert it with pd.to_numeric(df[{name!r}]) "
                f"to use it as a number, or with df[{name!r}].astype(str) (or C({name})) to use it as a factor"
            )
    return None


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


def _as_float(mm: Any, where: str) -> np.ndarray:
    try:
        return np.asarray(mm, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"the {where} does not evaluate to numbers ({e}); convert the columns it uses to numbers "
            "or text before fitting"
        ) from None


def _unknown_column(name: str, columns: list[str]) -> str:
    return (
        f"column {name!r} not found in the data; available columns: "
        f"{', '.join(map(str, columns))}"
    )


def _model_matrix(formula: str, df: pd.DataFrame, where: str) -> Any:
    from formulaic import model_matrix

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model_matrix(formula, df, context=evaluation_context(), na_action="ignore")
    except Exception as e:  # formulaic/numpy errors while evaluating allowed expressions
        raise DataError(f"cannot evaluate the {where} {formula!r}: {e}") from None


def _rename(names: list[str]) -> list[str]:
    return ["(Intercept)" if n == "Intercept" else str(n) for n in names]


def _level_labels(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of a grouping column, levels sorted as R's factor() sorts them."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.remove_unused_categories()
        labels = [str(c) for c in cats.cat.categories]
        return cats.cat.codes.to_numpy().astype(np.int64), labels
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        uniq = np.sort(col.unique())
        codes = np.searchsorted(uniq, col.to_numpy())
        labels = [_num_label(v) for v in uniq]
        return codes.astype(np.int64), labels
    s = col.astype(str)
    uniq = np.sort(s.unique())
    return np.searchsorted(uniq, s.to_numpy()).astype(np.int64), [str(u) for u in uniq]


def _num_label(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def grouping_codes(df: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes and level labels of the interaction of ``factors`` (observed combinations only)."""
    parts = [_level_labels(df[f]) for f in factors]
    if len(parts) == 1:
        return parts[0]
    mat = np.stack([p[0] for p in parts], axis=1)
    combos, codes = np.unique(mat, axis=0, return_inverse=True)  # lexicographic, first factor slowest
    labels = [":".join(parts[k][1][c] for k, c in enumerate(row)) for row in combos]
    return codes.reshape(-1).astype(np.int64), labels


def _drop_rank_deficient(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop columns that are (numerically) linear combinations of earlier ones.

    As R's ``qr(X, tol = 1e-7)`` (LINPACK dqrdc2, used by lme4): a column whose
    residual after projection on the earlier kept columns is below ``RANK_TOL``
    times its norm is dropped; the order of the others is kept. With an intercept
    column the others are centred first (a change of basis that keeps the rank), so
    that a covariate carrying a large constant (a year, a date as a number) is judged
    by its variation and not by its constant, where R would drop it.
    """
    if X.shape[1] == 0:
        return X, names, []
    from ..linalg._basis import FixedBasis

    Xc = FixedBasis.from_rows(X, np.zeros(X.shape[0])).apply(X, None)[0] if X.shape[0] else X
    norms = np.linalg.norm(Xc, axis=0)
    keep = list(range(X.shape[1]))
    for _ in range(X.shape[1]):  # repeat until the kept columns are of full rank
        R = np.linalg.qr(Xc[:, keep], mode="r")
        d = np.abs(np.diag(R))
        bad = [k for k, dk in zip(keep, d) if not dk > RANK_TOL * max(norms[k], 1e-300)]
        if not bad:
            break
        keep.remove(bad[0])
    drop = [names[i] for i in range(X.shape[1]) if i not in keep]
    return X[:, keep], [names[i] for i in keep], drop


def _response(parsed: ParsedFormula, df: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, set[str]]:
    r = parsed.response
    if r in columns:
        col = df[r]
        problem = _column_problem(r, col, as_value=True, factor_ok=False)
        if problem:
            raise DataError(f"response: {problem}")
        if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
            raise DataError(
                f"response {r!r} is not numeric (dtype {col.dtype}); a linear mixed model needs a "
                f"numeric response: convert the column (e.g. pd.to_numeric(df[{r!r}])) or choose another"
            )
        return col.to_numpy(dtype=float, na_value=np.nan), {r}
    used = _checked_expression(r, columns)
    mm = _model_matrix(f"0 + {r}", df, "response")
    arr = _as_float(mm, "response")
    if arr.ndim != 2 or arr.shape[1] != 1:
        raise DataError(f"response {r!r} must be one numeric column")
    return arr[:, 0], used


def build_spec(formula: str, data: Any, residual: str | ResidualSpec | None = None) -> ModelSpec:
    """Parse ``formula`` against ``data`` and build the model specification.

    ``residual`` is ``None``/``"iid"`` (independent errors), ``"ou(t | g)"`` or
    ``"ar1(t | g)"`` (see :mod:`bayeslmm.spec._residual`).

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
    res = residual if isinstance(residual, ResidualSpec) else parse_residual(residual)
    df0, duplicated = _unique_names(as_pandas(data))
    columns = [str(c) for c in df0.columns]
    if df0.shape[0] == 0:
        raise DataError("the data has no rows (header only?); a model needs observations")
    # which columns does the formula use? (validates every expression on the way)
    if parsed.response in columns:
        used = {parsed.response}
    else:
        used = _checked_expression(parsed.response, columns)
    values = set(used)  # columns used as values (not as grouping factors or only in C())
    predictors: set[str] = set()  # columns of the fixed part and of random-effect terms
    fx_used, fx_values = _formula_uses(parsed.fixed, columns, "fixed-effects formula")
    used |= fx_used
    predictors |= fx_used
    values |= fx_values
    for bar in parsed.bars:
        re_used, re_values = _formula_uses(bar.lhs, columns, f"random-effect term ({bar.lhs} | {bar.group})")
        used |= re_used
        predictors |= re_used
        values |= re_values
        for f in bar.factors:
            if f not in columns:
                raise DataError(_unknown_column(f, columns))
            used.add(f)
    if res is not None:
        for c in (res.time, *res.factors):
            if c not in columns:
                raise DataError(_unknown_column(c, columns))
            used.add(c)
    if used & duplicated:
        dup = sorted(used & duplicated)
        raise DataError(
            f"the data has more than one column named {', '.join(map(repr, dup))}, which the formula "
            "uses: rename the columns so that each name is unique (or drop the copies, e.g. "
            "df.loc[:, ~df.columns.duplicated()]) and fit again"
        )
    positions = [i for i, c in enumerate(columns) if c in used]
    df = text_as_object(df0.iloc[:, positions].copy())
    for c in df.columns:
        if c == parsed.response or c not in predictors | values:
            continue
        problem = _column_problem(c, df[c], as_value=c in values)
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
    complete = df.notna().all(axis=1).to_numpy()
    n_dropped = int((~complete).sum())
    df = df.loc[complete]
    if df.shape[0] == 0:
        counts = ", ".join(f"{c}: {int(k)}" for c, k in df0.iloc[:, positions].isna().sum().items() if k)
        raise DataError(
            "no row is complete: every row has a missing value in a column the formula uses "
            f"(missing values per column: {counts}); remove such columns from the formula or fill them in"
        )
    if n_dropped:  # lme4's na.omit is silent; say what was dropped, per column
        missing = {str(c): int(k) for c, k in df0.iloc[:, positions].isna().sum().items() if k}
        warnings.warn(MissingValuesWarning(n_dropped, len(complete), missing), stacklevel=3)
    for c in df.columns:  # levels not seen in the rows used are not levels (as R's droplevels)
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].cat.remove_unused_categories()
    y, _ = _response(parsed, df, columns)
    if not np.all(np.isfinite(y)):
        raise DataError(f"the response {parsed.response!r} evaluates to non-finite values in some rows")
    fx = _model_matrix(parsed.fixed, df, "fixed-effects formula")
    _check_factor_levels(fx, "fixed-effects formula")
    X = _as_float(fx, "fixed-effects formula")
    names = _rename(list(fx.columns))
    bad = ~np.isfinite(X).all(axis=0)
    if bad.any():
        raise DataError(
            f"fixed-effect column(s) {', '.join(n for n, b in zip(names, bad) if b)} have non-finite "
            "values (log of a non-positive number?)"
        )
    X, names, dropped = _drop_rank_deficient(X, names)
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column(s): {', '.join(dropped)}",
            stacklevel=3,
        )
    n = y.shape[0]
    terms = []
    for bar in parsed.bars:
        where = f"random-effect term ({bar.lhs} | {bar.group})"
        zx = _model_matrix(bar.lhs, df, where)
        _check_factor_levels(zx, where)
        Zraw = _as_float(zx, where)
        if Zraw.shape[1] == 0:
            raise FormulaError(f"random-effect term ({bar.lhs} | {bar.group}) has no columns")
        if not np.isfinite(Zraw).all():
            raise DataError(f"random-effect term ({bar.lhs} | {bar.group}) has non-finite values")
        codes, levels = grouping_codes(df, bar.factors)
        nlev = len(levels)
        if nlev < 2:
            raise DataError(
                f"grouping factor {bar.group!r} has {nlev} level; a random effect needs at least 2"
            )
        if nlev >= n:
            raise DataError(
                f"grouping factor {bar.group!r} has {nlev} levels for {n} observations; the number of "
                "levels must be smaller than the number of observations, or the random effect and "
                "the residual cannot be told apart"
            )
        if nlev * Zraw.shape[1] >= n:
            raise DataError(
                f"term ({bar.lhs} | {bar.group}) has {nlev * Zraw.shape[1]} random effects for {n} "
                "observations; the random effects and the residual variance are unidentifiable: "
                "simplify the random-effect term"
            )
        terms.append((bar, codes, levels, Zraw, _rename(list(zx.columns)), zx.model_spec))
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
    return ModelSpec(
        formula=parsed.text,
        response=parsed.response,
        y=y,
        X=X,
        fixef_names=tuple(names),
        terms=tuple(re_terms),
        row_index=df.index.to_numpy(),
        residual=None if res is None else bind_residual(res, df),
        n_dropped=n_dropped,
        dropped_columns=tuple(dropped),
        fixed_design=(fx.model_spec, parsed, tuple(names)),
    )
