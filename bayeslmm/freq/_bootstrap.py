"""Parametric bootstrap: simulate from a fit, refit, collect; seedable and parallel over cores.

Every replicate ``i`` draws from its own generator, spawned from one
``numpy.random.SeedSequence(seed)``, so results do not depend on the number of
workers or the order in which they finish. Workers are forked processes that
inherit the fitted models (nothing is pickled) and run with one BLAS thread.
Ctrl-C raises ``KeyboardInterrupt`` in the caller at once; the workers ignore it
and are terminated with the pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

_STATE: dict[str, Any] = {}


def _tqdm() -> Any:
    """tqdm's notebook bar where Jupyter widgets are installed, else the text bar (``tqdm.auto``
    without ``ipywidgets`` warns in every notebook cell)."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm


def _init_worker() -> None:
    import signal

    from threadpoolctl import threadpool_limits

    # Ctrl-C in a terminal reaches every process of the group: the parent stops the pool (and
    # raises KeyboardInterrupt); a worker would only print its own traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1)


def _run_chunk(chunk: tuple[int, int]) -> tuple[int, list[Any]]:
    fn, seeds = _STATE["fn"], _STATE["seeds"]
    return chunk[0], [fn(np.random.default_rng(seeds[i])) for i in range(*chunk)]


def parallel_replicates(
    fn: Callable[[np.random.Generator], Any],
    n: int,
    seed: int | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
    desc: str = "bootstrap",
) -> list[Any]:
    """``[fn(rng_0), ..., fn(rng_{n-1})]`` computed over ``n_jobs`` processes with a progress bar.

    Parameters
    ----------
    fn
        One replicate, given its own ``numpy.random.Generator``.
    n
        Number of replicates.
    seed
        Seed of the ``SeedSequence`` the replicates' generators are spawned from.
    n_jobs
        Worker processes (default: all cores; 1 runs in this process).
    progress
        Show a tqdm progress bar.
    """
    tqdm = _tqdm()
    seeds = np.random.SeedSequence(seed).spawn(int(n))
    n_jobs = (os.cpu_count() or 1) if n_jobs is None else max(1, int(n_jobs))
    size = max(1, min(50, n // (4 * n_jobs) or 1))
    chunks = [(i, min(i + size, n)) for i in range(0, n, size)]
    out: list[Any] = [None] * n
    bar = tqdm(total=n, desc=desc, disable=not progress, leave=False)
    _STATE.update(fn=fn, seeds=seeds)
    try:
        if n_jobs == 1:
            for c in chunks:
                start, vals = _run_chunk(c)
                out[start : start + len(vals)] = vals
                bar.update(len(vals))
        else:
            import multiprocessing
            import warnings

            with warnings.catch_warnings():
                # Python 3.12 warns when a process with threads forks. The threads here are
                # OpenBLAS's, which re-initialises its pool in a forked child (pthread_atfork);
                # forking is what lets workers inherit the fits without pickling them.
                warnings.filterwarnings(
                    "ignore", message=".*use of fork\\(\\) may lead to deadlocks", category=DeprecationWarning
                )
                pool = multiprocessing.get_context("fork").Pool(n_jobs, initializer=_init_worker)
            with pool:
                for start, vals in pool.imap_unordered(_run_chunk, chunks):
                    out[start : start + len(vals)] = vals
                    bar.update(len(vals))
    finally:
        bar.close()
        _STATE.clear()
    return out


def _params(fit: Any) -> dict[str, float]:
    """Fixed effects, variance components (``grp|var1|var2``) and process parameters of a fit."""
    d = {f"fixef|{k}": float(v) for k, v in fit.fixef.items()}
    if hasattr(fit, "varcorr"):
        for r in fit.varcorr().itertuples(index=False):
            d["vcov|" + "|".join(x for x in (r.grp, r.var1, r.var2) if isinstance(x, str))] = float(r.vcov)
        rp = fit.residual_params()
        for k, v in rp.items():
            if k not in ("kind", "sigma2") and not isinstance(v, str):
                d[f"process|{k}"] = float(v)
    else:
        d["vcov|Residual"] = float(fit.sigma2)
    return d


class BootstrapResult:
    """Parametric bootstrap distribution of a fit's parameters.

    ``draws`` has one row per replicate and one column per parameter
    (``fixef|name``, ``vcov|grp|var1|var2``, ``process|name``).
    """

    def __init__(self, fit: Any, draws: pd.DataFrame, seed: int | None) -> None:
        self.fit = fit
        self.draws = draws
        self.seed = seed

    def intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals, beside the estimate and the bootstrap sd."""
        a = (1 - level) / 2
        est = pd.Series(_params(self.fit))
        q = self.draws.quantile([a, 1 - a]).T
        q.columns = [f"{100 * a:.1f}%", f"{100 * (1 - a):.1f}%"]
        return pd.concat([est.rename("estimate"), self.draws.std().rename("boot_sd"), q], axis=1)


def bootstrap(
    fit: Any, n: int = 1000, *, seed: int | None = None, n_jobs: int | None = None, progress: bool = True
) -> BootstrapResult:
    """Simulate ``n`` responses from ``fit``, refit each, and collect every parameter.

    Returns
    -------
    BootstrapResult (``.draws``, ``.intervals(level)``).
    """

    def one(rng: np.random.Generator) -> dict[str, float]:
        return _params(fit.refit(fit.simulate(1, seed=rng)[:, 0]))

    rows = parallel_replicates(one, n, seed=seed, n_jobs=n_jobs, progress=progress)
    return BootstrapResult(fit, pd.DataFrame(rows), seed)
