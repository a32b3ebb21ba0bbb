"""Fit an LMM to data larger than memory with Dask: one pass over the partitions, a tree reduction.

Pipeline (each arrow a Dask computation; the optimisation runs on the reduced blocks)::

    dask DataFrame / Parquet --(1) chunk_levels per partition, tree-merged--> categorical levels
        --DesignSchema--> --(2) SuffStats.from_chunk per partition, tree-merged--> SuffStats
        --lmm_from_stats--> LMMFit --(3, optional) RowPredictor per partition--> fitted, residual

Pass (1) runs only when the fixed-effects formula has text (or ``C(...)``) columns whose
levels are not given. The reductions are trees of ``dask.delayed`` merges
(``split_every`` partials per merge), so no worker ever holds more than that many
partial statistics. Any Dask scheduler works: the default local one, or a
``distributed.Client`` (passed as ``client`` or active as the default).

Dask is optional: this module imports it inside the functions, and says how to
install it when it is missing.

Damaged input (a truncated file, a file without a column the formula uses, a column with another
type in one file) fails inside a Dask task, with an exception that names no file. When reading
Parquet files fails, :func:`_diagnose_parquet` looks at the files one by one and the
:class:`~bayeslmm.DataError` names the file and what is wrong with it.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np
import pandas as pd

from .._errors import DataError, OptionError
from .._io import has_glob
from ..freq import LMMFit
from ._fit import StatsSource, lmm_from_stats
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
            if "://" not in p and not has_glob(p) and not os.path.exists(p):
                raise DataError(f"no such Parquet file or directory: {p!r}")
        try:
            return dd.read_parquet(paths[0] if len(paths) == 1 else paths)
        except Exception as e:  # pyarrow/fsspec raise many types for unreadable input
            msg = _diagnose_parquet(data, ())
            raise DataError(msg or f"cannot read Parquet from {data!r}: {_first_line(e)}") from None
    if isinstance(data, pd.DataFrame) or hasattr(data, "to_pandas"):
        from ..spec import as_pandas

        df = as_pandas(data)
        return dd.from_pandas(df, npartitions=npartitions or max(1, df.shape[0] // 1_000_000))
    raise DataError(
        f"data must be a dask DataFrame, a Parquet path (file, directory or glob) or a pandas/polars frame, "
        f"got {type(data).__name__}"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _parquet_files(data: Any) -> list[str]:
    """The local files behind Parquet path data (a file, a directory, a glob or a list), in order.

    A directory holds every file below it whose name starts with neither ``_`` nor ``.`` (as
    Dask and pyarrow read it); URLs and other data give no files.
    """
    if isinstance(data, (str, os.PathLike)):
        items = [os.fspath(data)]
    elif isinstance(data, Sequence) and data and all(isinstance(d, (str, os.PathLike)) for d in data):
        items = [os.fspath(d) for d in data]
    else:
        return []
    files: list[str] = []
    for item in items:
        if "://" in item:
            return []
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(("_", "."))]
        elif os.path.isfile(item):
            files.append(item)
        elif has_glob(item):
            files += [m for m in sorted(glob.glob(item, recursive=True)) if os.path.isfile(m)]
    return files


def _type_kind(t: Any) -> str:
    """What a pyarrow type is to a formula: numbers, text, categorical, logical, or other."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return "categorical"
    if pa.types.is_boolean(t):
        return "logical"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numbers"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t):
        return "text"
    return str(t)


def _describe_type(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return f"categorical (pandas 'category'; Parquet {t})"
    return f"{_type_kind(t)} ({t})" if _type_kind(t) != str(t) else str(t)


def _diagnose_parquet(data: Any, columns: Sequence[str]) -> str | None:
    """What is wrong with one of the Parquet files of ``data``, naming the file; None if none is found.

    In order: a file whose footer cannot be read (truncated, or not Parquet), a file without one of
    ``columns``, a column of ``columns`` with numbers in some files and text or categories in
    others, a file whose ``columns`` cannot be read. Run after a failure only: it reads every
    file's footer (and, last, the columns).
    """
    files = _parquet_files(data)
    if not files:
        return None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    schemas = {}
    for f in files:
        try:
            schemas[f] = pq.read_schema(f)
        except Exception as e:  # ArrowInvalid, OSError, ...
            return f"cannot read the Parquet file {f!r}: {_first_line(e)} (a truncated or damaged file?)"
    for f, sch in schemas.items():
        missing = [c for c in columns if c not in sch.names]
        if missing:
            s = "s" * (len(missing) != 1)
            return (
                f"the Parquet file {f!r} has no column{s} {', '.join(map(repr, missing))}, which the formula "
                f"uses (its columns: {', '.join(sch.names)}); every file needs every column of the formula"
            )
    for c in columns:
        types = {f: sch.field(c).type for f, sch in schemas.items()}
        by_kind: dict[str, list[str]] = {}
        for f, t in types.items():
            by_kind.setdefault(_type_kind(t), []).append(f)
        if len(by_kind) > 1:
            kinds = sorted(by_kind, key=lambda k: -len(by_kind[k]))  # the usual type first, then the odd ones
            usual = by_kind[kinds[0]]
            odd = [f"{_describe_type(types[by_kind[k][0]])} in {_files_text(by_kind[k])}" for k in kinds[1:]]
            return (
                f"column {c!r} is {'; '.join(odd)} but {_describe_type(types[usual[0]])} in "
                f"{_files_text(usual)}; give it one type in every file (e.g. cast it to string when "
                "writing)"
            )
    for f in files if columns else ():
        try:
            pq.read_table(f, columns=list(columns))
        except Exception as e:
            return f"cannot read the Parquet file {f!r}: {_first_line(e)} (a damaged file?)"
    return None


def _diagnose_columns(formula: str, data: Any) -> str | None:
    """When the formula's columns are not all in the first Parquet file: the file that lacks one, if
    the files together have them all (:func:`_diagnose_parquet`)."""
    files = _parquet_files(data)
    if len(files) < 2:
        return None
    try:
        import pyarrow.parquet as pq

        dtypes: dict[str, Any] = {}
        for f in files:
            for name, dtype in pq.read_schema(f).empty_table().to_pandas().dtypes.items():
                dtypes.setdefault(name, dtype)
        fc = FormulaColumns.of(formula, dtypes)
    except Exception:  # an unreadable file, or the columns are missing everywhere: no better message here
        return _diagnose_parquet(data, ())
    return _diagnose_parquet(data, fc.columns)


def _files_text(files: list[str]) -> str:
    if len(files) <= 2:
        return " and ".join(map(repr, files))
    return f"{files[0]!r} and {len(files) - 1} other files"


def _compute_parquet(dask: Any, obj: Any, client: Any, data: Any, columns: Sequence[str]) -> Any:
    """:func:`_compute`, with a failure to read Parquet ``data`` reported as a DataError naming the file."""
    try:
        return _compute(dask, obj, client)
    except Exception as e:
        msg = _diagnose_parquet(data, columns)
        if msg is not None:
            raise DataError(msg) from None
        if isinstance(e, DataError):
            raise
        if _is_read_error(e) and _parquet_files(data):
            raise DataError(f"cannot read the Parquet data {data!r}: {_first_line(e)}") from None
        raise


def _is_read_error(e: BaseException) -> bool:
    try:
        import pyarrow as pa
    except ImportError:
        return isinstance(e, OSError)
    return isinstance(e, (OSError, pa.ArrowException))


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


def suff_stats_dask(
    formula: str,
    data: Any,
    *,
    client: Any = None,
    levels: Mapping[str, Sequence[Any]] | None = None,
    split_every: int = 8,
) -> SuffStats:
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


def _with_centres(dask: Any, ddf: Any, schema: DesignSchema, client: Any) -> DesignSchema:
    """The schema with the working columns' centres from the first partition that has complete rows.

    One partition is read once more; the centres need only be near the data (see
    :meth:`DesignSchema.with_centres`), and every partition is then formed with the same ones.
    """
    for i in range(ddf.npartitions):
        part = _compute(dask, ddf.partitions[i].to_delayed()[0], client)
        out = schema.with_centres(part)
        if out is not schema:
            return out
    return schema


def _suff_stats(
    formula: str, data: Any, *, client: Any, levels: Mapping[str, Sequence[Any]] | None, split_every: int
) -> tuple[SuffStats, dict[str, float]]:
    dask, _ = _dask()
    if int(split_every) < 2:
        raise OptionError(f"split_every must be at least 2, got {split_every}")
    ddf = as_dask_frame(data)
    try:
        fc = FormulaColumns.of(formula, dict(ddf.dtypes))
    except DataError:  # Dask's columns are the first file's: is a column missing from that file only?
        msg = _diagnose_columns(formula, data)
        if msg is not None:
            raise DataError(msg) from None
        raise
    ddf = ddf[list(fc.columns)]
    given = {k: list(v) for k, v in (levels or {}).items()}
    timings = {"levels_s": 0.0}
    t0 = time.perf_counter()
    if any(c not in given for c in fc.categorical):
        parts = [dask.delayed(_levels_of, pure=True)(p, formula) for p in ddf.to_delayed()]
        found = _compute_parquet(dask, _tree(dask, parts, merge_levels, int(split_every)), client, data, fc.columns)
        given = {**found, **given}
        timings["levels_s"] = time.perf_counter() - t0
    schema = DesignSchema.from_levels(formula, dict(ddf.dtypes), given)
    schema = _with_centres(dask, ddf, schema, client)
    t1 = time.perf_counter()
    schema_d = dask.delayed(schema, pure=True)
    parts = [dask.delayed(_stats_of, pure=True)(p, schema_d) for p in ddf.to_delayed()]
    stats = _compute_parquet(dask, _tree(dask, parts, SuffStats.merge, int(split_every)), client, data, fc.columns)
    timings["pass_s"] = time.perf_counter() - t1
    timings["npartitions"] = float(len(parts))
    return stats, timings


@overload
def lmm_dask(
    formula: str,
    data: Any,
    method: str = ...,
    *,
    client: Any = ...,
    levels: Mapping[str, Sequence[Any]] | None = ...,
    fitted: Literal[False] = ...,
    split_every: int = ...,
    start: np.ndarray | None = ...,
) -> LMMFit: ...


@overload
def lmm_dask(
    formula: str,
    data: Any,
    method: str = ...,
    *,
    client: Any = ...,
    levels: Mapping[str, Sequence[Any]] | None = ...,
    fitted: Literal[True],
    split_every: int = ...,
    start: np.ndarray | None = ...,
) -> tuple[LMMFit, Any]: ...


def lmm_dask(
    formula: str,
    data: Any,
    method: str = "REML",
    *,
    client: Any = None,
    levels: Mapping[str, Sequence[Any]] | None = None,
    fitted: bool = False,
    split_every: int = 8,
    start: np.ndarray | None = None,
) -> LMMFit | tuple[LMMFit, Any]:
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
    LMMFit, or ``(LMMFit, dask DataFrame)`` with ``fitted=True``. ``fit.timings`` holds the
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


def fitted_dask(fit: LMMFit, data: Any) -> Any:
    """Lazy fitted values and residuals of a dask DataFrame or Parquet data (the second pass).

    Returns
    -------
    dask DataFrame with float columns ``fitted`` and ``residual``, partitioned and indexed as
    ``data``; rows with a missing value in a column of the formula get NaN.
    """
    dask, _ = _dask()
    source = fit.spec.source if isinstance(fit, LMMFit) else None
    if not isinstance(source, StatsSource):
        raise DataError(
            f"fit must be a fit from sufficient statistics (lmm_dask or lmm_from_stats), got "
            f"{type(fit).__name__}{'' if source is None else ' with rows'}"
        )
    ddf = as_dask_frame(data)
    ddf = ddf[list(source.schema.columns)]
    meta = pd.DataFrame({"fitted": pd.Series(dtype=float), "residual": pd.Series(dtype=float)})
    predictor = dask.delayed(source.row_predictor(fit), pure=True)
    return ddf.map_partitions(_fitted_of, predictor, meta=meta)
