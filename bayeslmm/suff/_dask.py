"""Fit an LMM to data larger than memory with Dask: one pass over the partitions, a tree reduction.

Pipeline (each arrow a Dask computation; the optimisation runs on the reduced blocks)::

    dask DataFrame / Parquet --(1) chunk_levels per partition, tree-merged--> categorical levels
        --DesignSchema--> --(2) SuffStats.from_chunk per partition, tree-merged--> SuffStats
        --lmm_from_stats--> StatsFit --(3, optional) RowPredictor per partition--> fitted, residual

Pass (1) runs only when the fixed-effects formula has text (or ``C(...)``) columns whose
levels are not given. The reductions are trees of ``dask.delayed`` merges
(``split_every`` partials per merge), so no worker ever holds more than that many
partial statistics. Any Dask scheduler works: the default local one, or a
``distributed.Client`` (passed as ``client`` or active as the default).

Dask is optional: this module imports it inside the functions, and says how to
install it when it is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, OptionError
from ._fit import StatsFit, lmm_from_stats
from ._schema import DesignSchema, FormulaColumns, chunk_levels, merge_levels
from ._stats import SuffStats

_INSTALL = "this needs Dask, an optional dependency: pip install 'bayeslmm[dask]'"


def _dask() -> tuple[Any, Any]:
    """``(dask, dask.dataframe)``, or an ImportError that says how to install them."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as e:
        raise ImportError(f"{_INSTALL} ({e})") from None
    return dask, dd


def as_dask_frame(data: Any, *, npartitions: int | None = None) -> Any:
    """A dask DataFrame from a dask DataFrame, Parquet path(s) (file, directory or glob) or an in-memory frame.

    Raises
    ------
    DataError
        If the Parquet files cannot be read or ``data`` is of another type.
    """
    dask, dd = _dask()
    if isinstance(data, dd.DataFrame):
        return data
    if isinstance(data, (str, os.PathLike)) or (
        isinstance(data, Sequence) and data and all(isinstance(d, (str, os.PathLike)) for d in data)
    ):
        paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(d) for d in data]
        for p in paths:
            if "://" not in p and not any(ch in p for ch in "*?[") and not os.path.exists(p):
                raise DataError(f"no such Parquet file or directory: {p!r}")
        try:
            return dd.read_parquet(paths[0] if len(paths) == 1 else paths)
        except Exception as e:  # pyarrow/fsspec raise many types for unreadable input
            raise DataError(f"cannot read Parquet from {data!r}: {e}") from None
    if isinstance(data, pd.DataFrame) or hasattr(data, "to_pandas"):
        from ..spec._design import as_pandas

        df = as_pandas(data)
        return dd.from_pandas(df, npartitions=npartitions or max(1, df.shape[0] // 1_000_000))
    raise DataError(
        f"data must be a dask DataFrame, a Parquet path (file, directory or glob) or a pandas/polars frame, "
        f"got {type(data).__name__}"
    )


def _tree(dask: Any, items: list[Any], merge: Any, split_every: int) -> Any:
    """One delayed value: ``items`` merged ``split_every`` at a time, level by level."""
    merge_d = dask.delayed(merge, pure=True)
    while len(items) > 1:
        items = [merge_d(items[i : i + split_every]) for i in range(0, len(items), split_every)]
    return items[0]


def _levels_of(part: pd.DataFrame, formula: str) -> dict[str, np.ndarray]:
    return chunk_levels(part, formula)


def _stats_of(part: pd.DataFrame, schema: DesignSchema) -> SuffStats:
    return SuffStats.from_chunk(schema, part)


def _compute(dask: Any, obj: Any, client: Any) -> Any:
    if client is not None:
        return client.compute(obj).result()
    (out,) = dask.compute(obj)
    return out


def suff_stats_dask(formula: str, data: Any, *, client: Any = None,
                    levels: Mapping[str, Sequence[Any]] | None = None, split_every: int = 8) -> SuffStats:
    """Sufficient statistics of all the rows of a dask DataFrame or Parquet data (one pass, tree-reduced).

    Parameters
    ----------
    formula
        lme4 syntax with at least one random-effect term; independent errors.
    data
        A dask DataFrame, or a Parquet file, directory, glob or list of files.
    client
        A ``distributed.Client`` to compute on; default: Dask's current scheduler.
    levels
        Levels of categorical fixed-effect columns (column -> levels); those not given are
        collected by a first pass over the data.
    split_every
        Partial statistics merged per task of the tree reduction.

    Returns
    -------
    SuffStats
        Of every complete row (merge it with others, or fit it with :func:`lmm_from_stats`).
    """
    stats, _ = _suff_stats(formula, data, client=client, levels=levels, split_every=split_every)
    return stats


def _suff_stats(formula: str, data: Any, *, client: Any, levels: Mapping[str, Sequence[Any]] | None,
                split_every: int) -> tuple[SuffStats, dict[str, float]]:
    dask, _ = _dask()
    if int(split_every) < 2:
        raise OptionError(f"split_every must be at least 2, got {split_every}")
    ddf = as_dask_frame(data)
    fc = FormulaColumns.of(formula, dict(ddf.dtypes))
    ddf = ddf[list(fc.columns)]
    given = {k: list(v) for k, v in (levels or {}).items()}
    timings = {"levels_s": 0.0}
    t0 = time.perf_counter()
    if any(c not in given for c in fc.categorical):
        parts = [dask.delayed(_levels_of, pure=True)(p, formula) for p in ddf.to_delayed()]
        found = _compute(dask, _tree(dask, parts, merge_levels, int(split_every)), client)
        given = {**found, **given}
        timings["levels_s"] = time.perf_counter() - t0
    schema = DesignSchema.from_levels(formula, dict(ddf.dtypes), given)
    t1 = time.perf_counter()
    schema_d = dask.delayed(schema, pure=True)
    parts = [dask.delayed(_stats_of, pure=True)(p, schema_d) for p in ddf.to_delayed()]
    stats = _compute(dask, _tree(dask, parts, SuffStats.merge, int(split_every)), client)
    timings["pass_s"] = time.perf_counter() - t1
    timings["npartitions"] = float(len(parts))
    return stats, timings


def lmm_dask(formula: str, data: Any, method: str = "REML", *, client: Any = None,
             levels: Mapping[str, Sequence[Any]] | None = None, fitted: bool = False, split_every: int = 8,
             start: np.ndarray | None = None) -> StatsFit | tuple[StatsFit, Any]:
    """Fit a linear mixed model by REML or ML to a dask DataFrame or Parquet data.

    One Dask pass computes the sufficient statistics of every partition and merges them in a
    tree (:func:`suff_stats_dask`); the optimisation then runs here on the merged blocks, at a
    cost per evaluation that grows with the number of levels, not of rows.

    Parameters
    ----------
    formula
        lme4 syntax (independent errors), e.g. ``"y ~ x + (1 + x | g)"``.
    data
        A dask DataFrame, or a Parquet file, directory, glob or list of files.
    method
        ``"REML"`` or ``"ML"``.
    client
        A ``distributed.Client``; default: Dask's current scheduler (a running Client
        is picked up automatically; otherwise the local threaded scheduler).
    levels
        Levels of categorical fixed-effect columns (skips the first pass for them).
    fitted
        Also return a lazy dask DataFrame with columns ``fitted`` and ``residual``, aligned
        with ``data`` (NaN for rows with a missing value): a second pass, run when computed
        (``.compute()``, ``.to_parquet(...)``).
    split_every
        Partial statistics merged per task of the tree reduction.
    start
        Starting theta.

    Returns
    -------
    StatsFit, or ``(StatsFit, dask DataFrame)`` with ``fitted=True``. ``fit.timings`` holds the
    seconds of the levels pass, the statistics pass and the fit, and the number of partitions.
    """
    _dask()
    stats, timings = _suff_stats(formula, data, client=client, levels=levels, split_every=split_every)
    fit = lmm_from_stats(stats, method, start=start)
    timings["fit_s"] = fit.fit_seconds
    fit.timings = timings
    if not fitted:
        return fit
    return fit, fitted_dask(fit, data)


def _fitted_of(part: pd.DataFrame, predictor: Any) -> pd.DataFrame:
    return predictor(part)


def fitted_dask(fit: StatsFit, data: Any) -> Any:
    """Lazy fitted values and residuals of a dask DataFrame or Parquet data (the second pass).

    Returns
    -------
    dask DataFrame with float columns ``fitted`` and ``residual``, partitioned and indexed as
    ``data``; rows with a missing value in a column of the formula get NaN.
    """
    dask, _ = _dask()
    if not isinstance(fit, StatsFit):
        raise DataError(f"fit must be a StatsFit (from lmm_dask or lmm_from_stats), got {type(fit).__name__}")
    ddf = as_dask_frame(data)
    ddf = ddf[list(fit.schema.columns)]
    meta = pd.DataFrame({"fitted": pd.Series(dtype=float), "residual": pd.Series(dtype=float)})
    predictor = dask.delayed(fit.row_predictor(), pure=True)
    return ddf.map_partitions(_fitted_of, predictor, meta=meta)
