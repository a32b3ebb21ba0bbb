"""Fit an LMM from its sufficient statistics: the engine of :func:`bayeslmm.lmm` without the rows.

:func:`lmm_from_stats` hands the merged blocks to the same engine and optimiser as
:func:`bayeslmm.lmm` (:class:`bayeslmm.freq.BlockedEngine` -> :func:`bayeslmm.freq.optimize`), so one
evaluation of the criterion costs O(levels), never O(rows). The result is a
:class:`~bayeslmm.LMMFit` whose specification holds no rows (``spec.has_rows`` is False and
``spec.source`` is a :class:`StatsSource`): estimates, ``vcov``, ``varcorr``, ``ranef`` (BLUPs and
conditional sds), likelihood summaries, Satterthwaite df and Wald intervals work unchanged; what
needs the rows (fitted values, residuals, simulation, refits, profiles) says so, and
:meth:`~bayeslmm.LMMFit.fitted_frame` takes the rows again, chunk by chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..freq import SINGULAR_TOL, BlockedEngine, LMMFit, OptimizerRecord, check_method, one_blas_thread, optimize
from ..spec import ModelSpec, ReTerm, as_pandas
from ._levels import LevelKeys
from ._schema import DesignSchema
from ._stats import ModelLayout, SuffStats

_NO_ROWS = (
    "this fit was computed from sufficient statistics and holds no rows: {what}; "
    "pass the data again to fit.fitted_frame(data) (or bayeslmm.suff.fitted_dask for dask), "
    "or fit in memory with bayeslmm.lmm"
)


@dataclass(eq=False)
class StatsSource:
    """Where a row-less :class:`~bayeslmm.ModelSpec` came from: merged sufficient statistics.

    ``blocks`` are the merged cross-product blocks (the engine's ``CrossProducts``), ``y_sd`` the
    standard deviation of the response (from the blocks when the model has an intercept, else its
    root mean square): with them the PyMC ``marginal``/``restricted`` models of
    :func:`bayeslmm.bayes.build_model` are built without rows. ``layout`` and ``schema`` map chunks
    of rows to the fit again (:meth:`fitted_frame`).
    """

    blocks: Any
    y_sd: float | None
    layout: ModelLayout
    schema: DesignSchema
    _predictor: Any = field(default=None, repr=False)

    @staticmethod
    def no_rows(what: str) -> str:
        """The message where ``what`` needs the rows."""
        return _NO_ROWS.format(what=what)

    def fitted_frame(self, fit: LMMFit, data: Any) -> pd.DataFrame:
        """Fitted values and residuals of the rows of ``data`` (a chunk of the fitted data).

        ``fitted = X beta_hat + Z b_hat`` with the BLUPs of the fit; rows with a missing value
        get NaN. See :class:`RowPredictor` (the object the Dask pass ships to its workers).

        Returns
        -------
        DataFrame indexed as ``data`` with float columns ``fitted`` and ``residual``.
        """
        if self._predictor is None:
            self._predictor = self.row_predictor(fit)
        return self._predictor(data)

    def row_predictor(self, fit: LMMFit) -> RowPredictor:
        """The few arrays the fitted values need (beta, BLUPs, level keys), without the blocks."""
        lay = self.layout
        return RowPredictor(
            schema=self.schema,
            keep=lay.keep,
            order=lay.order,
            keys=lay.keys,
            level_index=lay.level_index,
            groups=tuple(t.group for t in fit.spec.terms),
            beta=fit.fixef.to_numpy(),
            b=tuple(fit._b),
        )


def _y_sd(stats: SuffStats) -> float:
    """sd of the response from ``[X y]'[X y]``: ``sum y`` is the intercept column's cross-product with
    ``y``; without an intercept the root mean square (which is not smaller) stands in."""
    F, n = stats.F, stats.n
    yy = float(F[-1, -1])
    names = list(stats.schema.fixef_names)
    mean = float(F[names.index("(Intercept)"), -1]) / n if "(Intercept)" in names else 0.0
    return float(np.sqrt(max(yy / n - mean * mean, 0.0)))


def stats_spec(
    schema: DesignSchema, layout: ModelLayout, n: int, n_dropped: int, blocks: Any = None, y_sd: float | None = None
) -> ModelSpec:
    """The row-less specification of the merged statistics (terms in lme4's order, names as lme4)."""
    seen: dict[str, int] = {}
    terms = []
    for k, labels, counts in zip(layout.order, layout.labels, layout.counts):
        bar = schema.parsed.bars[k]
        j = seen.get(bar.group, 0)
        seen[bar.group] = j + 1
        q = len(schema.coef_names[k])
        terms.append(
            ReTerm(
                group=bar.group,
                name=bar.group if j == 0 else f"{bar.group}.{j}",
                factors=bar.factors,
                lhs=bar.lhs,
                coef_names=schema.coef_names[k],
                levels=labels,
                codes=np.zeros(0, dtype=np.int64),
                Zraw=np.zeros((0, q)),
                design=schema.bar_designs[k],
                level_counts=counts,
            )
        )
    p = len(layout.fixef_names)
    return ModelSpec(
        formula=schema.formula,
        response=schema.parsed.response,
        y=np.zeros(0),
        X=np.zeros((0, p)),
        fixef_names=layout.fixef_names,
        terms=tuple(terms),
        row_index=np.zeros(0, dtype=np.int64),
        n_dropped=n_dropped,
        dropped_columns=layout.dropped_columns,
        fixed_design=(schema.fixed_design, schema.parsed, layout.fixef_names),
        nobs=n,
        source=StatsSource(blocks=blocks, y_sd=y_sd, layout=layout, schema=schema),
    )


def stats_model_spec(stats: SuffStats) -> ModelSpec:
    """The row-less :class:`~bayeslmm.ModelSpec` of merged statistics, blocks attached: what
    :func:`bayeslmm.bayes.build_model` and :func:`bayeslmm.bayes.sample` take for the ``marginal``
    and ``restricted`` models (one density evaluation costs O(levels), not O(rows)).

    Raises
    ------
    DataError
        As :func:`lmm_from_stats` for statistics that cannot define a model.
    """
    if not isinstance(stats, SuffStats):
        raise DataError(f"stats must be a bayeslmm.suff.SuffStats, got {type(stats).__name__}")
    if not stats.terms:
        raise DataError(
            "the formula has no random-effect term such as (1 | group); the models from sufficient "
            "statistics need at least one"
        )
    blocks, layout = stats.to_model()
    return stats_spec(stats.schema, layout, stats.n, stats.n_dropped, blocks, _y_sd(stats))


def lmm_from_stats(
    stats: SuffStats, method: str = "REML", *, start: np.ndarray | None = None, theta: np.ndarray | None = None
) -> LMMFit:
    """Fit a linear mixed model by REML (default) or ML from merged sufficient statistics.

    Parameters
    ----------
    stats
        :class:`SuffStats` of all the rows (merged from chunks in any order).
    method
        ``"REML"`` or ``"ML"``.
    start
        Starting theta (default: as :func:`bayeslmm.lmm`).
    theta
        Evaluate the fit at this theta instead of optimising (e.g. to reproduce a fit made
        elsewhere); the fit is then marked not converged, with a message saying why.

    Returns
    -------
    LMMFit
        Without rows (``fit.spec.has_rows`` is False); the same estimates as
        ``bayeslmm.lmm(formula, all_rows)`` up to rounding.

    Raises
    ------
    DataError
        For a formula without random-effect terms, too few observations, or the
        checks of :meth:`SuffStats.to_model`.
    """
    method = check_method(method)
    if not isinstance(stats, SuffStats):
        raise DataError(f"stats must be a bayeslmm.suff.SuffStats, got {type(stats).__name__}")
    if not stats.terms:
        raise DataError(
            "the formula has no random-effect term such as (1 | group); a fit from sufficient statistics "
            "needs at least one (serial residual processes need the rows: use bayeslmm.lmm)"
        )
    t0 = time.perf_counter()
    blocks, layout = stats.to_model()
    spec = stats_spec(stats.schema, layout, stats.n, stats.n_dropped, blocks, _y_sd(stats))
    if spec.n <= spec.p:
        raise DataError(f"{spec.n} observations cannot estimate {spec.p} fixed effects and a variance")
    with one_blas_thread(len(spec.terms) > 1):
        engine = BlockedEngine(blocks, reml=(method == "REML"), spec=spec)
        rec = optimize(engine, start) if theta is None else _given(engine, np.asarray(theta, dtype=float))
        fit = LMMFit(spec, method, engine, rec, 0.0)
    fit.fit_seconds = time.perf_counter() - t0
    return fit


def _given(obj: BlockedEngine, theta: np.ndarray) -> OptimizerRecord:
    """The record of a fit evaluated at a given theta (no optimisation)."""
    lower = obj.bounds()[0]
    if theta.shape != lower.shape or np.any(theta < lower):
        raise DataError(f"theta must have {lower.size} values within the bounds {lower.tolist()}, got {theta.tolist()}")
    val = obj(theta)
    if not np.isfinite(val):
        raise DataError(f"the criterion cannot be evaluated at theta = {theta.tolist()}")
    return OptimizerRecord(
        optimizer="none (theta given)",
        x_start=theta,
        x=theta,
        criterion=val,
        n_evals=1,
        status="theta given",
        converged=False,
        singular=bool(np.any(np.isfinite(lower) & (theta - lower < SINGULAR_TOL))),
        gradient=np.zeros(0),
        hessian=np.zeros((0, 0)),
        messages=("theta was given: the criterion was not optimised",),
    )


@dataclass(eq=False)
class RowPredictor:
    """Fitted values ``X beta_hat + Z b_hat`` and residuals of chunks of rows (the second pass).

    Holds only the schema, ``beta`` ``(p,)``, the BLUPs per term ``(l_k, q_k)`` in lme4's order and
    the merged level keys: small enough to ship to Dask workers.
    """

    schema: DesignSchema
    keep: tuple[int, ...]
    order: tuple[int, ...]
    keys: tuple[LevelKeys, ...]
    level_index: tuple[np.ndarray, ...]
    groups: tuple[str, ...]
    beta: np.ndarray
    b: tuple[np.ndarray, ...]
    _index: dict[int, Any] = field(default_factory=dict, repr=False)

    def __call__(self, data: Any) -> pd.DataFrame:
        """``DataFrame`` indexed as ``data``: ``fitted`` and ``residual`` (NaN for incomplete rows).

        Raises
        ------
        DataError
            For a row whose grouping level is not in the fit.
        """
        df = as_pandas(data)
        ch = self.schema.prepare(df)
        fit = ch.X[:, list(self.keep)] @ self.beta
        for k, (fk, b) in enumerate(zip(self.order, self.b)):
            if k not in self._index:
                self._index[k] = self.keys[k].index()
            idx = self.keys[k].index_of(ch.keys[fk], self._index[k])
            where = np.where(idx >= 0, self.level_index[k][np.maximum(idx, 0)], -1)[ch.codes[fk]]
            if (where < 0).any():
                raise DataError(
                    f"{int((where < 0).sum())} row(s) have a level of {self.groups[k]!r} that is "
                    "not in the fit; fitted values are for the rows the model was fitted to"
                )
            fit = fit + np.einsum("nq,nq->n", ch.Z[fk], b[where])
        fitted = np.full(df.shape[0], np.nan)
        resid = np.full(df.shape[0], np.nan)
        fitted[ch.rows] = fit
        resid[ch.rows] = ch.y - fit
        return pd.DataFrame({"fitted": fitted, "residual": resid}, index=df.index)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"] = {}  # hash indexes are rebuilt in each process
        return state
