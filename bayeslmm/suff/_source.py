"""Where an out-of-core fit reads its rows, and on which Dask scheduler it runs.

These functions turn the ``DATA`` and ``--scheduler`` values of ``bayeslmm fit`` into an
out-of-core fit; their messages name those options. :func:`out_of_core_source` decides
whether the data are read out of core (a directory, glob or list of Parquet files, a URL, or
Parquet data with a scheduler) and checks that they are Parquet; :func:`dask_scheduler` sets up
a local scheduler or connects to a distributed one; :func:`fit_out_of_core` runs
:func:`~bayeslmm.suff.lmm_dask` there and reports what it did. Dask is imported only inside
the functions that use it, with an install hint when it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from .._errors import DataError, OptionError
from .._io import has_glob, is_parquet
from ..freq import LMMFit
from ._dask import lmm_dask

#: scheduler names that select one of Dask's local schedulers rather than an address
LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")
#: what fitted values and residuals out of core need (the ``note`` of :func:`fit_out_of_core`'s report)
OUT_OF_CORE_NOTE = (
    "fitted values and residuals (and the scaled-residual quantiles of the summary) need a second "
    "pass over the rows and were not computed: use bayeslmm.suff.fitted_dask"
)
_INSTALL_DASK = "install with pip install 'bayeslmm[dask]'"


def out_of_core_source(paths: Sequence[str], scheduler: str | None = None) -> str | list[str] | None:
    """What a fit reads out of core with Dask, or None to read ``paths[0]`` into memory.

    Out of core: a directory of Parquet files, a glob (matched here, in sorted order), several
    Parquet files (a glob the shell expanded), a URL, or any Parquet file when ``scheduler``
    is given.

    Parameters
    ----------
    paths
        The ``DATA`` arguments: one or more paths, a glob, a URL or a bundled dataset name.
    scheduler
        The ``--scheduler`` value, or None.

    Returns
    -------
    The path, URL or list of files for :func:`fit_out_of_core`; or None: read ``paths[0]``
    into memory, also when it names neither a file nor a bundled dataset (the in-memory
    reader says so).

    Raises
    ------
    DataError
        For a glob that matches nothing, a directory without Parquet files, or data that
        is not Parquet where Parquet is needed.
    """
    from .. import datasets

    if len(paths) > 1:
        for p in paths:
            if not os.path.isfile(p) or not is_parquet(p):
                what = "not found" if not os.path.exists(p) else "not a Parquet file (*.parquet, *.pq)"
                raise DataError(f"several DATA paths are read out of core as Parquet files, but {p!r} is {what}")
        return list(paths)
    src = paths[0]
    if "://" in src:  # a URL (s3://, gs://, file://): Dask and fsspec read it
        return src
    if os.path.isdir(src):
        if not any(is_parquet(f) for _, _, files in os.walk(src) for f in files):
            raise DataError(
                f"{src!r} is a directory without Parquet files (*.parquet, *.pq); give a CSV or Parquet "
                "file, or a directory or glob of Parquet files"
            )
        return src
    if not os.path.exists(src) and has_glob(src):
        matches = sorted(glob.glob(src, recursive=True))
        if not matches:
            raise DataError(
                f"no file matches {src!r}; give a directory or glob of Parquet files, e.g. "
                "'data/*.parquet' (quoted, or let the shell expand it)"
            )
        bad = [m for m in matches if not (os.path.isfile(m) and is_parquet(m))]
        if bad:
            raise DataError(
                f"{src!r} matches {bad[0]!r}, which is not a Parquet file (*.parquet, *.pq); a glob "
                "must match Parquet files only"
            )
        return matches
    if scheduler is None:
        return None
    if os.path.isfile(src) and is_parquet(src):
        return src
    if not os.path.exists(src) and src not in datasets.names():
        return None
    raise DataError(
        f"--scheduler fits Parquet data out of core (a file, a directory or a glob) and {src!r} is not "
        "Parquet: drop --scheduler to fit it in memory, or write it to Parquet first"
    )


def _check_dask(distributed: bool) -> None:
    mods = ("dask", "dask.dataframe", "pyarrow") + (("distributed",) if distributed else ())
    for mod in mods:
        try:
            __import__(mod)
        except ImportError:
            raise OptionError(
                f"an out-of-core fit (a Parquet directory or glob, or --scheduler) needs Dask, which is "
                f"not installed ({mod} is missing): {_INSTALL_DASK}"
            ) from None


@contextlib.contextmanager
def dask_scheduler(value: str | None, timeout: float = 5.0) -> Iterator[Any]:
    """The ``distributed.Client`` of a scheduler address (closed on exit), or None with a local scheduler set.

    Parameters
    ----------
    value
        ``None`` keeps Dask's default (its threaded scheduler); ``threads``, ``processes`` and
        ``synchronous`` select that local scheduler (:data:`LOCAL_SCHEDULERS`); anything else is
        the address of a distributed scheduler, such as ``tcp://127.0.0.1:8786``.
    timeout
        Seconds to wait for a distributed scheduler.

    Raises
    ------
    OptionError
        For a value that is neither a local scheduler nor an address, or missing Dask.
    DataError
        When the scheduler cannot be reached within ``timeout`` seconds.
    """
    if value is None:
        _check_dask(distributed=False)
        yield None
        return
    if value.lower() in LOCAL_SCHEDULERS:
        _check_dask(distributed=False)
        import dask

        if value.lower() == "processes":  # a pool that ends at once on Ctrl-C, its workers deaf to it
            with _process_pool(dask) as pool, dask.config.set(scheduler="processes", pool=pool):
                yield None
            return
        with dask.config.set(scheduler=value.lower()):
            yield None
        return
    if "://" not in value and not re.fullmatch(r"[\w.\-]+:\d+", value):
        raise OptionError(
            f"--scheduler must be {', '.join(LOCAL_SCHEDULERS)} or a Dask scheduler address such as "
            f"tcp://127.0.0.1:8786, got {value!r}"
        )
    _check_dask(distributed=True)
    from distributed import Client

    try:
        client = Client(value, timeout=timeout, set_as_default=False)
    except ValueError as e:  # an unknown address scheme
        raise OptionError(f"--scheduler {value!r}: {str(e).splitlines()[0]}") from None
    except (OSError, TimeoutError) as e:
        raise DataError(
            f"cannot reach the Dask scheduler at {value!r} within {timeout:g} s "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); start one with 'dask scheduler' "
            "and workers with 'dask worker ADDRESS', or use --scheduler threads"
        ) from None
    try:
        yield client
    finally:
        client.close()


def _process_pool(dask: Any) -> Any:
    """The worker pool of the ``processes`` scheduler: what Dask would start, as a ``multiprocessing.Pool``.

    Dask's own pool (a ``ProcessPoolExecutor`` shut down with ``wait=True``) finishes its running
    tasks before a Ctrl-C takes effect, and its workers, started on demand, print a traceback when
    the terminal's Ctrl-C reaches them. This pool starts its workers at once with SIGINT ignored,
    and leaving the ``with`` block terminates them.
    """
    from dask.multiprocessing import get_context, initialize_worker_process

    from .._interrupt import ignoring_sigint

    if os.environ.get("PYTHONHASHSEED") in (None, "0"):  # as Dask does: one string hash in every worker
        os.environ["PYTHONHASHSEED"] = "6640"
    n = int(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    with ignoring_sigint():
        return get_context().Pool(n, initializer=initialize_worker_process)


def fit_out_of_core(
    formula: str, source: str | list[str], method: str = "REML", *, scheduler: str | None = None, timeout: float = 5.0
) -> tuple[LMMFit, dict[str, Any]]:
    """Fit by REML or ML out of core (:func:`~bayeslmm.suff.lmm_dask`) on the scheduler named by ``scheduler``.

    Parameters
    ----------
    formula
        lme4 syntax (independent errors).
    source
        What :func:`out_of_core_source` returned: a Parquet path, glob match list or URL.
    method
        ``"REML"`` or ``"ML"``.
    scheduler, timeout
        As in :func:`dask_scheduler`.

    Returns
    -------
    The fit, and a report of the run: ``engine`` (``"dask"``), ``scheduler`` (the local
    scheduler's name or the distributed scheduler's address), ``npartitions``, the seconds
    ``levels_s``, ``pass_s`` and ``fit_s`` of the two passes and the fit, and ``note``
    (:data:`OUT_OF_CORE_NOTE`).

    Raises
    ------
    DataError
        For data that cannot be read or fitted (on one line), or an unreachable scheduler.
    OptionError
        For a bad ``scheduler`` or ``method``, or missing Dask.
    """
    with dask_scheduler(scheduler, timeout) as client:
        try:
            fit = lmm_dask(formula, source, method, client=client)
        except DataError as e:  # messages from Parquet readers can span lines: one line
            msg = str(e)
            if "\n" not in msg:
                raise
            raise DataError(" ".join(msg.split())) from None
        if client is not None:
            used = client.scheduler.address
        else:
            import dask

            used = dask.config.get("scheduler", None) or "threads"
    t = fit.timings
    info = {
        "engine": "dask",
        "scheduler": str(used),
        "npartitions": int(t.get("npartitions", 0)),
        "levels_s": t.get("levels_s"),
        "pass_s": t.get("pass_s"),
        "fit_s": t.get("fit_s"),
        "note": OUT_OF_CORE_NOTE,
    }
    return fit, info
