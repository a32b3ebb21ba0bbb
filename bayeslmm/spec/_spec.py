"""The immutable model specification consumed by both estimation paths.

Notation (see ``bayeslmm.__doc__``): ``y = X beta + Z b + e``, ``b = Lambda(theta) u``,
``u ~ N(0, sigma^2 I)``, ``e ~ N(0, sigma^2 I)``. ``Z = [Z_1 ... Z_K]``, one block
per random-effect term; the columns of ``Z_k`` are ordered level by level (all
``q_k`` columns of level 1, then level 2, ...), as in lme4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import DataError
from ..cov import Unstructured

if TYPE_CHECKING:
    from ._residual import ResidualProcess


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class ReTerm:
    """One random-effect term ``(lhs | group)``.

    Attributes
    ----------
    group
        Name of the grouping factor as lme4 prints it (``"a:b"`` for an interaction).
    name
        Unique name of the term (``group``, or ``group.1``, ... when a factor has
        several terms, as lme4's ``VarCorr``).
    factors
        Data columns whose interaction forms the grouping factor.
    lhs
        Formula of the term's columns (``"1 + Days"``).
    coef_names
        Names of the ``q`` columns (``("(Intercept)", "Days")``).
    levels
        Level labels (strings), in lme4's order.
    codes
        ``(n,)`` level index of each row.
    Zraw
        ``(n, q)`` the term's model-matrix columns (before expansion by level); ``(0, q)`` in a
        specification without rows.
    level_counts
        ``(nlevels,)`` observations per level where there are no rows (else None: from ``codes``).
    """

    group: str
    name: str
    factors: tuple[str, ...]
    lhs: str
    coef_names: tuple[str, ...]
    levels: tuple[str, ...]
    codes: np.ndarray
    Zraw: np.ndarray
    design: Any = field(repr=False, compare=False, default=None)
    level_counts: np.ndarray | None = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", _frozen(np.asarray(self.codes, dtype=np.int64)))
        object.__setattr__(self, "Zraw", _frozen(np.asarray(self.Zraw, dtype=float)))

    @property
    def q(self) -> int:
        """Number of random effects per level."""
        return self.Zraw.shape[1]

    @property
    def nlevels(self) -> int:
        """Number of levels of the grouping factor."""
        return len(self.levels)

    @property
    def ncols(self) -> int:
        """Number of columns of ``Z_k`` (``nlevels * q``)."""
        return self.nlevels * self.q

    @property
    def covariance(self) -> Unstructured:
        """The term's covariance structure (parameters, names, ``varcorr()`` rows)."""
        return Unstructured(self.coef_names)

    @property
    def ntheta(self) -> int:
        """Number of covariance parameters (lower triangle of the ``q x q`` factor)."""
        return self.covariance.ntheta

    def counts(self) -> np.ndarray:
        """``(nlevels,)`` number of observations per level."""
        if self.level_counts is not None:
            return self.level_counts
        return np.bincount(self.codes, minlength=self.nlevels)


@dataclass(frozen=True)
class ModelSpec:
    """Everything both estimation paths need: response, design matrices, terms and names.

    Built by :func:`bayeslmm.model_spec` from a formula and a data frame; never
    modified afterwards (its arrays are read-only). ``residual`` is ``None`` for
    independent errors or a :class:`~bayeslmm.spec.ResidualProcess`.

    A specification may hold no rows: one made from sufficient statistics
    (:mod:`bayeslmm.suff`) has ``y`` of shape ``(0,)``, ``X`` of shape ``(0, p)``, ``nobs``
    the number of rows summarised and a ``source`` that holds the cross-product blocks
    (``source.blocks``), the sd of the response (``source.y_sd``), the fitted values of chunks
    (``source.fitted_frame(fit, data)``) and the message that says what to do where rows are
    needed (``source.no_rows(what)``). :meth:`require_rows` is the one check.
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixef_names: tuple[str, ...]
    terms: tuple[ReTerm, ...]
    row_index: np.ndarray
    residual: ResidualProcess | None = None
    n_dropped: int = 0
    dropped_columns: tuple[str, ...] = ()
    #: ``(formulaic ModelSpec of the fixed effects, ParsedFormula, kept column names)``
    fixed_design: tuple[Any, Any, tuple[str, ...]] | None = field(repr=False, compare=False, default=None)
    nobs: int | None = None
    source: Any = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "y", _frozen(np.asarray(self.y, dtype=float)))
        object.__setattr__(self, "X", _frozen(np.asarray(self.X, dtype=float)))
        object.__setattr__(self, "row_index", _frozen(np.asarray(self.row_index)))

    @property
    def n(self) -> int:
        """Number of observations used."""
        return self.y.shape[0] if self.nobs is None else self.nobs

    @property
    def has_rows(self) -> bool:
        """Whether the rows are here (not a specification from sufficient statistics)."""
        return self.nobs is None

    def require_rows(self, what: str) -> None:
        """Raise :class:`~bayeslmm.DataError` saying what to do if the rows are not here (``what`` needs them)."""
        if self.has_rows:
            return
        hint = self.source.no_rows(what) if self.source is not None else f"{what}; the specification holds no rows"
        raise DataError(hint)

    @property
    def p(self) -> int:
        """Number of fixed-effect coefficients."""
        return self.X.shape[1]

    @property
    def ntheta(self) -> int:
        """Total number of covariance parameters ``theta``."""
        return sum(t.ntheta for t in self.terms)

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels per grouping factor (``{group: nlevels}``)."""
        out: dict[str, int] = {}
        for t in self.terms:
            out.setdefault(t.group, t.nlevels)
        if self.residual is not None:
            out.setdefault(self.residual.group, len(self.residual.levels))
        return out

    def theta_lower(self) -> np.ndarray:
        """Lower bounds of theta: 0 for diagonal elements of each factor, -inf elsewhere."""
        return np.concatenate([t.covariance.theta_lower() for t in self.terms]) if self.terms else np.zeros(0)

    def theta_names(self) -> list[str]:
        """lme4-style names of theta (``"Subject.(Intercept)"``, ``"Subject.Days.(Intercept)"``)."""
        return [name for t in self.terms for name in t.covariance.theta_names(t.name)]

    def varcorr_labels(self) -> list[str]:
        """``grp|var1|var2`` labels of the variance components, in ``varcorr()`` row order, "Residual" last."""
        return [lab for t in self.terms for lab in t.covariance.labels(t.name)] + ["Residual"]

    def with_response(self, y: np.ndarray) -> ModelSpec:
        """A copy with another response vector (same design), e.g. for simulation refits."""
        from dataclasses import replace

        self.require_rows("a new response needs the design rows")
        y = np.asarray(y, dtype=float)
        if y.shape != self.y.shape:
            raise ValueError(f"response must have shape {self.y.shape}, got {y.shape}")
        return replace(self, y=y)
