"""Scale benchmark: REML from sufficient statistics, in memory and through Dask from Parquet.

What it measures
----------------
The model is a correlated random intercept and slope, ``y ~ x + (1 + x | g)``, fitted by
REML on simulated data (fixed seed): ``g`` uniform over G groups (1,000,000 by default),
``x ~ N(0, 1)``, ``y = 1 + 2 x + b0_g + b1_g x + e`` with ``sd(b0) = 1``, ``sd(b1) = 0.5``,
``corr = 0.3``, ``sd(e) = 1``.

1. **in memory**: N = 10 million rows in a pandas frame; ``bayeslmm.suff.suff_stats``
   (one pass, 1M-row chunks) then ``lmm_from_stats``. Columns: the pass over the rows,
   the optimisation (BOBYQA and its convergence checks, ``optimizer.seconds``), assembling
   the blocks and the estimates (the rest of ``fit_seconds``), the total, objective
   evaluations and the time per evaluation. **Target**: total under 30 s.
   ``--with-lmm`` also times ``bayeslmm.lmm`` on the same frame.
2. **Dask from Parquet**: one Parquet dataset of ``max(--sizes)`` rows written once in
   files of ``--rows-per-file`` rows to ``--data-dir`` (reused when present); each size
   fits the first ``size / rows-per-file`` files with ``bayeslmm.suff.lmm_dask`` (every
   file holds rows of (almost) every group: the worst case for the reduction). Scheduler:
   Dask's local threaded scheduler with 2 threads (``threads``) and/or a
   ``distributed.LocalCluster`` of 2 single-threaded worker processes (``distributed``).
   Columns: the pass (read + statistics + tree reduction), the fit on the reduced
   blocks, the total, microseconds per row of the pass, and the peak resident memory of
   the whole process tree (sampled every 0.1 s with psutil; workers included).
   **Target**: peak memory under 4 GiB and time per row roughly constant.

Every measurement runs in a fresh subprocess, so peak memory is that measurement's alone;
the in-memory peak includes the 10M-row frame itself (about 240 MB) and its generation.

Usage::

    .venv/bin/python benchmarks/bench_scale.py                      # in memory + Dask 10M..100M
    .venv/bin/python benchmarks/bench_scale.py --sizes 10,50,100,200 --scheduler both
    .venv/bin/python benchmarks/bench_scale.py --quick              # 1M rows, 100k groups: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

FORMULA = "y ~ x + (1 + x | g)"
TRUTH = {"sd0": 1.0, "sd1": 0.5, "corr": 0.3, "sigma": 1.0}
GIB = 1024**3


def _effects(groups: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = TRUTH["corr"] * TRUTH["sd0"] * TRUTH["sd1"]
    L = np.linalg.cholesky(np.array([[TRUTH["sd0"] ** 2, c], [c, TRUTH["sd1"] ** 2]]))
    return rng.standard_normal((groups, 2)) @ L.T


def _rows(n: int, b: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, b.shape[0], n).astype(np.int32)
    x = rng.standard_normal(n)
    y = 1.0 + 2.0 * x + b[g, 0] + b[g, 1] * x + TRUTH["sigma"] * rng.standard_normal(n)
    return {"y": y, "x": x, "g": g}


def _recovered(fit) -> dict[str, float]:
    vc = fit.varcorr()
    return {
        "sd0": float(vc.sdcor[0]),
        "sd1": float(vc.sdcor[1]),
        "corr": float(vc.sdcor[2]),
        "sigma": float(fit.sigma),
        "loglik": float(fit.loglik),
        "converged": bool(fit.converged),
    }


# ----------------------------------------------------------------- workers (subprocesses)
def worker_inmem(args: argparse.Namespace) -> dict:
    import pandas as pd

    from bayeslmm.suff import lmm_from_stats, suff_stats

    df = pd.DataFrame(_rows(args.n, _effects(args.groups, 1), 2))
    rss_data = _rss_self()
    t0 = time.perf_counter()
    stats = suff_stats(FORMULA, df, chunk_rows=1_000_000)
    t1 = time.perf_counter()
    fit = lmm_from_stats(stats)
    t2 = time.perf_counter()
    out = {
        "pass_s": t1 - t0,
        "opt_s": fit.optimizer.seconds,
        "assemble_s": (t2 - t1) - fit.optimizer.seconds,
        "total_s": t2 - t0,
        "evals": fit.optimizer.n_evals,
        "rss_after_data_gib": rss_data / GIB,
        **_recovered(fit),
    }
    out["maxrss_suff_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    if args.with_lmm:
        import bayeslmm

        del stats, fit
        t3 = time.perf_counter()
        ref = bayeslmm.lmm(FORMULA, df)
        out["lmm_s"] = time.perf_counter() - t3
        out["lmm_fit_seconds"] = ref.fit_seconds
        out["lmm_loglik"] = float(ref.loglik)
    out["ru_maxrss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return out


def worker_dask(args: argparse.Namespace) -> dict:
    import dask

    from bayeslmm.suff import lmm_dask

    files = sorted(Path(args.data_dir).glob("part-*.parquet"))[: args.nfiles]
    paths = [str(f) for f in files]
    if args.scheduler == "distributed":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=0
            ) as cluster,
            Client(cluster) as client,
        ):
            t0 = time.perf_counter()
            fit = lmm_dask(FORMULA, paths, client=client, split_every=args.split_every)
            total = time.perf_counter() - t0
    else:
        with dask.config.set(scheduler="threads", num_workers=2):
            t0 = time.perf_counter()
            fit = lmm_dask(FORMULA, paths, split_every=args.split_every)
            total = time.perf_counter() - t0
    tm = fit.timings
    return {
        "pass_s": tm["pass_s"] + tm["levels_s"],
        "fit_s": tm["fit_s"],
        "total_s": total,
        "npartitions": int(tm["npartitions"]),
        "evals": fit.optimizer.n_evals,
        "nobs": fit.nobs,
        "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        **_recovered(fit),
    }


def _rss_self() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# ------------------------------------------------------------------------ driver
def run_measured(cmd: list[str]) -> dict:
    """Run a worker subprocess; sample the RSS of its whole process tree every 0.1 s."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                total = 0
                for q in [p, *p.children(recursive=True)]:
                    try:
                        total += q.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
                time.sleep(0.1)
        except psutil.Error:
            pass

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {' '.join(cmd)}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_tree_gib"] = peak[0] / GIB
    return res


def write_parquet(data_dir: Path, total_rows: int, rows_per_file: int, groups: int) -> float:
    """Write (or reuse) the Parquet dataset; returns the seconds spent writing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir.mkdir(parents=True, exist_ok=True)
    meta = data_dir / "dataset.json"
    want = {"rows_per_file": rows_per_file, "groups": groups, "seed": 1}
    have = json.loads(meta.read_text()) if meta.exists() else {}
    nfiles = total_rows // rows_per_file
    existing = sorted(data_dir.glob("part-*.parquet"))
    if {k: have.get(k) for k in want} != want:
        for f in existing:
            f.unlink()
        existing = []
    t0 = time.perf_counter()
    b = _effects(groups, 1)
    for i in range(len(existing), nfiles):
        tab = pa.table(_rows(rows_per_file, b, 1000 + i))
        pq.write_table(tab, data_dir / f"part-{i:05d}.parquet", row_group_size=rows_per_file)
        print(f"  wrote file {i + 1}/{nfiles}", file=sys.stderr, end="\r")
    meta.write_text(json.dumps(want))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=["inmem", "dask"])
    ap.add_argument("--n", type=int, default=10_000_000, help="rows of the in-memory fit")
    ap.add_argument("--groups", type=int, default=1_000_000)
    ap.add_argument("--sizes", default="10,50,100", help="Dask sizes in millions of rows")
    ap.add_argument("--rows-per-file", type=int, default=2_000_000)
    ap.add_argument("--data-dir", default="/tmp/bayeslmm_bench")
    ap.add_argument("--scheduler", choices=["threads", "distributed", "both"], default="threads")
    ap.add_argument("--split-every", type=int, default=4)
    ap.add_argument("--nfiles", type=int, default=0)
    ap.add_argument("--with-lmm", action="store_true", help="also time bayeslmm.lmm on the in-memory frame")
    ap.add_argument("--skip-inmem", action="store_true")
    ap.add_argument("--skip-dask", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1M rows in memory, Dask 1M and 2M rows, 100k groups")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    if args.worker:
        res = worker_inmem(args) if args.worker == "inmem" else worker_dask(args)
        print(json.dumps(res))
        return
    if args.quick:
        args.n, args.groups, args.sizes, args.rows_per_file = 1_000_000, 100_000, "1,2", 500_000
        args.data_dir = str(Path(args.data_dir) / "quick")
    sizes = [int(float(s) * 1_000_000) for s in args.sizes.split(",")]
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--groups", str(args.groups), "--data-dir", args.data_dir, "--split-every", str(args.split_every)]
    results: dict = {"groups": args.groups, "cpus": os.cpu_count(), "load_at_start": os.getloadavg()}
    print(
        f"bayeslmm scale benchmark: {FORMULA}, REML, {args.groups:,} groups; {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    if not args.skip_inmem:
        print(f"\n1. in memory, {args.n:,} rows (suff_stats + lmm_from_stats)", flush=True)
        r = run_measured(
            [*me, "--worker", "inmem", "--n", str(args.n), *common] + (["--with-lmm"] if args.with_lmm else [])
        )
        results["inmem"] = r
        print(f"  pass over the rows   {r['pass_s']:7.2f} s")
        print(
            f"  optimisation         {r['opt_s']:7.2f} s  ({r['evals']} evaluations, "
            f"{1000 * r['opt_s'] / r['evals']:.0f} ms each)"
        )
        print(f"  blocks + estimates   {r['assemble_s']:7.2f} s")
        met = "MET" if r["total_s"] < 30 else "MISSED"
        print(f"  total                {r['total_s']:7.2f} s   target < 30 s: {met}")
        print(
            f"  peak memory          {r['maxrss_suff_gib']:7.2f} GiB (process peak before any bayeslmm.lmm; "
            f"{r['rss_after_data_gib']:.2f} GiB resident after generating the frame)"
        )
        if "lmm_s" in r:
            print(
                f"  bayeslmm.lmm         {r['lmm_s']:7.2f} s (fit_seconds {r['lmm_fit_seconds']:.2f}; peak memory "
                f"with it {r['peak_tree_gib']:.2f} GiB), loglik difference {r['loglik'] - r['lmm_loglik']:.2e}"
            )
        print(
            f"  recovered: sd0 {r['sd0']:.4f}, sd1 {r['sd1']:.4f}, corr {r['corr']:.4f}, sigma {r['sigma']:.4f} "
            f"(truth 1, 0.5, 0.3, 1); converged {r['converged']}"
        )
    if not args.skip_dask:
        wrote = write_parquet(Path(args.data_dir), max(sizes), args.rows_per_file, args.groups)
        results["parquet_write_s"] = wrote
        print(f"\n2. Dask from Parquet ({args.rows_per_file:,} rows per file; writing took {wrote:.1f} s)")
        scheds = ["threads", "distributed"] if args.scheduler == "both" else [args.scheduler]
        header = (
            f"  {'rows':>12} {'scheduler':>11} {'files':>5} {'pass s':>8} {'fit s':>7} {'total s':>8} "
            f"{'us/row':>7} {'peak GiB':>9} {'evals':>5}  recovered sd0/sd1/corr/sigma"
        )
        print(header)
        results["dask"] = []
        for n in sizes:
            for sch in scheds:
                nfiles = n // args.rows_per_file
                r = run_measured([*me, "--worker", "dask", "--nfiles", str(nfiles), "--scheduler", sch, *common])
                r.update(rows=n, scheduler=sch)
                results["dask"].append(r)
                print(
                    f"  {n:>12,} {sch:>11} {nfiles:>5} {r['pass_s']:8.1f} {r['fit_s']:7.1f} {r['total_s']:8.1f} "
                    f"{1e6 * r['pass_s'] / n:7.2f} {r['peak_tree_gib']:9.2f} {r['evals']:>5}  "
                    f"{r['sd0']:.4f}/{r['sd1']:.4f}/{r['corr']:.4f}/{r['sigma']:.4f}",
                    flush=True,
                )
        peaks = [r["peak_tree_gib"] for r in results["dask"]]
        print(f"  target peak < 4 GiB: {'MET' if max(peaks) < 4 else 'MISSED'} (largest {max(peaks):.2f} GiB)")
        for sch in scheds:
            rs = [r for r in results["dask"] if r["scheduler"] == sch]
            if len(rs) > 1:
                per = [r["pass_s"] / r["rows"] for r in rs]
                print(f"  {sch}: pass time per row, largest / smallest size: {per[-1] / per[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
