"""Issue 12, item 5: the designs where bayeslmm was slower than lme4/nlme, side by side.

Three REML fits, timed in-process and warm (one untimed fit first, then ``--reps`` timed fits):

1. ``q3``         ``y ~ x1 + x2 + (x1 + x2 | g)``: two correlated random slopes (q = 3), simulated
                  (fixed seed): 60 groups x 10 observations.                         vs lme4 ``lmer``
2. ``pixel``      nlme's ``Pixel``: ``pixel ~ day + I(day^2) + (day | Dog) + (1 | Dog:Side)`` (102 rows);
                  exported from R to ``benchmarks/data/pixel.csv`` (without R: simulated rows of the
                  same shape).                                                       vs lme4 ``lmer``
3. ``bw_ar1``     nlme's ``BodyWeight``, ``weight ~ Time * Diet + (1 | Rat)`` with AR(1) errors by the
                  order of ``Time`` within ``Rat`` (``residual = "ar1(Time | Rat)"``; 176 rows).
                  vs nlme ``lme(..., correlation = corAR1(form = ~ 1 | Rat), control = lmeControl(opt =
                  "optim"))`` on rows sorted by Rat and Time (the same model: ``tests/reference/
                  make_nlme_reference.R``; nlme's default ``nlminb`` stops at its iteration limit on it). A
                  second nlme row is ``corAR1(form = ~ Time | Rat)`` with default settings, a *different*
                  model (the lag is the difference in days, phi^7 between weekly weighings), shown because
                  it is what a plain translation of ``ar1(Time | Rat)`` runs.

Columns: ``fit s`` is the median [min] seconds of one complete call (``bayeslmm.lmm(...)``, formula to
fitted object; ``lmer(...)``/``lme(...)`` inside ``system.time`` over the repeats); ``engine s`` is
bayeslmm's ``fit_seconds`` (optimisation and checks, without building the design); ``evals`` counts
objective evaluations (bayeslmm: all of them -- start candidates, BOBYQA, finite-difference checks;
lme4: ``optinfo$feval``, BOBYQA's only; nlme: ``-``); ``us/eval`` is the cost of one evaluation at the
optimum (bayeslmm: the objective the optimiser calls; lme4: ``mkLmerDevfun``'s function), the median
over a few thousand calls; ``evals x us`` their product, the part of ``engine s`` spent evaluating
the criterion; ``loglik`` the REML log-likelihood reached; ``ratio`` bayeslmm's ``fit s`` over the
reference tool's (below 1: bayeslmm faster).

Threads: the header reports the BLAS libraries and thread counts of this process (threadpoolctl)
and R's; ``--threads N`` limits BLAS/OpenMP to N threads in both (default: 1, the setting that
suits these small problems; 0 leaves the environment as it is).

Usage::

    .venv/bin/python benchmarks/bench_issue12_speed.py [--reps 20] [--threads 1] [--rscript Rscript] [--json FILE]

A missing ``Rscript`` (or lme4/nlme) leaves the R rows as "not installed".
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

DESIGNS = {
    "q3": {
        "formula": "y ~ x1 + x2 + (x1 + x2 | g)",
        "residual": None,
        "r_call": "lmer(y ~ x1 + x2 + (x1 + x2 | g), d, REML = TRUE)",
        "ref": "lme4",
    },
    "pixel": {
        "formula": "pixel ~ day + I(day**2) + (day | Dog) + (1 | Dog:Side)",
        "residual": None,
        "r_call": "lmer(pixel ~ day + I(day^2) + (day | Dog) + (1 | Dog:Side), d, REML = TRUE)",
        "ref": "lme4",
    },
    "bw_ar1": {
        "formula": "weight ~ Time * Diet + (1 | Rat)",
        "residual": "ar1(Time | Rat)",
        "r_call": (
            "lme(weight ~ Time * Diet, random = ~ 1 | Rat, data = d, correlation = corAR1(form = ~ 1 | "
            "Rat), method = 'REML', control = lmeControl(opt = 'optim'))"
        ),
        "ref": "nlme",
    },
}
R_EXTRA = {
    "bw_ar1": (
        "nlme, corAR1(~Time|Rat) [other model]",
        "lme(weight ~ Time * Diet, random = ~ 1 | Rat, data = d, correlation = corAR1(form = ~ Time | "
        "Rat), method = 'REML')",
    )
}
DTYPES = {"q3": {"g": str}, "pixel": {"Dog": str, "Side": str}, "bw_ar1": {"Rat": str, "Diet": str}}


# --------------------------------------------------------------------------------------------- data
def simulate_q3(seed: int = 1, groups: int = 60, per: int = 10) -> pd.DataFrame:
    """Two correlated random slopes and an intercept per group."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x1, x2 = rng.normal(size=groups * per), rng.normal(size=groups * per)
    C = np.array([[1.0, 0.3, -0.2], [0.3, 0.5, 0.1], [-0.2, 0.1, 0.4]])
    b = rng.multivariate_normal(np.zeros(3), C, size=groups)
    y = 1 + 0.5 * x1 - 0.3 * x2 + b[g, 0] + b[g, 1] * x1 + b[g, 2] * x2 + rng.normal(size=groups * per)
    return pd.DataFrame({"g": [f"g{i:02d}" for i in g], "x1": x1, "x2": x2, "y": y})


def simulate_pixel(seed: int = 2) -> pd.DataFrame:
    """Pixel-shaped stand-in: 10 dogs x 2 sides, days 0-21 (5-7 per dog), pixel ~ 1050-1150."""
    rng = np.random.default_rng(seed)
    rows = []
    for dog in range(1, 11):
        days = np.sort(rng.choice([0, 1, 2, 4, 6, 8, 10, 14, 16, 21], size=rng.integers(4, 8), replace=False))
        b0, b1 = rng.normal(0, 28), rng.normal(0, 1.8)
        for side in "LR":
            s = rng.normal(0, 16)
            for d in days:
                rows.append(
                    {
                        "Dog": str(dog),
                        "Side": side,
                        "day": float(d),
                        "pixel": 1073 + 6.1 * d - 0.37 * d * d + b0 + b1 * d + s + rng.normal(0, 9),
                    }
                )
    return pd.DataFrame(rows)


def prepare_data(rscript: str | None) -> dict[str, tuple[Path, str]]:
    """CSV per design and where it came from."""
    DATA.mkdir(parents=True, exist_ok=True)
    out = {}
    q3 = DATA / "issue12_q3.csv"
    simulate_q3().to_csv(q3, index=False)
    out["q3"] = (q3, "simulated, seed 1: 60 groups x 10")
    px = DATA / "pixel.csv"
    src = "nlme::Pixel (exported from R)"
    if not px.exists() and rscript:
        code = (
            'suppressMessages(library(nlme)); d <- as.data.frame(Pixel)[, c("Dog", "Side", "day", "pixel")]; '
            "d$Dog <- as.character(d$Dog); d$Side <- as.character(d$Side); "
            f'write.csv(d, "{px}", row.names = FALSE)'
        )
        subprocess.run([rscript, "-e", code], capture_output=True, text=True, timeout=120)
    if not px.exists():
        px = DATA / "pixel_sim.csv"
        simulate_pixel().to_csv(px, index=False)
        src = "simulated stand-in (no R/nlme to export Pixel)"
    out["pixel"] = (px, src)
    bw = DATA / "bodyweight_sorted.csv"
    d = pd.read_csv(REPO / "tests" / "data" / "bodyweight.csv", dtype={"Rat": str, "Diet": str})
    d.sort_values(["Rat", "Time"], kind="stable").to_csv(bw, index=False)  # nlme's corAR1(~1|Rat) uses row order
    out["bw_ar1"] = (bw, "tests/data/bodyweight.csv (nlme::BodyWeight), sorted by Rat, Time")
    return out


# ----------------------------------------------------------------------------------------- bayeslmm
def evaluation_cost(fit: Any, n: int = 2000) -> float:
    """Median seconds of one objective evaluation at the optimum (the function the optimiser calls)."""
    obj = fit.objective  # the engine: the same interface for every model
    f, x = obj.working, obj.to_working(fit.psi)
    f(x)
    per = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n // 5):
            f(x)
        per.append((time.perf_counter() - t0) / (n // 5))
    return float(np.median(per))


def run_bayeslmm(key: str, csv: Path, reps: int) -> dict[str, Any]:
    import bayeslmm

    d = DESIGNS[key]
    df = pd.read_csv(csv, dtype=DTYPES[key])
    fit = bayeslmm.lmm(d["formula"], df, residual=d["residual"])  # warm-up
    walls, engine = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        fit = bayeslmm.lmm(d["formula"], df, residual=d["residual"])
        walls.append(time.perf_counter() - t0)
        engine.append(fit.fit_seconds)
    rec = fit.optimizer
    return {
        "fit_s": walls,
        "engine_s": engine,
        "evals": rec.n_evals,
        "restarts": rec.restarts,
        "per_eval_s": evaluation_cost(fit),
        "loglik": fit.loglik,
        "converged": fit.converged,
        "singular": fit.singular,
    }


# ------------------------------------------------------------------------------------------------ R
R_TEMPLATE = r"""
suppressMessages({ok4 <- requireNamespace("lme4", quietly = TRUE); okn <- requireNamespace("nlme", quietly = TRUE)})
suppressMessages({if (ok4) library(lme4); if (okn) library(nlme)})
library(jsonlite)
reps <- %(reps)d
jobs <- fromJSON('%(jobs)s', simplifyVector = FALSE)
out <- list(versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
            lme4 = if (ok4) as.character(packageVersion("lme4")) else NA,
            nlme = if (okn) as.character(packageVersion("nlme")) else NA,
            blas = tryCatch(extSoftVersion()[["BLAS"]], error = function(e) NA)))
for (j in jobs) {
  d <- read.csv(j$csv, colClasses = unlist(j$classes))
  res <- tryCatch({
    f <- function() eval(parse(text = j$call))
    m <- f()
    times <- sapply(seq_len(reps), function(i) system.time(m <<- f())[["elapsed"]])
    r <- list(fit_s = times, loglik = as.numeric(logLik(m)))
    if (inherits(m, "merMod")) {
      r$evals <- m@optinfo$feval
      lf <- do.call(lFormula, list(formula = formula(m), data = d, REML = TRUE))
      df <- do.call(mkLmerDevfun, lf); th <- getME(m, "theta"); df(th)
      per <- sapply(1:5, function(k) {
        t0 <- proc.time()[["elapsed"]]; for (i in 1:400) df(th); (proc.time()[["elapsed"]] - t0) / 400 })
      r$per_eval_s <- median(per)
    }
    r
  }, error = function(e) list(error = conditionMessage(e)))
  out[[j$key]] <- res
}
cat("JSON", toJSON(out, auto_unbox = TRUE, digits = NA), "\n")
"""


def run_r(rscript: str, data: dict[str, tuple[Path, str]], reps: int, env: dict[str, str]) -> dict[str, Any]:
    classes = {
        "q3": {"g": "character"},
        "pixel": {"Dog": "character", "Side": "character"},
        "bw_ar1": {"Rat": "character", "Diet": "character"},
    }
    jobs = [{"key": k, "csv": str(data[k][0]), "classes": classes[k], "call": DESIGNS[k]["r_call"]} for k in DESIGNS]
    jobs += [
        {"key": k + "_extra", "csv": str(data[k][0]), "classes": classes[k], "call": call}
        for k, (_, call) in R_EXTRA.items()
    ]
    code = R_TEMPLATE % {"reps": reps, "jobs": json.dumps(jobs).replace("'", "\\'")}
    p = subprocess.run([rscript, "-e", code], capture_output=True, text=True, env=env, timeout=1800)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("JSON ")), None)
    if line is None:
        return {"error": (p.stderr or p.stdout).strip()[-400:]}
    return json.loads(line[5:])


# ------------------------------------------------------------------------------------------- report
def fmt_t(ts: list[float] | None) -> str:
    if not ts:
        return "-"
    return f"{np.median(ts):.4f} [{min(ts):.4f}]"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cols: " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))  # noqa: E731
    return [line(headers), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        return (
            "; ".join(
                f"{i.get('internal_api')} ({i.get('prefix')}) {i.get('num_threads')} thread(s)"
                for i in threadpool_info()
                if i.get("user_api") == "blas"
            )
            or "no BLAS pool found"
        )
    except Exception as e:  # noqa: BLE001
        return f"threadpoolctl unavailable ({e})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20, help="timed fits per design and tool (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads in both tools (0: leave as is)")
    ap.add_argument("--rscript", default=shutil.which("Rscript"), help="path of Rscript (default: from PATH)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw measurements as JSON")
    args = ap.parse_args(argv)

    env = dict(os.environ)
    limiter = None
    if args.threads > 0:
        for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[v] = str(args.threads)
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=args.threads)
        except ImportError:
            pass
    load0 = os.getloadavg()[0]
    blas = blas_info()
    data = prepare_data(args.rscript)
    py = {}
    for key in DESIGNS:
        print(f"bayeslmm: {key}", file=sys.stderr)
        py[key] = run_bayeslmm(key, data[key][0], args.reps)
    if args.rscript:
        print("R: lme4 / nlme", file=sys.stderr)
        r = run_r(args.rscript, data, args.reps, env)
    else:
        r = {"error": "not installed (no Rscript)"}
    if limiter is not None:
        limiter.restore_original_limits()

    import bayeslmm

    git = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"], capture_output=True, text=True)
    dirty = (
        subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "bayeslmm"], capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()
    )
    vers = r.get("versions", {})
    out = [
        f"issue 12 item 5: bayeslmm vs lme4/nlme, REML, in-process and warm ({time.strftime('%Y-%m-%d %H:%M:%S')})",
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}; load average at start {load0:.2f}",
        f"bayeslmm {getattr(bayeslmm, '__version__', '?')} (git {git.stdout.strip() or '?'}"
        + (f" + {len(dirty)} uncommitted file(s) in bayeslmm/" if dirty else "")
        + f"), Python {platform.python_version()}, "
        f"numpy {np.__version__}; BLAS: {blas}",
        (
            "R: "
            + (
                f"R {vers.get('R')}, lme4 {vers.get('lme4')}, nlme {vers.get('nlme')}, BLAS {vers.get('blas')}"
                if vers
                else r.get("error", "?")
            )
        ),
        f"threads: {'BLAS/OpenMP limited to ' + str(args.threads) if args.threads > 0 else 'environment as is'} "
        "(both tools; the fits are single-threaded otherwise)",
        f"timings: median [min] seconds over {args.reps} fits after one warm-up fit",
        "",
    ]
    rows = []
    for key in DESIGNS:
        d, b = DESIGNS[key], py[key]
        rr = r.get(key, {})
        ratio = f"{np.median(b['fit_s']) / np.median(rr['fit_s']):.2f}" if rr.get("fit_s") else "-"
        rows.append(
            [
                key,
                "bayeslmm",
                fmt_t(b["fit_s"]),
                fmt_t(b["engine_s"]),
                str(b["evals"]),
                f"{b['per_eval_s'] * 1e6:.0f}",
                f"{b['evals'] * b['per_eval_s']:.4f}",
                f"{b['loglik']:.4f}",
                ratio,
            ]
        )
        ref = d["ref"]
        if rr.get("fit_s"):
            pe = rr.get("per_eval_s")
            ev = rr.get("evals")
            rows.append(
                [
                    "",
                    ref,
                    fmt_t(rr["fit_s"]),
                    "-",
                    str(ev) if ev is not None else "-",
                    f"{pe * 1e6:.0f}" if pe else "-",
                    f"{ev * pe:.4f}" if pe and ev else "-",
                    f"{rr['loglik']:.4f}",
                    "",
                ]
            )
        else:
            rows.append(["", ref, rr.get("error", r.get("error", "not run"))[:60], "", "", "", "", "", ""])
        if key in R_EXTRA:
            ex = r.get(key + "_extra", {})
            rows.append(
                [
                    "",
                    R_EXTRA[key][0],
                    fmt_t(ex.get("fit_s")) if ex.get("fit_s") else ex.get("error", "-")[:60],
                    "-",
                    "-",
                    "-",
                    "-",
                    f"{ex['loglik']:.4f}" if "loglik" in ex else "-",
                    "",
                ]
            )
    out += table(["design", "tool", "fit s", "engine s", "evals", "us/eval", "evals x us", "loglik", "ratio"], rows)
    out += [
        "",
        "data: " + "; ".join(f"{k}: {src}" for k, (_, src) in data.items()),
        "bayeslmm details: "
        + "; ".join(
            f"{k}: restarts {v['restarts']}, converged {v['converged']}, singular {v['singular']}"
            for k, v in py.items()
        ),
    ]
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"bayeslmm": py, "R": r, "threads": args.threads, "reps": args.reps, "load_at_start": load0},
                indent=2,
                default=float,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
