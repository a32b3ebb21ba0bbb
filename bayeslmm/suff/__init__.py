"""Fitting from sufficient statistics: one pass over the rows, chunk by chunk, in memory or with Dask.

A Gaussian LMM with independent errors depends on the data only through
cross-products of ``[Z X y]`` per level of the grouping factors. :class:`SuffStats`
computes them from a chunk of rows in one pass; statistics of chunks add up
(``a + b``, levels matched by value) in any order; :func:`lmm_from_stats` fits the
merged statistics with the engine of :func:`bayeslmm.lmm` and gives the same
estimates. :func:`lmm_dask` does the pass with Dask (``map_partitions`` and a tree
reduction) over a dask DataFrame or Parquet files; Dask is an optional dependency
(``pip install 'bayeslmm[dask]'``) imported only there.
"""

from ._dask import fitted_dask, lmm_dask, suff_stats_dask
from ._fit import StatsFit, StatsSpec, lmm_from_stats, stats_model_spec
from ._levels import LevelKeys
from ._schema import DesignSchema, chunk_levels, merge_levels
from ._stats import SuffStats, suff_stats

__all__ = ["DesignSchema", "LevelKeys", "StatsFit", "StatsSpec", "SuffStats", "chunk_levels", "fitted_dask",
           "lmm_dask", "lmm_from_stats", "merge_levels", "stats_model_spec", "suff_stats",
           "suff_stats_dask"]
