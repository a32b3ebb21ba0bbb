"""Residual structures in formulas: ``name(t | g)``, ``name(visit | a/g)``, ``name(x + y | 1, nugget=false)``,
and variance functions ``ident(v)``, ``power(x)``, ``exp(x)``; parsed and bound to the rows.

The structures themselves (``ou``, ``ar1``, ``cs``, ...) are classes of :mod:`bayeslmm.cov`;
this module only reads the text and attaches the time and grouping columns. ``iid`` (or
nothing) means independent errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, FormulaError, StructureError
from ..cov import STRUCTURES, VARIANCE_FUNCTIONS, ResidualStructure, Rows

_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*\(\s*(.+?)\s*\|\s*([^,]+?)\s*(?:,\s*(.*?))?\s*\)\s*$")
_VF = re.compile(r"^\s*([A-Za-z]+)\s*\(\s*(`[^`]+`|[^()`]+?)\s*\)\s*$")


def _known() -> str:
    lhs = {"time": "time", "visit": "visit", "coords": "x + y", "any": "visit"}
    return ", ".join(
        f"'{k}({lhs[c.lhs]} | group)' ({c.description})" for k, c in sorted(STRUCTURES.items()) if k != "iid"
    )


@dataclass(frozen=True)
class VarianceSpec:
    """A parsed variance function: ``kind(column)``."""

    kind: str
    column: str

    def __str__(self) -> str:
        return f"{self.kind}({self.column})"


def parse_variance(text: str | None) -> VarianceSpec | None:
    """Parse ``"ident(visit)"``, ``"power(x)"``, ``"exp(x)"`` or ``None``.

    Raises
    ------
    FormulaError
        For anything else.
    """
    if text is None or str(text).strip() == "":
        return None
    from ._formula import column_name

    m = _VF.match(str(text))
    col = column_name(m.group(2)) if m else None
    if not m or col is None or m.group(1).lower() not in VARIANCE_FUNCTIONS:
        raise FormulaError(
            f"variance function {text!r} is not understood: write 'ident(factor)' (a standard deviation per "
            "level, nlme's varIdent), 'power(x)' (|x|^delta, varPower) or 'exp(x)' (exp(delta x), varExp)"
        )
    return VarianceSpec(m.group(1).lower(), col)


@dataclass(frozen=True)
class ResidualSpec:
    """A parsed residual structure (no data yet).

    ``lhs`` the columns left of ``|`` (time, visit or coordinates), ``factors`` the grouping factor
    (empty for ``| 1``, one group), ``strata`` the factor of ``a/g`` (a structure per level of
    ``a``), ``options`` the ``key=value`` options, ``variance`` the variance function.
    """

    kind: str
    lhs: tuple[str, ...]
    factors: tuple[str, ...]
    strata: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    variance: VarianceSpec | None = None

    @property
    def time(self) -> str:
        """The left of ``|`` as written (``"x + y"`` for coordinates)."""
        return " + ".join(self.lhs)

    @property
    def group(self) -> str:
        """Name of the grouping factor (``a:b`` for an interaction, ``1`` for one group)."""
        return ":".join(self.factors) if self.factors else "1"

    @property
    def independent(self) -> bool:
        """Independent errors (with a variance function): no structure of its own."""
        return self.kind not in STRUCTURES

    @property
    def columns(self) -> tuple[str, ...]:
        """Every data column the structure reads."""
        out = (*self.lhs, *self.factors, *((self.strata,) if self.strata else ()))
        return out + ((self.variance.column,) if self.variance else ())

    def __str__(self) -> str:
        grp = f"{self.strata}/{self.group}" if self.strata else self.group
        opts = "".join(f", {k}={str(v).lower()}" for k, v in self.options)
        return "iid" if self.independent else f"{self.kind}({self.time} | {grp}{opts})"


def _option(key: str, value: str, text: str, allowed: dict[str, Any]) -> tuple[str, Any]:
    if key not in allowed:
        known = ", ".join(allowed) or "none"
        raise FormulaError(f"residual structure {text!r}: unknown option {key!r} (options: {known})")
    v = value.strip().lower()
    if isinstance(allowed[key], bool):
        if v not in ("true", "false"):
            raise FormulaError(f"residual structure {text!r}: {key} must be true or false")
        return key, v == "true"
    return key, v


def parse_residual(text: str | None, variance: str | None = None) -> ResidualSpec | None:
    """Parse ``"ou(Time | Rat)"``, ``"us(visit | arm/id)"``, ``"exp(x + y | 1, nugget=false)"``, or
    ``None``/``"iid"`` (independent errors; with a ``variance`` function, a structure of its own).

    Raises
    ------
    FormulaError
        For anything else.
    """
    vf = parse_variance(variance)
    if text is None or str(text).strip().lower() in ("", "iid"):
        return None if vf is None else ResidualSpec(kind="iid", lhs=(), factors=(), variance=vf)
    from ._formula import _parse_group, _split_top, column_name

    m = _RE.match(str(text))
    kind = m.group(1).lower() if m else ""
    if not m or kind not in STRUCTURES:
        raise FormulaError(f"residual structure {text!r} is not understood: write one of {_known()}, or 'iid'")
    cls = STRUCTURES[kind]
    lhs = tuple(column_name(c) for c in _split_top(m.group(2), "+"))
    if not all(lhs) or (len(lhs) > 1 and cls.lhs != "coords"):
        what = "one or more coordinate columns, x + y" if cls.lhs == "coords" else "one column"
        raise FormulaError(f"residual structure {text!r} is not understood: the left of '|' must be {what}")
    opts = []
    for part in [p for p in (m.group(4) or "").split(",") if p.strip()]:
        if "=" not in part:
            raise FormulaError(f"residual structure {text!r}: options are written key=value, e.g. nugget=false")
        k, v = part.split("=", 1)
        opts.append(_option(k.strip(), v, str(text), cls.options))
    grp = m.group(3).strip()
    strata: str | None = None
    if grp == "1":
        factors: tuple[str, ...] = ()
    else:
        groups = _parse_group(grp)
        if len(groups) == 2 and len(groups[0]) == 1:  # a/g: a structure per level of a
            strata = groups[0][0]
            factors = groups[1][1:]
        elif len(groups) != 1:
            raise FormulaError(
                f"residual structure {text!r}: the grouping must be one factor (g or a:b), '1' (one group), or "
                "'a/g' (a separate structure per level of a)"
            )
        else:
            factors = groups[0]
    return ResidualSpec(
        kind=kind, lhs=tuple(str(c) for c in lhs), factors=factors, strata=strata, options=tuple(opts), variance=vf
    )


@dataclass(frozen=True)
class ResidualProcess:
    """A residual structure bound to the rows of a model.

    Attributes
    ----------
    kind
        The structure's name (``"ou"``, ``"us"``, ``"exp"``, ``"iid"`` for a variance function alone ...).
    time
        The left of ``|`` as written (time, visit, or ``x + y``).
    group
        Name of the grouping factor (``"1"`` for one group; ``"(row)"`` for a variance function on
        independent errors without random effects: each row a group).
    factors
        The grouping factor's columns.
    levels
        Level labels of the grouping factor.
    codes
        ``(n,)`` level of each row.
    t
        ``(n,)`` order of the rows within a group (float): the time, the visit's index, or 0.
    structure
        The structure (:class:`bayeslmm.cov.ResidualStructure`), bound to these rows.
    feats
        The per-row features the structure reads (see :mod:`bayeslmm.cov._base`).
    spec
        The parsed text.
    labels
        Level labels of factor features (``visit``, ``stratum``, ``vf``).
    """

    kind: str
    time: str
    group: str
    factors: tuple[str, ...]
    levels: tuple[str, ...]
    codes: np.ndarray
    t: np.ndarray
    structure: ResidualStructure
    feats: dict[str, np.ndarray] = field(default_factory=dict)
    spec: ResidualSpec | None = None
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("codes", "t"):
            a = np.ascontiguousarray(getattr(self, name))
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        for a in self.feats.values():
            a.setflags(write=False)

    @property
    def variance(self) -> VarianceSpec | None:
        """The variance function, if any."""
        return None if self.spec is None else self.spec.variance

    @property
    def independent(self) -> bool:
        """Independent errors with a variance function (no structure of its own)."""
        return self.spec is not None and self.spec.independent

    def __str__(self) -> str:
        return str(self.spec) if self.spec is not None else f"{self.kind}({self.time} | {self.group})"

    def new_features(self, df: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(t, feats)`` of new rows ``df`` (for predictions), on the levels of the fit.

        Raises
        ------
        DataError
            For a missing column or a level (visit, stratum) the fit has not seen.
        """
        assert self.spec is not None
        rs = self.spec
        for c in rs.columns:
            if c not in df.columns:
                raise DataError(f"new data lacks the column {c!r} of the residual structure {self}")
        t, feats, _ = _features(rs, df, self.structure.lhs, self.labels)
        return t, feats


def _codes_on(col: pd.Series, labels: tuple[str, ...], what: str) -> np.ndarray:
    """Codes of ``col`` on known level labels."""
    from ._design import level_labels

    codes, labs = level_labels(col)
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({lab for lab in labs if lab not in index})
    if unknown:
        raise DataError(f"{what} has level(s) {', '.join(map(repr, unknown[:5]))} that the fit has not seen")
    return np.array([index[labs[c]] for c in codes], dtype=np.int64)


def _numeric(col: pd.Series, name: str, res: ResidualSpec, what: str) -> np.ndarray:
    types = pd.api.types
    if types.is_datetime64_any_dtype(col) or types.is_timedelta64_dtype(col) or isinstance(col.dtype, pd.PeriodDtype):
        raise DataError(
            f"{what} column {name!r} of {res} holds dates/times (dtype {col.dtype}): convert it to "
            f"a number before fitting, e.g. days since the start: (df[{name!r}] - "
            f"df[{name!r}].min()) / pd.Timedelta(days=1)"
        )
    if not (types.is_numeric_dtype(col) and not types.is_bool_dtype(col)) or types.is_complex_dtype(col):
        raise DataError(
            f"{what} column {name!r} of {res} must be numeric (got dtype {col.dtype}): convert it, e.g. with "
            "pd.to_numeric"
        )
    return col.to_numpy(dtype=float)


def _features(
    res: ResidualSpec, df: pd.DataFrame, lhs: str, known: dict[str, tuple[str, ...]] | None
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """``(t, feats, labels)`` of the rows ``df``; factor levels from ``known`` (new rows) or the rows."""
    from ._design import level_labels

    feats: dict[str, np.ndarray] = {}
    labels: dict[str, tuple[str, ...]] = {}

    def factor(name: str, key: str, what: str) -> np.ndarray:
        if known is not None:
            return _codes_on(df[name], known[key], what)
        codes, labs = level_labels(df[name])
        labels[key] = tuple(labs)
        return codes

    n = len(df)
    if lhs == "time":
        t = _numeric(df[res.lhs[0]], res.lhs[0], res, "time")
    elif lhs == "visit":
        feats["visit"] = factor(res.lhs[0], "visit", f"visit column {res.lhs[0]!r}")
        t = feats["visit"].astype(float)
    elif lhs == "coords":
        feats["coords"] = (
            np.column_stack([_numeric(df[c], c, res, "coordinate") for c in res.lhs])
            if n
            else np.zeros((0, len(res.lhs)))
        )
        t = np.zeros(n)
    elif res.lhs:  # "any": a number as it is, a factor by its levels
        col = df[res.lhs[0]]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            t = col.to_numpy(dtype=float)
        else:
            t = factor(res.lhs[0], "visit", f"column {res.lhs[0]!r}").astype(float)
    else:
        t = np.zeros(n)
    feats["t"] = t
    if res.strata:
        feats["stratum"] = factor(res.strata, "stratum", f"column {res.strata!r}")
    if res.variance is not None:
        vf = res.variance
        if VARIANCE_FUNCTIONS[vf.kind].per_level:
            feats["vf"] = factor(vf.column, "vf", f"column {vf.column!r}").astype(float)
        else:
            feats["vf"] = _numeric(df[vf.column], vf.column, res, f"variance covariate of {vf}")
    return t, feats, labels


def _variance_function(vf: VarianceSpec, feats: dict[str, np.ndarray], labels: dict[str, tuple[str, ...]]) -> Any:
    try:
        return VARIANCE_FUNCTIONS[vf.kind].bind(vf.column, feats["vf"], labels.get("vf", ()))
    except ValueError as e:
        raise DataError(str(e)) from None


def _iid_grouping(df: pd.DataFrame, bars: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], str]:
    """The groups of a variance function on independent errors: the random effects' factor, or each row."""
    distinct = set(bars)
    if len(distinct) > 1:
        raise StructureError(
            "a variance function on independent errors combines with random-effect terms of one grouping "
            f"factor only; the formula has {len(distinct)} ({', '.join(':'.join(f) for f in sorted(distinct))})"
        )
    if distinct:
        f = next(iter(distinct))
        return f, ":".join(f)
    return (), "(row)"


def bind_residual(res: ResidualSpec, df: pd.DataFrame, bars: tuple[tuple[str, ...], ...] = ()) -> ResidualProcess:
    """Attach a parsed structure to the (complete) rows of the model frame (``bars`` the grouping
    factors of the random-effect terms, for a variance function on independent errors).

    Raises
    ------
    DataError
        For columns of the wrong type, strata that change within a group, rows that cannot
        identify the structure's parameters.
    """
    from ..cov import Heteroscedastic, Independent, Stratified
    from ._design import grouping_codes

    n = len(df)
    if res.independent:
        factors, group = _iid_grouping(df, bars)
        lhs_kind = "any"
    else:
        factors, group = res.factors, res.group
        lhs_kind = STRUCTURES[res.kind].lhs
    if factors:
        codes, levels = grouping_codes(df, factors)
    elif group == "(row)":
        codes, levels = np.arange(n, dtype=np.int64), [str(i) for i in range(n)]
    else:
        codes, levels = np.zeros(n, dtype=np.int64), ["1"]
    t, feats, labels = _features(res, df, lhs_kind, None)
    opts = dict(res.options)
    what = str(res)
    if res.strata:
        st = feats["stratum"]
        per = np.zeros((len(levels), len(labels["stratum"])))
        per[codes, st] = 1
        if np.any(per.sum(axis=1) > 1):
            bad = levels[int(np.flatnonzero(per.sum(axis=1) > 1)[0])]
            raise DataError(
                f"{what}: {res.strata!r} must be constant within each level of {group!r} (one structure per "
                f"{res.strata}), but {group} = {bad!r} has more than one {res.strata}"
            )
    if res.independent:
        base: Any = Independent()
    else:
        cls = STRUCTURES[res.kind]

        def bound(keep: np.ndarray) -> Any:
            return cls.bind(Rows({k: v[keep] for k, v in feats.items()}, codes[keep], len(levels), labels, opts))

        if res.strata:
            st = feats["stratum"]
            bases = [bound(st == a) for a in range(len(labels["stratum"]))]
            base = Stratified(bases, labels["stratum"], res.strata)
        else:
            base = bound(np.ones(n, bool))
    if res.variance is not None:
        _check_variance_function(res, base)
    structure = base if res.variance is None else Heteroscedastic(base, _variance_function(res.variance, feats, labels))
    try:
        structure.check_rows(Rows(feats, codes, len(levels), labels, opts), what)
    except ValueError as e:
        raise DataError(str(e)) from None
    return ResidualProcess(
        kind=res.kind,
        time=res.time,
        group=group,
        factors=factors,
        levels=tuple(levels),
        codes=codes,
        t=t,
        structure=structure,
        feats=feats,
        spec=res,
        labels=labels,
    )


def _check_variance_function(res: ResidualSpec, base: Any) -> None:
    """A variance per level of the visit next to a structure that has a variance per visit is twice the same
    parameters (``us(visit | id)`` with ``ident(visit)``)."""
    from ..cov import Stratified, VisitStructure

    vf = res.variance
    first = base.bases[0] if isinstance(base, Stratified) else base
    if (
        vf is not None
        and VARIANCE_FUNCTIONS[vf.kind].per_level
        and isinstance(first, VisitStructure)
        and first.heterogeneous
        and res.lhs
        and vf.column == res.lhs[0]
    ):
        raise StructureError(
            f"{res} already has a variance per visit of {vf.column!r}: the variance function {vf} adds the same "
            "parameters again and is not identifiable: drop the variance function (cs, toep, ar1 and iid with "
            f"{vf} are csh, toeph, ar1h and diag)"
        )


def _visit_only_columns(residual: ResidualProcess, Z: np.ndarray) -> bool:
    """Whether every column of ``Z`` is a function of the visit (the same value at a visit in every group)."""
    v = residual.feats["visit"].astype(np.int64)
    m = int(v.max()) + 1 if v.size else 0
    for j in range(Z.shape[1]):
        z = Z[:, j]
        lo = np.full(m, np.inf)
        hi = np.full(m, -np.inf)
        np.minimum.at(lo, v, z)
        np.maximum.at(hi, v, z)
        scale = max(float(np.max(np.abs(z))) if z.size else 0.0, 1e-300)
        if np.any(hi - lo > 1e-10 * scale):
            return False
    return True


def check_terms(residual: ResidualProcess, terms: tuple[Any, ...]) -> None:
    """Every random-effect term must be on the residual structure's grouping factor, and identifiable next to it.

    Raises
    ------
    StructureError
        Naming the term and what is supported.
    """
    from ..cov import Heteroscedastic, Stratified, UnstructuredVisits

    base = residual.structure.base if isinstance(residual.structure, Heteroscedastic) else residual.structure
    base = base.bases[0] if isinstance(base, Stratified) else base
    for t in terms:
        if (
            t.factors == residual.factors
            and "(Intercept)" in t.coef_names
            and residual.structure.confounded_with_intercept
        ):
            raise StructureError(
                f"a random intercept ({t.lhs} | {t.group}) next to {residual} is not identifiable: "
                f"{residual.kind} already holds any covariance common to all observations of a group, which is "
                f"what the intercept adds; drop the intercept from the term (e.g. (0 + x | {t.group})), or use a "
                "structure that cannot hold it (csh, ar1h, toeph, diag, ar1, ou)"
            )
        if (
            t.factors == residual.factors
            and isinstance(base, UnstructuredVisits)
            and t.Zraw is not None
            and _visit_only_columns(residual, t.Zraw)
        ):
            raise StructureError(
                f"random-effect term ({t.lhs} | {t.group}) next to {residual}: its columns take one value per "
                f"visit of {residual.time!r}, so Z D Z' is a covariance over the visits, which the unstructured "
                "covariance already holds in full; it is not identifiable: drop the term, or use a structure with "
                "fewer parameters (csh, toeph, ar1h, diag)"
            )
        if t.factors != residual.factors:
            raise StructureError(
                f"random-effect term ({t.lhs} | {t.group}) with residual structure {residual.kind}({residual.time} | "
                f"{residual.group}): a residual structure combines with random-effect terms of its own grouping "
                f"factor {residual.group!r} only (crossed or nested terms are not supported with it yet)"
            )
