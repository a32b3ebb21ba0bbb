"""Residual processes: ``ou(t | g)`` and ``ar1(t | g)``.

* ``ou(t | g)``: within each level of ``g`` an Ornstein-Uhlenbeck process in the
  continuous time ``t`` (``Cov(w_ij, w_ik) = process_var * rho^|t_ij - t_ik|``) plus
  an independent measurement error (the nugget); irregular and repeated times allowed.
* ``ar1(t | g)``: discrete AR(1) errors by the order of ``t`` within ``g``
  (nlme's ``corAR1``): ``Corr(e_ij, e_ik) = phi^|j - k|`` for the j-th and k-th observation.
* ``iid``: independent errors (the default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._errors import DataError, FormulaError

KINDS = ("ou", "ar1")
_RE = re.compile(r"^\s*(ou|ar1)\s*\(\s*(`[^`]+`|[^|`]+?)\s*\|\s*(.+?)\s*\)\s*$")


@dataclass(frozen=True)
class ResidualSpec:
    """A parsed residual process (no data yet)."""

    kind: str
    time: str
    factors: tuple[str, ...]

    @property
    def group(self) -> str:
        """Name of the grouping factor (``a:b`` for an interaction)."""
        return ":".join(self.factors)

    def __str__(self) -> str:
        return f"{self.kind}({self.time} | {self.group})"


def parse_residual(text: str | None) -> ResidualSpec | None:
    """Parse ``"ou(Time | Rat)"``, ``"ar1(Time | Mare)"``, or ``None``/``"iid"`` (independent errors).

    Raises
    ------
    FormulaError
        For anything else.
    """
    if text is None or str(text).strip().lower() in ("", "iid"):
        return None
    from ._formula import _parse_group, column_name

    m = _RE.match(str(text))
    time = column_name(m.group(2)) if m else None
    if not m or time is None:
        raise FormulaError(
            f"residual process {text!r} is not understood: write 'ou(time | group)' (OU process plus "
            "measurement error), 'ar1(time | group)' (AR(1) by order within group) or 'iid'"
        )
    groups = _parse_group(m.group(3))
    if len(groups) != 1:
        raise FormulaError(f"residual process {text!r}: the grouping must be one factor (a or a:b), not a nesting")
    return ResidualSpec(kind=m.group(1), time=time, factors=groups[0])


@dataclass(frozen=True)
class ResidualProcess:
    """A residual process bound to the rows of a model.

    Attributes
    ----------
    kind
        ``"ou"`` or ``"ar1"``.
    time
        Name of the time column.
    group
        Name of the grouping factor.
    levels
        Level labels of the grouping factor.
    codes
        ``(n,)`` level of each row.
    t
        ``(n,)`` time of each row (float).
    """

    kind: str
    time: str
    group: str
    factors: tuple[str, ...]
    levels: tuple[str, ...]
    codes: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        for name in ("codes", "t"):
            a = np.ascontiguousarray(getattr(self, name))
            a.setflags(write=False)
            object.__setattr__(self, name, a)


def bind_residual(res: ResidualSpec, df: pd.DataFrame) -> ResidualProcess:
    """Attach a parsed process to the (complete) rows of the model frame."""
    from ._design import grouping_codes

    col = df[res.time]
    types = pd.api.types
    if types.is_datetime64_any_dtype(col) or types.is_timedelta64_dtype(col) or isinstance(
        col.dtype, pd.PeriodDtype
    ):
        raise DataError(
            f"time column {res.time!r} of {res} holds dates/times (dtype {col.dtype}): convert it to "
            f"a number before fitting, e.g. days since the start: (df[{res.time!r}] - "
            f"df[{res.time!r}].min()) / pd.Timedelta(days=1)"
        )
    if not (types.is_numeric_dtype(col) and not types.is_bool_dtype(col)) or types.is_complex_dtype(col):
        raise DataError(
            f"time column {res.time!r} of {res} must be numeric (got dtype {col.dtype}): convert it, "
            "e.g. with pd.to_numeric"
        )
    t = col.to_numpy(dtype=float)
    codes, levels = grouping_codes(df, res.factors)
    return ResidualProcess(kind=res.kind, time=res.time, group=res.group, factors=res.factors,
                           levels=tuple(levels), codes=codes, t=t)
