"""Fitting from sufficient statistics: one pass over the rows, chunk by chunk, in memory or with Dask.

A Gaussian LMM with independent errors depends on the data only through
cross-products of ``[Z X y]`` per level of the grouping factors. :class:`SuffStats`
computes them from a chunk of rows in one pass; statistics of chunks add up
(``a + b``, levels matched by value) in any order; :func:`lmm_from_stats` fits the
merged statistics with the engine of :func:`bayeslmm.lmm` and gives the same
estimates. :func:`lmm_dask` does the pass with Dask (``map_partitions`` and a tree
reduction) over a dask DataFrame or Parquet files; Dask is an optional dependency
(``pip install 'bayeslmm[dask]'``) imported only there. :func:`out_of_core_source`,
:func:`dask_scheduler` and :func:`fit_out_of_core` are the out-of-core path of ``bayeslmm fit``:
which Parquet data to read, on which scheduler, and a report of the run.
"""

from ._dask import fitted_dask, lmm_dask, suff_stats_dask
from ._fit import RowPredictor, StatsSource, lmm_from_stats, stats_model_spec
from ._levels import LevelKeys
from ._schema import DesignSchema, chunk_levels, merge_levels
from ._source import LOCAL_SCHEDULERS, OUT_OF_CORE_NOTE, dask_scheduler, fit_out_of_core, out_of_core_source
from ._stats import SuffStats, suff_stats

__all__ = [
    "LOCAL_SCHEDULERS",
    "OUT_OF_CORE_NOTE",
    "DesignSchema",
    "LevelKeys",
    "RowPredictor",
    "StatsSource",
    "SuffStats",
    "chunk_levels",
    "dask_scheduler",
    "fit_out_of_core",
    "fitted_dask",
    "lmm_dask",
    "lmm_from_stats",
    "merge_levels",
    "out_of_core_source",
    "stats_model_spec",
    "suff_stats",
    "suff_stats_dask",
]
