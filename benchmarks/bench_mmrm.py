"""MMRM benchmark: an unstructured residual covariance over visits, bayeslmm against nlme and glmmTMB.

The model is mmrm's BCVA-sized MMRM (1,000 subjects x 10 visits, about 15% of the visits missing),
``y ~ arm * visit + base`` with ``Sigma`` unstructured over the visits of a subject (55 covariance
parameters, no random effects), fitted by REML with three tools on the same CSV:

(a) **bayeslmm** ``bayeslmm.lmm("y ~ arm * visit + base", df, residual="us(visit | id)")``: analytic-gradient
    L-BFGS-B; in this process, one untimed warm-up fit, then ``--reps`` (3) timed fits, the median
    reported; ``evals`` counts the objective evaluations (start candidates included). BLAS is limited
    to **one thread** with threadpoolctl (``threadpool_limits(1, "blas")``) for the whole run, as R's
    below.
(b) **nlme** ``gls(y ~ arm * visit + base, correlation = corSymm(form = ~ k | id), weights = varIdent(form
    = ~ 1 | visit), method = "REML")`` and (c) **glmmTMB** ``glmmTMB(y ~ arm * visit + base + us(0 + visit
    | id), dispformula = ~ 0, REML = TRUE)``, both by ``Rscript benchmarks/mmrm_peers.R DATA.csv``,
    which times the fitting call alone (``system.time``, not R's start-up or reading the CSV), runs each
    tool once, and forces one BLAS/OpenMP thread (``OPENBLAS_NUM_THREADS`` etc. = 1, TMB's OpenMP 1).

The table: **seconds** (bayeslmm: the whole ``lmm()`` call, formula to fitted object; R: the fitting
call), **REML log-lik** (the same scale in all three, so equal values mean the same optimum),
**converged** (bayeslmm: the optimiser's convergence checks; nlme: no error; glmmTMB: nlminb's code 0
and a positive definite Hessian) and **bayeslmm speed-up** (the tool's seconds over bayeslmm's).
glmmTMB's ``dispformula = ~ 0`` fixes a tiny residual variance, which leaves its inner problem badly
conditioned: its log-likelihood is accurate to about 1e-4 and nlminb often reports "false convergence"
(see ``benchmarks/mmrm_peers.R``).

The data are simulated (``--seed``, default 1): subjects ``S0001...`` randomised 1:1 to ``placebo`` and
``active``; visits ``V01...V10`` (zero-padded, so that the code-point order is the visit order in both
languages); ``base ~ N(50, 8^2)``; ``y = 20 + 0.6 base + mu_j + [active] eff_j + e``, ``mu_j = -0.5 j``,
``eff_j = -0.3 j``; ``e`` normal with an unstructured ``Sigma`` (sds 3 to 5.7 rising over the visits,
correlations ``0.2 + 0.7 * 0.85^|j-k|`` perturbed per pair, so neither Toeplitz nor AR(1)); each
visit is missing independently with probability ``--missing`` (0.15), every subject keeping at least
one visit. The CSV goes to ``benchmarks/data/`` (git-ignored).

Usage::

    .venv/bin/python benchmarks/bench_mmrm.py                      # 1,000 subjects, all three tools
    .venv/bin/python benchmarks/bench_mmrm.py --skip-nlme          # nlme needs minutes at 1,000 subjects
    .venv/bin/python benchmarks/bench_mmrm.py --subjects 200       # a quick run
    options: --visits 10 --missing 0.15 --seed 1 --reps 3 --skip-glmmtmb --rscript PATH --json FILE

Measured on 2026-12-08 on this machine: 2 cores (load average 0.7 to 1.0 during the 1,000-subject run,
so the machine was lightly busy; R's runs are single and noisy: nlme took 44 s and 58 s in two runs at
200 subjects). bayeslmm git d9f6170 (L-BFGS-B stopped when stalled, Newton steps with the one Hessian
of the convergence check), Python 3.12, numpy 2.5; R 4.2.2, nlme 3.1.162, glmmTMB 1.1.5, TMB 1.9.2; one
BLAS/OpenMP thread everywhere::

    1000 subjects x 10 visits, 8443 rows (15.6% missing), 55 covariance parameters (load 0.7 -> 1.0)
    tool                   | seconds | REML log-lik | converged | bayeslmm speed-up | evals/iter
    -----------------------+---------+--------------+-----------+-------------------+-----------
    bayeslmm (median of 3) |    0.99 |  -19623.4514 |      true |       (reference) |        111
    nlme                   |  310.11 |  -19623.4514 |      true |            312.1x |          -
    glmmTMB                |   15.53 |  -19623.4583 |     false |             15.6x |        160

    (bayeslmm's three fits 1.20, 0.99, 0.89 s; at git 374ce18, before the stall test, 1.70 s and 178
    evaluations.)

    200 subjects x 10 visits, 1677 rows (16.1% missing) (load 0.5 -> 2.1; git 374ce18)
    tool                   | seconds | REML log-lik | converged | bayeslmm speed-up | evals/iter
    -----------------------+---------+--------------+-----------+-------------------+-----------
    bayeslmm (median of 3) |    0.44 |   -3900.7141 |      true |       (reference) |        189
    nlme                   |   58.14 |   -3900.7141 |      true |            131.9x |          -
    glmmTMB                |    3.40 |   -3900.7151 |     false |              7.7x |        133

nlme and bayeslmm reach the same REML optimum (log-likelihoods within 1e-6). glmmTMB stops with nlminb's
"false convergence (8)" in both runs, 0.001 (200 subjects) and 0.007 (1000 subjects) below it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"
FORMULA = "y ~ arm * visit + base"
RESIDUAL = "us(visit | id)"
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------------------------- data
def simulate(subjects: int, visits: int, missing: float, seed: int) -> pd.DataFrame:
    """One row per observed visit: ``id, arm, visit, base, y`` (module docstring)."""
    rng = np.random.default_rng(seed)
    j = np.arange(1, visits + 1)
    sd = np.linspace(3.0, 3.0 + 0.3 * (visits - 1), visits)
    lag = np.abs(j[:, None] - j[None, :])
    corr = 0.2 + 0.7 * 0.85**lag
    noise = rng.uniform(-0.08, 0.08, (visits, visits))
    corr = corr + np.triu(noise, 1) + np.triu(noise, 1).T
    np.fill_diagonal(corr, 1.0)
    w, v = np.linalg.eigh(corr)
    if w.min() < 0.05:  # keep it comfortably positive definite
        corr = v @ np.diag(np.maximum(w, 0.05)) @ v.T
        corr /= np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
    cov = corr * np.outer(sd, sd)
    arm = rng.permutation(np.repeat(["placebo", "active"], [subjects - subjects // 2, subjects // 2]))
    base = np.round(rng.normal(50.0, 8.0, subjects), 1)
    mean = 20 + 0.6 * base[:, None] - 0.5 * j + (arm == "active")[:, None] * (-0.3 * j)
    y = mean + rng.multivariate_normal(np.zeros(visits), cov, size=subjects)
    keep = rng.uniform(size=(subjects, visits)) >= missing
    none = ~keep.any(axis=1)
    keep[none, rng.integers(0, visits, none.sum())] = True
    width = max(2, len(str(visits)))
    ids = np.array([f"S{i + 1:04d}" for i in range(subjects)])
    labels = np.array([f"V{k:0{width}d}" for k in j])
    ii, kk = np.nonzero(keep)
    return pd.DataFrame(
        {"id": ids[ii], "arm": arm[ii], "visit": labels[kk], "base": base[ii], "y": np.round(y[ii, kk], 4)}
    )


# ----------------------------------------------------------------------------------------- bayeslmm
def run_bayeslmm(csv: Path, reps: int) -> dict[str, Any]:
    """Warm-up fit, then ``reps`` timed ``lmm()`` calls with one BLAS thread."""
    from threadpoolctl import threadpool_limits

    import bayeslmm

    df = pd.read_csv(csv, dtype={"id": str, "arm": str, "visit": str})
    with threadpool_limits(limits=1, user_api="blas"):
        fit = bayeslmm.lmm(FORMULA, df, residual=RESIDUAL)  # warm-up: lazy imports, caches
        walls, engine, cpus = [], [], []
        for _ in range(reps):
            c0, t0 = time.process_time(), time.perf_counter()
            fit = bayeslmm.lmm(FORMULA, df, residual=RESIDUAL)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            engine.append(fit.fit_seconds)
    return {
        "seconds": walls,
        "cpu_seconds": cpus,
        "fit_seconds": engine,
        "evals": int(fit.optimizer.n_evals),
        "loglik": float(fit.loglik),
        "converged": bool(fit.converged),
        "npar_cov": int(fit.npar - fit.spec.p),
        "version": getattr(bayeslmm, "__version__", "?"),
    }


# ------------------------------------------------------------------------------------------------ R
def run_peers(rscript: str, csv: Path, skip_nlme: bool, skip_glmmtmb: bool) -> dict[str, Any]:
    """``Rscript benchmarks/mmrm_peers.R csv``'s JSON (one BLAS/OpenMP thread), or ``{"error": ...}``."""
    env = dict(os.environ, **dict.fromkeys(THREAD_VARS, "1"))
    cmd = [rscript, str(HERE / "mmrm_peers.R"), str(csv)]
    cmd += ["--skip-nlme"] * skip_nlme + ["--skip-glmmTMB"] * skip_glmmtmb
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.lstrip().startswith("{")), None)
    if p.returncode != 0 or line is None:
        return {"error": (p.stderr or p.stdout).strip()[-600:] or f"exit status {p.returncode}"}
    return json.loads(line)


# ------------------------------------------------------------------------------------------- report
def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cols: list[str]) -> str:
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))

    return [line(headers), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "bayeslmm"], capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        return "?"
    return (rev.stdout.strip() or "?") + (f" + {len(dirty)} uncommitted file(s) in bayeslmm/" if dirty else "")


def report(
    args: argparse.Namespace, data: pd.DataFrame, py: dict[str, Any], r: dict[str, Any], loads: list[float]
) -> str:
    n_cells = args.subjects * args.visits
    vers = r.get("versions", {})
    out = [
        f"MMRM benchmark, REML, {FORMULA} with {RESIDUAL} ({time.strftime('%Y-%m-%d %H:%M')})",
        f"data: {args.subjects} subjects x {args.visits} visits, {len(data)} rows "
        f"({1 - len(data) / n_cells:.1%} of the visits missing), seed {args.seed}; "
        f"{py['npar_cov']} covariance parameters",
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}; load average (1 min) at start {loads[0]:.2f}, "
        f"after bayeslmm {loads[1]:.2f}, at the end {loads[2]:.2f}",
        f"bayeslmm {py['version']} (git {git_revision()}), Python {platform.python_version()}, numpy {np.__version__}; "
        "one BLAS thread (threadpoolctl)",
        "R: "
        + (
            f"{vers.get('R', '?')}, nlme {vers.get('nlme', '?')}, glmmTMB {vers.get('glmmTMB', '?')}, "
            f"TMB {vers.get('TMB', '?')}; one BLAS/OpenMP thread"
            if vers
            else r.get("error", "not run")
        ),
        "",
    ]
    b = float(np.median(py["seconds"]))
    rows = [
        [
            f"bayeslmm (median of {len(py['seconds'])})",
            f"{b:.2f}",
            f"{py['loglik']:.4f}",
            str(py["converged"]).lower(),
            "(reference)",
            str(py["evals"]),
        ]
    ]
    notes = []
    for tool in ("nlme", "glmmTMB"):
        skipped = args.skip_nlme if tool == "nlme" else args.skip_glmmtmb
        res = r.get(tool)
        if skipped:
            rows.append([tool, "skipped", "-", "-", "-", "-"])
            continue
        if res is None:
            rows.append([tool, "not run", "-", "-", "-", "-"])
            notes.append(f"{tool}: {r.get('error', 'no result')}")
            continue
        ll = res.get("loglik")
        rows.append(
            [
                tool,
                f"{res['seconds']:.2f}",
                "-" if ll is None else f"{ll:.4f}",
                str(res.get("converged")).lower(),
                f"{res['seconds'] / b:.1f}x",
                str(res.get("optimizer_iterations") or "-"),
            ]
        )
        if res.get("message") and res["message"] != "ok":
            notes.append(f"{tool}: {res['message'][:300]}")
        if ll is not None:
            notes.append(f"{tool} log-lik minus bayeslmm's: {ll - py['loglik']:+.2e}")

    def secs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    out += table(["tool", "seconds", "REML log-lik", "converged", "bayeslmm speed-up", "evals/iter"], rows)
    out += [
        "",
        f"bayeslmm: lmm() {secs(py['seconds'])} s (engine {secs(py['fit_seconds'])} s; "
        f"CPU {secs(py['cpu_seconds'])} s)",
        *notes,
        "speed-up = the tool's seconds / bayeslmm's; R tools: one run each, the fitting call alone; evals/iter: "
        "bayeslmm's objective evaluations, glmmTMB's nlminb iterations",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=1000, help="number of subjects (default 1000; 200 for a quick run)")
    ap.add_argument("--visits", type=int, default=10, help="visits per subject (default 10)")
    ap.add_argument("--missing", type=float, default=0.15, help="probability that a visit is missing (default 0.15)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the simulated data")
    ap.add_argument("--reps", type=int, default=3, help="timed bayeslmm fits after the warm-up (median reported)")
    ap.add_argument("--skip-nlme", action="store_true", help="do not run nlme's gls (minutes at 1000 subjects)")
    ap.add_argument("--skip-glmmtmb", action="store_true", help="do not run glmmTMB")
    ap.add_argument("--rscript", default=shutil.which("Rscript"), help="path of Rscript (default: from PATH)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw measurements as JSON")
    args = ap.parse_args(argv)

    DATA.mkdir(parents=True, exist_ok=True)
    csv = DATA / f"mmrm_{args.subjects}x{args.visits}_m{round(100 * args.missing)}_s{args.seed}.csv"
    data = simulate(args.subjects, args.visits, args.missing, args.seed)
    data.to_csv(csv, index=False)
    loads = [os.getloadavg()[0]]
    print(f"bayeslmm: {args.reps} timed fits after a warm-up ({csv.name})", file=sys.stderr)
    py = run_bayeslmm(csv, args.reps)
    loads.append(os.getloadavg()[0])
    if args.skip_nlme and args.skip_glmmtmb:
        r: dict[str, Any] = {"error": "both R tools skipped"}
    elif args.rscript:
        print("R: mmrm_peers.R (nlme and/or glmmTMB, one run each)", file=sys.stderr)
        r = run_peers(args.rscript, csv, args.skip_nlme, args.skip_glmmtmb)
    else:
        r = {"error": "not installed (no Rscript)"}
    loads.append(os.getloadavg()[0])
    print(report(args, data, py, r, loads))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "csv": str(csv), "bayeslmm": py, "R": r, "load": loads}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
