"""Serial-residual benchmark: OU-plus-nugget REML, bayeslmm at scale and against nlme.

What it measures
----------------
The model is ``y ~ t`` with residual ``ou(t | id)``: within each subject an
Ornstein-Uhlenbeck process in continuous time ``t`` plus an independent nugget,
fitted by REML. The data are simulated (fixed seed per size): N subjects x 10
irregular times (cumulative sums of Exp(1) gaps), ``y = 1 + 0.3 t + w + e`` with
``w`` an OU process of variance 1.5 and correlation 0.7 per unit of time and
``e ~ N(0, 0.5)`` (variance 0.5).

1. **Scale** (bayeslmm alone), N = 25,000, 50,000 and 100,000 subjects
   (250,000 to 1,000,000 rows). Each run is a fresh Python subprocess that
   imports bayeslmm, reads the cached data (an uncompressed ``.npz``: loading it
   is a plain copy of three arrays, faster than Parquet or CSV), calls
   ``bayeslmm.lmm("y ~ t", df, method="REML", residual="ou(t | id)")`` and
   reports (after a tiny warm-up fit in the same process, so that the lazy
   imports of the first ``lmm()`` call count in neither the times nor the
   memory below, only in the whole process):

   * **fit s**: the fit's ``fit_seconds`` (optimisation and convergence checks;
     excludes parsing the formula and building the design);
   * **lmm() s**: the whole ``lmm()`` call, timed inside the process;
   * **process s**: wall time of the subprocess (interpreter start, imports,
     loading the data, fitting), timed from outside;
   * **peak MB**: the subprocess's peak resident memory,
     ``getrusage(RUSAGE_SELF).ru_maxrss``; **fit MB**: that peak minus the
     resident memory just after the data were loaded, i.e. what the ``lmm()``
     call needs on top of the interpreter, libraries and data;
   * **/M rows** columns: fit seconds and fit MB divided by millions of rows.
     Constant values down the table mean time and memory grow linearly in N
     (the Kalman filter is linear in the number of rows); "Checks" flags a
     per-row cost at the largest N more than 1.5 x that at the smallest;
   * **evals** (objective evaluations: start search, BOBYQA, convergence
     checks) and the recovered parameters against the truth.

   Target: the 100,000-subject fit in under 10 s of fit time (MET/MISSED).

2. **Against nlme** at sizes nlme can finish (N = 200 and 1,000 subjects, same
   simulation), both tools reading the same CSV: the ``bayeslmm fit DATA.csv
   --formula "y ~ t" --residual "ou(t | id)" --json`` CLI, and ``Rscript`` with
   ``gls(y ~ t, correlation = corExp(form = ~ t | id, nugget = TRUE),
   method = "REML")``. nlme is run twice: with its default start (range = 90% of
   the smallest distance in the data, nugget 0.1), as a user would call it, and
   with a start value (range = the median within-subject gap, nugget 0.1).
   **fit s** is bayeslmm's ``fit_seconds`` or R's ``system.time(gls(...))``;
   **process s** the whole subprocess. nlme's parameters are mapped to
   bayeslmm's: ``rho = exp(-1/range)``, ``process_var = sigma^2 (1 - nug)``,
   ``nugget = sigma^2 nug``. Both report the REML log-likelihood on the same
   scale (nlme's, which the golden tests pin down), so equal logliks mean the
   same optimum; a difference > 1e-3 is flagged under "Checks" (usually: nlme
   stopped at a poor point). An nlme fit running past ``--nlme-timeout`` (120 s)
   is skipped with a note.

Times are medians over the runs with ``[min-max]`` when there was more than one
(``--quick``: one run each). Runs are sequential; a subprocess whose wall time
exceeded 1.3 x its CPU time waited for a CPU (a busy machine) and is flagged, as
is a run during which other processes kept more than a quarter of a CPU busy
(from ``/proc/stat``): the large fits use more than one core at times, so on a
small shared machine contention shows up as spread in the times.
Progress goes to stderr, the report to stdout; ``--json FILE`` also saves every
raw measurement. Generated data go to ``benchmarks/data/`` (git-ignored) and are
reused.

Usage::

    .venv/bin/python benchmarks/bench_serial.py [--quick] [--json FILE] [--nlme-timeout S] [--check]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"
SEED = 20240611
TIMES = 10
TRUTH = {"process_var": 1.5, "rho": 0.7, "nugget": 0.5, "b0": 1.0, "b1": 0.3}
SCALE_SIZES = (25_000, 50_000, 100_000)
NLME_SIZES = (200, 1_000)
FIT_TARGET_S = 10.0  # 100,000 subjects
LOGLIK_TOL = 1e-3
BUSY_RATIO = 1.3
OTHERS_MAX = 0.25  # CPUs kept busy by other processes during a run (from /proc/stat)
NONLINEAR = 1.5
PARAMS = ("process_var", "rho", "nugget", "b0", "b1")

# The scale worker: fresh interpreter, load the .npz, fit, report time and memory as one JSON line.
WORKER = r"""
import json, resource, sys, time
import numpy as np, pandas as pd
import bayeslmm

def rss_kb():
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:"))

# a tiny warm-up fit first: the lazy imports of the first lmm() call are not the fit's time or memory
rng = np.random.default_rng(0)
warm = pd.DataFrame({"id": np.repeat(np.arange(30), 5), "t": np.tile(np.arange(5.0), 30), "y": rng.normal(size=150)})
bayeslmm.lmm("y ~ t", warm, method="REML", residual="ou(t | id)")
t0 = time.perf_counter()
z = np.load(sys.argv[1])
df = pd.DataFrame({"id": z["id"], "t": z["t"], "y": z["y"]})
load_s = time.perf_counter() - t0
rss_loaded = rss_kb()
t0 = time.perf_counter()
f = bayeslmm.lmm("y ~ t", df, method="REML", residual="ou(t | id)")
lmm_s = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rp, fe = f.residual_params(), f.fixef
print("BENCH " + json.dumps({
    "fit": f.fit_seconds, "lmm": lmm_s, "load": load_s, "loglik": f.loglik, "n_evals": f.optimizer.n_evals,
    "converged": bool(f.converged), "peak_kb": peak, "rss_loaded_kb": rss_loaded,
    "process_var": rp["process_var"], "rho": rp["rho"], "nugget": rp["nugget"],
    "b0": float(fe["(Intercept)"]), "b1": float(fe["t"])}))
"""

# nlme: one gls fit; START is "" (nlme's default) or ", value = c(range, nugget)".
R_CODE = r"""
suppressMessages(library(nlme))
d <- read.csv("{csv}")
gap <- median(unlist(lapply(split(d$t, d$id), function(x) diff(sort(x)))))
st <- system.time(m <- gls(y ~ t, data = d, method = "REML",
                           correlation = corExp({start}form = ~ t | id, nugget = TRUE)))
cs <- coef(m$modelStruct$corStruct, unconstrained = FALSE)
s2 <- sigma(m)^2
cat(sprintf("BENCH %.10f %.6f %.12g %.12g %.12g %.12g %.12g %.12g\n", as.numeric(logLik(m)), st[["elapsed"]],
            s2 * (1 - cs[["nugget"]]), exp(-1 / cs[["range"]]), s2 * cs[["nugget"]], coef(m)[[1]], coef(m)[[2]],
            cs[["range"]]))
"""
R_START_GIVEN = "value = c(gap, 0.1), "


# --------------------------------------------------------------------------- data
def simulate(n_subj: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng([SEED, n_subj])
    gaps = rng.exponential(1.0, (n_subj, TIMES))
    t = np.cumsum(gaps, axis=1)
    r = TRUTH["rho"] ** gaps  # decay over each gap (the first observation is stationary)
    w = np.empty_like(t)
    w[:, 0] = rng.normal(0.0, math.sqrt(TRUTH["process_var"]), n_subj)
    eps = rng.normal(size=(n_subj, TIMES))
    for j in range(1, TIMES):
        w[:, j] = r[:, j] * w[:, j - 1] + np.sqrt(TRUTH["process_var"] * (1 - r[:, j] ** 2)) * eps[:, j]
    y = TRUTH["b0"] + TRUTH["b1"] * t + w + rng.normal(0.0, math.sqrt(TRUTH["nugget"]), t.shape)
    return {"id": np.repeat(np.arange(n_subj), TIMES), "t": t.ravel(), "y": y.ravel()}


def data_file(n_subj: int, ext: str) -> Path:
    path = DATA / f"serial_ou_{n_subj}x{TIMES}_seed{SEED}.{ext}"
    if not path.exists():
        import numpy as np
        import pandas as pd

        DATA.mkdir(parents=True, exist_ok=True)
        d = simulate(n_subj)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        if ext == "npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, **d)
        else:
            pd.DataFrame(d).to_csv(tmp, index=False)
        os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- subprocesses
def busy_cpu_seconds() -> float | None:
    """Non-idle CPU seconds of the whole machine since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run(argv: list[str], timeout: float) -> tuple[dict[str, float], str]:
    """Run argv; wall and CPU seconds, and the payload of its ``BENCH`` line (raises on failure)."""
    r0, b0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_seconds()
    t0 = time.perf_counter()
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    wall = time.perf_counter() - t0
    r1, b1 = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_seconds()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    others = max(0.0, (b1 - b0 - cpu) / wall) if b0 is not None and b1 is not None else None
    line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if cp.returncode != 0 or (line is None and not cp.stdout.lstrip().startswith("{")):
        err = [ln for ln in cp.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(err[-1][:200] if err else f"exit status {cp.returncode}")
    return {"wall": wall, "cpu": cpu, "others": others}, (line[6:] if line else cp.stdout)


def bayeslmm_worker(npz: Path) -> dict[str, Any]:
    m, out = run([sys.executable, "-c", WORKER, str(npz)], 600)
    return {**m, **json.loads(out)}


def bayeslmm_cli(csv: Path) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "bayeslmm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bayeslmm.cli"]
    m, out = run(
        [*cmd, "fit", str(csv), "--formula", "y ~ t", "--method", "REML", "--residual", "ou(t | id)", "--json"], 600
    )
    d = json.loads(out)
    rp = d["residual"]
    return {
        **m,
        "fit": d["fit_seconds"],
        "loglik": d["loglik"],
        "n_evals": d["optimizer"]["n_evals"],
        "converged": d["converged"],
        "process_var": rp["process_var"],
        "rho": rp["rho"],
        "nugget": rp["nugget"],
        "b0": d["fixef"]["(Intercept)"],
        "b1": d["fixef"]["t"],
    }


def nlme_fit(csv: Path, start: str, timeout: float) -> dict[str, Any]:
    code = R_CODE.replace("{csv}", str(csv)).replace("{start}", start)
    m, out = run(["Rscript", "-e", code], timeout)
    v = [float(x) for x in out.split()]
    return {**m, "loglik": v[0], "fit": v[1], **dict(zip(PARAMS, v[2:7], strict=True)), "range": v[7]}


def repeat(label: str, fn: Any, n: int) -> tuple[list[dict[str, Any]], str | None]:
    """n runs of fn(); the runs and, if it stopped, why."""
    runs = []
    for i in range(n):
        print(f"  {label} run {i + 1}/{n} ...", end="", flush=True, file=sys.stderr)
        try:
            r = fn()
        except subprocess.TimeoutExpired as e:
            print(" timed out", file=sys.stderr)
            return runs, f"skipped: still running after {e.timeout:.0f} s"
        except Exception as e:  # noqa: BLE001 - a failing tool is a result
            print(f" failed: {e}", file=sys.stderr)
            return runs, f"failed: {e}"
        print(f" {r['wall']:.2f} s (fit {r['fit']:.3f} s, loglik {r['loglik']:.4f})", file=sys.stderr)
        runs.append(r)
    return runs, None


# --------------------------------------------------------------------------- report
def med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def fmt_s(runs: list[dict[str, Any]], key: str) -> str:
    xs = [r[key] for r in runs]
    m = statistics.median(xs)
    f = (lambda v: f"{v:.3f}") if m < 10 else (lambda v: f"{v:.1f}")
    return f(m) if len(xs) == 1 else f"{f(m)} [{f(min(xs))}-{f(max(xs))}]"


def table(headers: list[str], rows: list[list[str]], right: int = 1) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cols: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i < right else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        ).rstrip()

    return [line(headers), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]


def busy(label: str, runs: list[dict[str, Any]]) -> list[str]:
    slow = [r for r in runs if r["wall"] >= 1.0 and r["wall"] > BUSY_RATIO * r["cpu"]]
    others = [r["others"] for r in runs if r.get("others") is not None and r["others"] > OTHERS_MAX]
    return (
        [
            f"{label}: {len(slow)} of {len(runs)} runs spent much longer on the clock than on the CPU "
            f"(wall {slow[0]['wall']:.1f} s, CPU {slow[0]['cpu']:.1f} s): the machine was busy"
        ]
        if slow
        else []
    ) + (
        [
            f"{label}: during {len(others)} of {len(runs)} runs other processes kept up to {max(others):.1f} CPUs "
            "busy: those timings may be inflated"
        ]
        if others
        else []
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one run per measurement instead of three")
    p.add_argument("--json", metavar="FILE", help="also write every raw measurement as JSON")
    p.add_argument("--nlme-timeout", type=float, default=120.0, help="seconds before an nlme fit is skipped")
    p.add_argument("--check", action="store_true", help="exit status 1 if the target is missed or a check fails")
    args = p.parse_args(argv)
    reps = 1 if args.quick else 3
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    problems: list[str] = []
    notes: list[str] = []
    git = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"], capture_output=True, text=True)
    dirty = (
        subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "bayeslmm"], capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()
    )

    # ---- 1. scale
    print("1. scale (bayeslmm)", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "import bayeslmm, pandas"], check=False)  # warm the file cache
    scale: dict[int, dict[str, Any]] = {}
    for n in SCALE_SIZES:
        npz = data_file(n, "npz")
        runs, why = repeat(f"[{n:,} subjects]", lambda npz=npz: bayeslmm_worker(npz), reps)
        scale[n] = {"data": str(npz.relative_to(REPO)), "runs": runs, "status": why}
        if why:
            problems.append(f"scale N={n:,}: bayeslmm {why}")
        problems += busy(f"scale N={n:,}", runs)
        problems += [f"scale N={n:,}: bayeslmm reports non-convergence" for r in runs[:1] if not r["converged"]]

    out = [
        f"bayeslmm serial-residual (OU + nugget) REML benchmark ({'quick' if args.quick else 'full'} run, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')})",
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}; load average at start {load0:.2f}; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}",
        f"bayeslmm: git {git.stdout.strip() or '?'}"
        + (f" + {len(dirty)} uncommitted file(s) in bayeslmm/ (working tree)" if dirty else ""),
        f"data: N subjects x {TIMES} times, t = cumsum(Exp(1) gaps), y = 1 + 0.3 t + OU(var 1.5, rho 0.7 per "
        "unit t) + N(0, 0.5); seed fixed per N",
        f"times: median seconds [min-max] over {reps} run(s)",
        "",
        "1. Scale: bayeslmm.lmm('y ~ t', df, method='REML', residual='ou(t | id)'), fresh subprocess per run "
        "reading a cached .npz",
        "",
    ]
    rows, prow, per_row = [], [], {}
    for n, s in scale.items():
        runs, mrows = s["runs"], n * TIMES / 1e6
        if not runs:
            rows.append([f"{n:,}", f"{n * TIMES:,}", s["status"]] + [""] * 8)
            continue
        peak = max(r["peak_kb"] for r in runs) / 1024
        fit_mb = max(r["peak_kb"] - r["rss_loaded_kb"] for r in runs) / 1024
        per_row[n] = (med(runs, "fit") / mrows, fit_mb / mrows)
        rows.append(
            [
                f"{n:,}",
                f"{n * TIMES:,}",
                fmt_s(runs, "fit"),
                fmt_s(runs, "lmm"),
                fmt_s(runs, "wall"),
                f"{per_row[n][0]:.2f}",
                f"{peak:.0f}",
                f"{fit_mb:.0f}",
                f"{per_row[n][1]:.0f}",
                str(runs[0]["n_evals"]),
                f"{runs[0]['loglik']:.3f}",
            ]
        )
        prow.append([f"{n:,}", *(f"{runs[0][k]:.4f}" for k in PARAMS), "yes" if runs[0]["converged"] else "NO"])
    out += table(
        [
            "subjects",
            "rows",
            "fit s",
            "lmm() s",
            "process s",
            "fit s/M rows",
            "peak MB",
            "fit MB",
            "fit MB/M rows",
            "evals",
            "REML loglik",
        ],
        rows,
        right=1,
    )
    out += ["", "   recovered parameters (truth: process_var 1.5, rho 0.7, nugget 0.5, (Intercept) 1, t 0.3)", ""]
    out += table(["subjects", "process_var", "rho", "nugget", "(Intercept)", "t", "converged"], prow)
    out += [
        "",
        "   peak MB = ru_maxrss of the fitting process; fit MB = peak minus the RSS right after loading the data",
        "   (the memory the lmm() call itself needs); /M rows = divided by millions of rows.",
    ]
    lo, hi = min(per_row, default=None), max(per_row, default=None)
    if lo is not None and hi != lo:
        for i, what in ((0, "fit time"), (1, "fit memory")):
            ratio = per_row[hi][i] / per_row[lo][i] if per_row[lo][i] > 0 else float("nan")
            if not ratio <= NONLINEAR:
                problems.append(
                    f"scale: {what} per row at {hi:,} subjects is {ratio:.2f} x that at {lo:,} (not linear in N)"
                )
            notes.append(f"{what} per row, {hi:,} vs {lo:,} subjects: {ratio:.2f} x (1.00 = linear)")
        dm = (hi - lo) * TIMES / 1e6  # marginal cost: what each extra million rows adds
        notes.append(
            f"marginal cost between {lo:,} and {hi:,} subjects: "
            f"{(per_row[hi][0] * hi - per_row[lo][0] * lo) * TIMES / 1e6 / dm:.2f} s and "
            f"{(per_row[hi][1] * hi - per_row[lo][1] * lo) * TIMES / 1e6 / dm:.0f} MB per extra M rows"
        )

    # ---- 2. nlme
    print("2. against nlme", file=sys.stderr)
    has_r = shutil.which("Rscript") is not None
    if has_r:
        try:
            _, ver = run(
                [
                    "Rscript",
                    "-e",
                    'cat("BENCH", as.character(packageVersion("nlme")), R.version$major, R.version$minor, "\\n")',
                ],
                120,
            )
            nlme_ver = "nlme {} (R {}.{})".format(*ver.split())
        except Exception:  # noqa: BLE001
            has_r, nlme_ver = False, "not installed"
    else:
        nlme_ver = "not installed (no Rscript)"
    tools = {"bayeslmm": "bayeslmm CLI", "nlme": "nlme, default start", "nlme_start": "nlme, start given"}
    cmp: dict[int, dict[str, Any]] = {}
    for n in NLME_SIZES:
        csv = data_file(n, "csv")
        res: dict[str, Any] = {}
        for key in tools:
            if key != "bayeslmm" and not has_r:
                res[key] = {"runs": [], "status": nlme_ver}
                continue
            fn = (
                (lambda csv=csv: bayeslmm_cli(csv))
                if key == "bayeslmm"
                else (
                    lambda csv=csv, key=key: nlme_fit(
                        csv, R_START_GIVEN if key == "nlme_start" else "", args.nlme_timeout
                    )
                )
            )
            runs, why = repeat(f"[{n:,} subjects] {tools[key]:<20}", fn, reps)
            res[key] = {"runs": runs, "status": why}
            if why:
                notes.append(f"N={n:,}: {tools[key]}: {why}")
            problems += busy(f"N={n:,} {tools[key]}", runs)
        cmp[n] = {"data": str(csv.relative_to(REPO)), "results": res}
        b = res["bayeslmm"]["runs"]
        for key in ("nlme", "nlme_start"):
            r = res[key]["runs"]
            if b and r and abs(b[0]["loglik"] - r[0]["loglik"]) > LOGLIK_TOL:
                lower = "nlme" if r[0]["loglik"] < b[0]["loglik"] else "bayeslmm"
                problems.append(
                    f"N={n:,}: {tools[key]} loglik {r[0]['loglik']:.4f} vs bayeslmm "
                    f"{b[0]['loglik']:.4f} (diff {r[0]['loglik'] - b[0]['loglik']:+.4g}): {lower} "
                    "stopped short of the optimum" + (f" (nlme's range {r[0]['range']:.3g})" if lower == "nlme" else "")
                )

    out += [
        "",
        f"2. Against {nlme_ver}: gls(y ~ t, correlation = corExp(form = ~ t | id, nugget = TRUE), method = 'REML')",
        "   vs `bayeslmm fit DATA.csv --formula 'y ~ t' --residual 'ou(t | id)' --json`; "
        "nlme's parameters mapped (rho = exp(-1/range), process_var = sigma^2 (1 - nug), nugget = sigma^2 nug)",
        "",
    ]
    rows = []
    for n, c in cmp.items():
        R = c["results"]
        b = R["bayeslmm"]["runs"]

        def cells(get: Any, R: dict[str, Any] = R) -> list[str]:
            return [get(R[k]["runs"]) if R[k]["runs"] else (R[k]["status"] or "-") for k in tools]

        first = f"{n:,} subjects ({n * TIMES:,} rows)"
        rows.append([first, "process s", *cells(lambda r: fmt_s(r, "wall"))])
        rows.append(["", "fit s", *cells(lambda r: fmt_s(r, "fit"))])
        rows.append(["", "REML loglik", *cells(lambda r: f"{r[0]['loglik']:.4f}")])
        rows.append(
            ["", "loglik - bayeslmm's", *cells(lambda r, b=b: f"{r[0]['loglik'] - b[0]['loglik']:+.2e}" if b else "-")]
        )
        for k, name in zip(PARAMS, ("process_var", "rho", "nugget", "(Intercept)", "t"), strict=True):
            rows.append(["", name, *cells(lambda r, k=k: f"{r[0][k]:.6f}")])
        rows.append(["", "", "", "", ""])
    out += table(["size", "measure", *tools.values()], rows[:-1], right=2)
    out += [
        "",
        "   nlme default start: range = 0.9 x the smallest distance in the data, nugget 0.1; "
        "start given: range = median within-subject gap, nugget 0.1.",
        "   fit s: bayeslmm's fit_seconds / R's system.time(gls(...)); process s: the whole subprocess.",
    ]

    # ---- targets and checks
    big = scale.get(max(SCALE_SIZES), {}).get("runs")
    met = med(big, "fit") < FIT_TARGET_S if big else None
    out += [
        "",
        "Target",
        f"  [{ {True: 'MET', False: 'MISSED', None: 'n/a'}[met]:^6}] {max(SCALE_SIZES):,}-subject "
        f"OU + nugget REML fit < {FIT_TARGET_S:g} s: "
        + (f"{med(big, 'fit'):.2f} s fit ({med(big, 'wall'):.2f} s whole process)" if big else "not measured"),
    ]
    out += ["", "Checks"] + (
        [f"  ! {x}" for x in problems]
        or [
            f"  logliks agree within {LOGLIK_TOL:g}, all fits converged, time and memory linear "
            f"in N (within {NONLINEAR} x)"
        ]
    )
    out += [f"  - {x}" for x in notes]
    out.append(f"\n(benchmark took {time.perf_counter() - t_start:.0f} s)")
    print("\n".join(out))

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "loadavg_at_start": load0,
                    "nlme": nlme_ver,
                    "truth": TRUTH,
                    "seed": SEED,
                    "scale": {str(k): v for k, v in scale.items()},
                    "nlme_comparison": {str(k): v for k, v in cmp.items()},
                    "target": {"fit_s_100k": med(big, "fit") if big else None, "met": met},
                    "problems": problems,
                    "notes": notes,
                },
                indent=2,
            )
        )
    return 1 if args.check and (problems or met is False) else 0


if __name__ == "__main__":
    sys.exit(main())
