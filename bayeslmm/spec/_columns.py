"""Data frames and their columns: which frames are accepted and how a column may be used in a formula.

Both builders of a design, :func:`bayeslmm.spec.build_spec` (all rows in memory) and
:class:`bayeslmm.suff.DesignSchema` (chunk by chunk), read the data through these functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError


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


def column_problem(name: str, col: pd.Series, as_value: bool, factor_ok: bool = True) -> str | None:
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
