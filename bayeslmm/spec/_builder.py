"""The pieces of a design that every builder shares, whether it sees all the rows or one chunk at a time.

:func:`bayeslmm.spec.build_spec` builds ``X`` and the random-effect columns from all the rows
at once. :class:`bayeslmm.suff.DesignSchema` fixes a formulaic design on a small prototype
frame and applies it to every chunk, and :meth:`bayeslmm.suff.SuffStats.to_model` checks the
merged statistics. All of them bind the formula to the data's columns with
:class:`FormulaUses`, evaluate formulas with :func:`model_matrix`, read the response with
:func:`response_vector`, name columns with :func:`coef_names` and check the design with the
``check_*`` functions and :func:`drop_rank_deficient`, so that each check and each message
exists once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, FormulaError
from ._centres import column_centres, intercept_column
from ._columns import column_problem
from ._formula import Bar, ParsedFormula
from ._residual import ResidualSpec
from ._safe import ALLOWED_CONSTANTS, evaluation_context, validate_expression

#: Relative tolerance of the pivoted QR that detects a rank-deficient X (as lme4).
RANK_TOL = 1e-7

#: How messages name the fixed part of a formula.
FIXED_PART = "fixed-effects formula"


def bar_label(bar: Bar) -> str:
    """How messages name a random-effect term: ``random-effect term (1 + x | g)``."""
    return f"random-effect term ({bar.lhs} | {bar.group})"


@dataclass(frozen=True)
class FormulaUses:
    """The data columns a formula uses; every expression of the formula is validated on the way.

    Attributes
    ----------
    used
        Every column the model reads: the response's, the fixed part's, the bars' (left-hand
        sides and grouping factors) and the residual process's.
    design
        Columns of the fixed part and of the bars' left-hand sides.
    values
        Columns used as values: the response's, and design columns used other than only as
        ``C(column)`` (which makes a factor of any column).
    """

    used: frozenset[str]
    design: frozenset[str]
    values: frozenset[str]

    @classmethod
    def of(cls, parsed: ParsedFormula, columns: list[str], residual: ResidualSpec | None = None) -> FormulaUses:
        """Bind ``parsed`` (and the columns of ``residual``) to the data's ``columns``.

        The response is checked first, then the fixed part, then each bar (its left-hand side,
        then its grouping factors), then the residual process: the first problem is reported.

        Raises
        ------
        FormulaError, DataError
            For an expression that formulaic cannot parse or :mod:`bayeslmm.spec._safe` refuses,
            a constant standing as a term, or a column that is not in the data.
        """
        if parsed.response in columns:
            used = {parsed.response}
        else:
            used = _checked_expression(parsed.response, columns)
        values = set(used)
        design, design_values = _formula_uses(parsed.fixed, columns, FIXED_PART)
        for bar in parsed.bars:
            bar_used, bar_values = _formula_uses(bar.lhs, columns, bar_label(bar))
            design |= bar_used
            design_values |= bar_values
            for f in bar.factors:
                if f not in columns:
                    raise DataError(_unknown_column(f, columns))
                used.add(f)
        if residual is not None:
            for c in residual.columns:
                if c not in columns:
                    raise DataError(_unknown_column(c, columns))
                used.add(c)
        return cls(frozenset(used | design), frozenset(design), frozenset(values | design_values))


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
                if (
                    f.expr not in columns
                    and f.expr.split(".")[-1] in ALLOWED_CONSTANTS
                    and (f.expr.count(".") == 0 or f.expr.split(".")[0] in ("np", "numpy"))
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
    """The columns an expression uses, after :func:`validate_expression`; an unknown name lists the columns."""
    try:
        return validate_expression(expr, columns)
    except FormulaError as e:
        names = [c for c in columns if c in expr]
        if "no such column" in str(e) and not names:
            raise DataError(f"{e}; available columns: {', '.join(map(str, columns))}") from None
        raise


def _unknown_column(name: str, columns: list[str]) -> str:
    return f"column {name!r} not found in the data; available columns: {', '.join(map(str, columns))}"


def model_matrix(formula: str, df: pd.DataFrame, where: str) -> Any:
    """formulaic's model matrix of ``formula`` on ``df`` (missing values kept); ``where`` names it in errors."""
    from formulaic import model_matrix as formulaic_matrix

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return formulaic_matrix(formula, df, context=evaluation_context(), na_action="ignore")
    except Exception as e:  # formulaic/numpy errors while evaluating allowed expressions
        raise DataError(f"cannot evaluate the {where} {formula!r}: {e}") from None


def as_float(mm: Any, where: str) -> np.ndarray:
    """A model matrix as a float array; ``where`` names it in the error."""
    try:
        return np.asarray(mm, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"the {where} does not evaluate to numbers ({e}); convert the columns it uses to numbers "
            "or text before fitting"
        ) from None


def coef_names(columns: Iterable[Any]) -> list[str]:
    """Coefficient names of model-matrix columns, formulaic's ``Intercept`` written as lme4's ``(Intercept)``."""
    return ["(Intercept)" if n == "Intercept" else str(n) for n in columns]


def response_vector(parsed: ParsedFormula, df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``(n,)`` the response of ``parsed`` in the rows of ``df`` (a column, or an expression of columns).

    Raises
    ------
    DataError
        For a response column that is not numeric, an expression that is not one numeric
        column, or a non-finite value.
    """
    r = parsed.response
    if r in columns:
        col = df[r]
        problem = column_problem(r, col, as_value=True, factor_ok=False)
        if problem:
            raise DataError(f"response: {problem}")
        if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
            raise DataError(
                f"response {r!r} is not numeric (dtype {col.dtype}); a linear mixed model needs a "
                f"numeric response: convert the column (e.g. pd.to_numeric(df[{r!r}])) or choose another"
            )
        y = col.to_numpy(dtype=float, na_value=np.nan)
    else:
        _checked_expression(r, columns)
        arr = as_float(model_matrix(f"0 + {r}", df, "response"), "response")
        if arr.ndim != 2 or arr.shape[1] != 1:
            raise DataError(f"response {r!r} must be one numeric column")
        y = arr[:, 0]
    if not np.all(np.isfinite(y)):
        raise DataError(f"the response {r!r} evaluates to non-finite values in some rows")
    return y


def check_has_rows(df: pd.DataFrame) -> None:
    """Raise :class:`DataError` for a frame without rows."""
    if df.shape[0] == 0:
        raise DataError("the data has no rows (header only?); a model needs observations")


def no_complete_row(missing: Mapping[str, int] | None = None) -> DataError:
    """The error for data without a complete row; ``missing`` (column -> missing values) is listed when given."""
    msg = "no row is complete: every row has a missing value in a column the formula uses"
    if missing is None:
        return DataError(msg)
    counts = ", ".join(f"{c}: {int(k)}" for c, k in missing.items() if k)
    return DataError(
        f"{msg} (missing values per column: {counts}); remove such columns from the formula or fill them in"
    )


def check_fixed_finite(X: np.ndarray, names: Iterable[str]) -> None:
    """Raise :class:`DataError` naming the columns of ``X`` (``(n, p)``, names ``names``) with a non-finite value."""
    bad = ~np.isfinite(X).all(axis=0)
    if bad.any():
        raise DataError(
            f"fixed-effect column(s) {', '.join(nm for nm, b in zip(names, bad) if b)} have non-finite "
            "values (log of a non-positive number?)"
        )


def check_term_columns(ncols: int, bar: Bar) -> None:
    """Raise :class:`FormulaError` when the left-hand side of ``bar`` gives no column."""
    if ncols == 0:
        raise FormulaError(f"{bar_label(bar)} has no columns")


def check_term_finite(Z: np.ndarray, bar: Bar) -> None:
    """Raise :class:`DataError` when the columns ``Z`` of ``bar`` hold a non-finite value."""
    if not np.isfinite(Z).all():
        raise DataError(f"{bar_label(bar)} has non-finite values")


def check_grouping(bar: Bar, nlev: int, q: int, n: int) -> None:
    """Check that ``nlev`` levels of ``bar``'s grouping factor, ``q`` columns each, fit ``n`` observations.

    Raises
    ------
    DataError
        For fewer than 2 levels, as many levels as observations, or ``nlev * q >= n`` random effects
        (the random effects and the residual cannot be told apart).
    """
    if nlev < 2:
        raise DataError(f"grouping factor {bar.group!r} has {nlev} level; a random effect needs at least 2")
    if nlev >= n:
        raise DataError(
            f"grouping factor {bar.group!r} has {nlev} levels for {n} observations; the number of "
            "levels must be smaller than the number of observations, or the random effect and "
            "the residual cannot be told apart"
        )
    if nlev * q >= n:
        raise DataError(
            f"term ({bar.lhs} | {bar.group}) has {nlev * q} random effects for {n} "
            "observations; the random effects and the residual variance are unidentifiable: "
            "simplify the random-effect term"
        )


def drop_rank_deficient(
    X: np.ndarray, names: list[str], stacklevel: int = 2
) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop columns of ``X`` (``(n, p)``) that are (numerically) linear combinations of earlier ones.

    As R's ``qr(X, tol = 1e-7)`` (LINPACK dqrdc2, used by lme4): a column whose
    residual after projection on the earlier kept columns is below ``RANK_TOL``
    times its norm is dropped; the order of the others is kept. With an intercept
    column the others are centred first (a change of basis that keeps the rank, with the
    centres of :func:`column_centres`), so that a covariate carrying a large constant (a year,
    a date as a number) is judged by its variation and not by its constant, where R would drop it.
    Any rows with the column space of ``X`` will do (the ``R`` factor of ``X``, for one).

    Returns the kept columns, their names and the names of the dropped ones; dropping warns
    as lme4 does (``stacklevel`` as for :func:`warnings.warn`, counted from the caller).
    """
    if X.shape[1] == 0:
        return X, names, []
    j0 = intercept_column(X)
    Xc = X - column_centres(X, j0)[None, :] if j0 is not None else X
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
    if drop:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(drop)} column(s): {', '.join(drop)}",
            stacklevel=stacklevel + 1,
        )
    return X[:, keep], [names[i] for i in keep], drop
