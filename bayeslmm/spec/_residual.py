"""Residual structures in formulas: ``name(t | g)``, parsed and bound to the rows.

The structures themselves (``ou``, ``ar1``, ``cs``, ...) are classes of :mod:`bayeslmm.cov`;
this module only reads the text and attaches the time and grouping columns. ``iid`` (or
nothing) means independent errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, FormulaError, StructureError
from ..cov import STRUCTURES, ResidualStructure

_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*\(\s*(`[^`]+`|[^|`]+?)\s*\|\s*(.+?)\s*\)\s*$")


def _known() -> str:
    return ", ".join(f"'{k}(time | group)' ({c.description})" for k, c in sorted(STRUCTURES.items()))


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
    if not m or time is None or m.group(1).lower() not in STRUCTURES:
        raise FormulaError(f"residual process {text!r} is not understood: write one of {_known()}, or 'iid'")
    groups = _parse_group(m.group(3))
    if len(groups) != 1:
        raise FormulaError(f"residual process {text!r}: the grouping must be one factor (a or a:b), not a nesting")
    return ResidualSpec(kind=m.group(1).lower(), time=time, factors=groups[0])


@dataclass(frozen=True)
class ResidualProcess:
    """A residual process bound to the rows of a model.

    Attributes
    ----------
    kind
        The structure's name (``"ou"``, ``"ar1"``, ``"cs"``, ...).
    structure
        The structure (:class:`bayeslmm.cov.ResidualStructure`), bound to these rows.
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
    structure: ResidualStructure

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
    if types.is_datetime64_any_dtype(col) or types.is_timedelta64_dtype(col) or isinstance(col.dtype, pd.PeriodDtype):
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
    structure = STRUCTURES[res.kind].bind(t, codes, len(levels))
    return ResidualProcess(
        kind=res.kind,
        time=res.time,
        group=res.group,
        factors=res.factors,
        levels=tuple(levels),
        codes=codes,
        t=t,
        structure=structure,
    )


def check_terms(residual: ResidualProcess, terms: tuple[Any, ...]) -> None:
    """Every random-effect term must be on the residual structure's grouping factor.

    Raises
    ------
    StructureError
        Naming the term and what is supported.
    """
    for t in terms:
        if (
            t.factors == residual.factors
            and "(Intercept)" in t.coef_names
            and residual.structure.confounded_with_intercept
        ):
            raise StructureError(
                f"a random intercept ({t.lhs} | {t.group}) next to {residual.kind}({residual.time} | {residual.group}) "
                "is not identifiable: both add one covariance to every pair of observations of a group; drop the "
                f"intercept from the term (e.g. (0 + x | {t.group})), or use a residual structure without a "
                "constant correlation"
            )
        if t.factors != residual.factors:
            raise StructureError(
                f"random-effect term ({t.lhs} | {t.group}) with residual structure {residual.kind}({residual.time} | "
                f"{residual.group}): a residual structure combines with random-effect terms of its own grouping "
                f"factor {residual.group!r} only (crossed or nested terms are not supported with it yet)"
            )
