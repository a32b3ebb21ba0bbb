"""Posterior-sampling benchmark: bayeslmm's NUTS parameterisations against bambi.

What it measures
----------------
Every run is a fresh subprocess timed from outside (interpreter start, imports,
reading the CSV, building the model, compiling, 2 chains x 1000 draws after 1000
tuning steps, summarising, printing); the same seed goes to every tool in a repeat.

1. **pig** (``weight ~ num_weeks + (1 | id_num)``, 432 rows, 48 pigs):
   ``bayeslmm sample DATA.csv --param P --json`` for P = conditional (random
   effects sampled), marginal (random effects integrated out) and restricted
   (fixed effects integrated out too), and bambi's default model,
   ``bmb.Model("weight ~ num_weeks + (1|id_num)", data).fit(draws=1000, tune=1000,
   chains=2, random_seed=S)``, in a ``python -c`` subprocess. For each: the
   smallest bulk ESS among the variance parameters (bayeslmm: the ``varcorr``
   rows; bambi: ``1|id_num_sigma`` and ``sigma``, via ``arviz.ess``; bulk ESS is
   rank-based, so sds and variances give the same value) and that ESS per second
   of the whole process. Target: bayeslmm's best ESS/s at least 10 x bambi's.
   For context only, bambi is also run with ``noncentered=False`` ("bambi
   centred"), and a second ratio table also uses the smallest bulk ESS over
   *all* reported parameters (fixed effects too): centring speeds up bambi's
   variances but leaves its Intercept mixing badly.
2. **sleepstudy** (``Reaction ~ Days + (Days | Subject)``, correlated random
   intercept and slope), ``bayeslmm sample ... --param marginal``: whole process
   under 15 s. Not compared with bambi: bambi (0.21) expands ``(Days|Subject)``
   into two *independent* terms, ``1|Subject`` and ``Days|Subject``, each with its
   own HalfNormal sd and no correlation parameter (its LKJ prior was dropped, see
   bambinos/bambi#702) - lme4's ``(Days || Subject)``, a different model. The
   script builds that bambi model and lists its free variables as evidence.

Also shown: the sampling time measured inside each process (bayeslmm's
``sampling_seconds``; bambi's ``model.fit``, which includes compiling),
divergences, and the smallest bulk ESS and largest R-hat over all reported
parameters (bayeslmm: all its rows; bambi: the fixed effects and the two sds,
not the 48 pig effects). Times and ESS are
medians over the repeats (3, ``--quick``: 1) with ``[min-max]``. One short
untimed warm-up run per tool comes first (fills the OS file cache and
PyTensor's compilation cache); runs are interleaved across tools, never
parallel. ``Checks`` flags divergences, R-hat > 1.01 and runs that waited for a
CPU; ``--check`` exits with status 1 if a target is missed or a check on a
bayeslmm run fails. Progress goes to stderr, the report to stdout.

Usage::

    .venv/bin/python benchmarks/bench_bayes.py [--quick] [--json FILE] [--check]

Needs bambi (``pip install -e '.[bench]'``); without it bambi's column reads
"not installed".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUNDLED = REPO / "bayeslmm" / "datasets" / "data"
PIG = ("pig_weights.csv", "weight ~ num_weeks + (1 | id_num)")
SLEEP = ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)")
PARAMS = ("conditional", "marginal", "restricted")
DRAWS, TUNE, CHAINS, SEED = 1000, 1000, 2, 20240611
ESS_RATIO_TARGET = 10.0
SLEEP_TARGET_S = 15.0
RHAT_MAX = 1.01
BUSY_RATIO = 1.3  # wall > this x CPU time: the run waited for a CPU
#: Table rows common to both tables: label, key of a run's dict, format.
ROWS = [
    ("whole process, s", "wall", "{:.2f}"),
    ("sampling in-process, s", "fit", "{:.2f}"),
    ("divergences", "div", "{:.0f}"),
    ("max R-hat", "r_hat", "{:.4f}"),
]

BAMBI = r"""
import json, sys, time
t0 = time.perf_counter()
import arviz as az, bambi as bmb, numpy as np, pandas as pd
csv, formula, draws, tune, chains, seed = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
model = bmb.Model(formula, pd.read_csv(csv), **({} if sys.argv[7] == "default" else {"noncentered": False}))
t1 = time.perf_counter()
idata = model.fit(draws=draws, tune=tune, chains=chains, random_seed=seed)
fit = time.perf_counter() - t1
sig = [v for v in idata.posterior.data_vars if v == "sigma" or v.endswith("_sigma")]
fix = [v for v in idata.posterior.data_vars if "|" not in v and v != "sigma"]
ess = {v: float(az.ess(idata, var_names=[v], method="bulk")[v].min()) for v in sig + fix}
rhat = {v: float(az.rhat(idata, var_names=[v])[v].max()) for v in sig + fix}
st = idata.sample_stats
div = int((st["diverging"] if "diverging" in st else st["divergences"]).sum())
print("BENCH " + json.dumps({"ess": ess, "rhat_rows": rhat, "div": div, "fit": fit, "build": t1 - t0,
                             "version": bmb.__version__}))
"""

BAMBI_SLEEP_VARS = r"""
import bambi as bmb, pandas as pd, sys
m = bmb.Model(sys.argv[2], pd.read_csv(sys.argv[1]))
m.build()
print("BENCH " + " ".join(v.name for v in m.backend.model.free_RVs))
"""


def data(name: str) -> Path:
    shared = Path("/work/shared/data") / name
    return shared if shared.exists() else BUNDLED / name


def run(argv: list[str]) -> tuple[dict[str, float], subprocess.CompletedProcess]:
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    cp = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if cp.returncode != 0:
        err = [ln for ln in cp.stderr.splitlines() if ln.strip()]
        raise RuntimeError(err[-1][:200] if err else f"exit status {cp.returncode}")
    sampling = next((ln.strip() for ln in cp.stderr.splitlines() if "sampling (" in ln), "")
    return {"wall": wall, "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, "how": sampling}, cp


def bayeslmm(csv: Path, formula: str, param: str, seed: int, draws: int = DRAWS, tune: int = TUNE) -> dict:
    exe = Path(sys.executable).parent / "bayeslmm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bayeslmm.cli"]
    m, cp = run(
        [
            *cmd,
            "sample",
            str(csv),
            "--formula",
            formula,
            "--param",
            param,
            "--draws",
            str(draws),
            "--tune",
            str(tune),
            "--chains",
            str(CHAINS),
            "--seed",
            str(seed),
            "--json",
        ]
    )
    d = json.loads(cp.stdout)
    name = lambda r: r.get("name") or "/".join(str(r[k]) for k in ("grp", "var1", "var2") if r.get(k))  # noqa: E731
    vc, worst = [r for r in d["params"] if r["kind"] == "varcorr"], max(d["params"], key=lambda r: r["r_hat"])
    return {
        **m,
        "ess": min(r["ess_bulk"] for r in vc),
        "ess_all": min(r["ess_bulk"] for r in d["params"]),
        "r_hat": worst["r_hat"],
        "r_hat_at": name(worst),
        "div": d["divergences"],
        "fit": d["sampling_seconds"],
        "seconds": d["seconds"],
        "ess_rows": {name(r): r["ess_bulk"] for r in vc},
    }


def bambi(csv: Path, formula: str, seed: int, variant: str, draws: int = DRAWS, tune: int = TUNE) -> dict:
    m, cp = run(
        [
            sys.executable,
            "-c",
            BAMBI,
            str(csv),
            formula.replace(" | ", "|"),
            str(draws),
            str(tune),
            str(CHAINS),
            str(seed),
            variant,
        ]
    )
    d = json.loads(next(ln for ln in cp.stdout.splitlines() if ln.startswith("BENCH "))[6:])
    worst = max(d["rhat_rows"], key=d["rhat_rows"].get)
    var = {k: v for k, v in d["ess"].items() if k == "sigma" or k.endswith("_sigma")}
    return {
        **m,
        **d,
        "ess_rows": var,
        "ess": min(var.values()),
        "ess_all": min(d["ess"].values()),
        "r_hat": d["rhat_rows"][worst],
        "r_hat_at": worst,
    }


def cell(runs: list[dict], key: str, fmt: str = "{:.2f}") -> str:
    xs = [r[key] for r in runs]
    m = statistics.median(xs)
    return fmt.format(m) if len(xs) == 1 else f"{fmt.format(m)} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cs: " | ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cs))  # noqa: E731
    return [line(headers), "-+-".join("-" * x for x in w), *map(line, rows)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one run per tool instead of three")
    p.add_argument("--json", metavar="FILE", help="also write every raw measurement as JSON")
    p.add_argument("--check", action="store_true", help="exit status 1 if a target is missed or a bayeslmm check fails")
    args = p.parse_args(argv)
    reps, load0, t_start = (1 if args.quick else 3), os.getloadavg()[0], time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    pig, sleep = data(PIG[0]), data(SLEEP[0])
    tools = {f"bayeslmm {q}": (lambda s, q=q, **kw: bayeslmm(pig, PIG[1], q, s, **kw)) for q in PARAMS}
    tools["bambi default"] = lambda s, **kw: bambi(pig, PIG[1], s, "default", **kw)
    tools["bambi centred"] = lambda s, **kw: bambi(pig, PIG[1], s, "centred", **kw)  # context, not the target
    status: dict[str, str] = {}
    for name, fn in tools.items():  # warm-up: file cache, PyTensor compilation cache
        print(f"warm-up {name} ...", file=sys.stderr, flush=True)
        try:
            fn(SEED, draws=50, tune=50)
        except Exception as e:  # noqa: BLE001 - a failing tool is a result
            status[name] = "not installed" if "No module named 'bambi'" in str(e) else f"failed: {e}"
    runs: dict[str, list[dict]] = {k: [] for k in tools}
    for i in range(reps):
        for name, fn in tools.items():
            if name in status:
                continue
            print(f"[pig] {name} run {i + 1}/{reps} ...", end="", file=sys.stderr, flush=True)
            try:
                r = fn(SEED + i)
            except Exception as e:  # noqa: BLE001
                status[name] = f"failed: {e}"
                print(f" {status[name]}", file=sys.stderr)
                continue
            r["ess_per_s"] = r["ess"] / r["wall"]
            runs[name].append(r)
            print(f" {r['wall']:.1f} s, min ESS {r['ess']:.0f}", file=sys.stderr)
    sleep_runs = []
    for i in range(reps):
        print(f"[sleepstudy] bayeslmm marginal run {i + 1}/{reps} ...", end="", file=sys.stderr, flush=True)
        sleep_runs.append(bayeslmm(sleep, SLEEP[1], "marginal", SEED + i))
        print(f" {sleep_runs[-1]['wall']:.1f} s", file=sys.stderr)
    try:
        _, cp = run([sys.executable, "-c", BAMBI_SLEEP_VARS, str(sleep), SLEEP[1].replace(" | ", "|")])
        bambi_sleep_vars = cp.stdout.split("BENCH ", 1)[1].split()
    except Exception as e:  # noqa: BLE001
        bambi_sleep_vars = [f"(bambi model not built: {e})"]

    # ---- report
    version = next((r["version"] for r in runs["bambi default"]), status.get("bambi default", "?"))
    git = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "bayeslmm"], capture_output=True, text=True
    ).stdout.split("\n")
    out = [
        f"bayeslmm posterior-sampling benchmark ({'quick' if args.quick else 'full'} run, "
        f"{started}); {os.cpu_count()} CPUs, load average at start {load0:.2f}",
        f"bayeslmm git {git.stdout.strip() or '?'}"
        + (" + uncommitted changes in bayeslmm/" if any(dirty) else "")
        + f"; bambi {version}; {CHAINS} chains x {DRAWS} draws after {TUNE} tuning steps; "
        f"median [min-max] over {reps} run(s), seeds {SEED}..{SEED + reps - 1}",
        "",
        f"1. pig: {PIG[1]} ({pig})",
        "",
    ]
    ok = {k: v for k, v in runs.items() if v}
    rows = [
        [label, *(cell(ok[k], key, fmt) if k in ok else status.get(k, "-") for k in tools)]
        for label, key, fmt in ROWS[:2]
        + [
            ("min bulk ESS, variances", "ess", "{:.0f}"),
            ("ESS / s (whole process)", "ess_per_s", "{:.0f}"),
            ("min bulk ESS, all reported", "ess_all", "{:.0f}"),
        ]
        + ROWS[2:]
    ]
    out += table(["", *tools], rows)
    out.append("   bulk ESS (median) of each variance parameter:")
    out += [
        f"     {k}: " + ", ".join(f"{n} {statistics.median(r['ess_rows'][n] for r in v):.0f}" for n in v[0]["ess_rows"])
        for k, v in ok.items()
    ]
    hows = {v[0]["how"] for v in ok.values()}
    out += [f"   every tool: {hows.pop()}"] if len(hows) == 1 else [f"   {k}: {v[0]['how']}" for k, v in ok.items()]
    eps = {k: statistics.median(r["ess_per_s"] for r in v) for k, v in ok.items()}
    eps_all = {k: statistics.median(r["ess_all"] / r["wall"] for r in v) for k, v in ok.items()}
    best = max((k for k in eps if k.startswith("bayeslmm")), key=eps.get, default=None)
    ratio = eps[best] / eps["bambi default"] if best and "bambi default" in eps else None
    cols = [(b, e) for b in ("bambi default", "bambi centred") if b in eps for e in (eps, eps_all)]
    if best and cols:
        out += [
            "",
            *table(
                [
                    "ESS/s ratio, bayeslmm / ...",
                    *(f"{b.split()[1]}: {'variances' if e is eps else 'all'}" for b, e in cols),
                ],
                [[k, *(f"{e[k] / e[b]:.1f} x" for b, e in cols)] for k in eps if k.startswith("bayeslmm")],
            ),
        ]
        out += [
            "   variances: min bulk ESS over the variance parameters (the target: vs bambi default); all: min bulk ESS",
            "   over every reported parameter; both per second of the whole process. bambi centred = "
            "noncentered=False, for context.",
        ]

    out += ["", f"2. sleepstudy: {SLEEP[1]} ({sleep}), bayeslmm sample --param marginal", ""]
    out += table(
        ["", "bayeslmm marginal"],
        [
            [label, cell(sleep_runs, key, fmt)]
            for label, key, fmt in ROWS[:2] + [("min bulk ESS, variances+corr", "ess", "{:.0f}")] + ROWS[2:]
        ],
    )
    out += [
        f"   bambi {version} is not compared: for '{SLEEP[1]}' it builds the free variables "
        f"{', '.join(bambi_sleep_vars)}",
        "   - independent sds for the intercept and the slope and no "
        "correlation parameter, i.e. lme4's (Days || Subject), a different model.",
    ]

    sleep_med = statistics.median(r["wall"] for r in sleep_runs)
    mark = {True: "MET", False: "MISSED", None: "n/a"}
    met_pig = None if ratio is None else ratio >= ESS_RATIO_TARGET
    met_sleep = sleep_med < SLEEP_TARGET_S
    out += [
        "",
        "Targets",
        f"  [{mark[met_pig]:^6}] pig: best bayeslmm ESS/s >= {ESS_RATIO_TARGET:g} x bambi's: "
        + (f"{best} {eps[best]:.0f} / bambi {eps['bambi default']:.0f} = {ratio:.1f} x" if ratio else "n/a"),
        f"  [{mark[met_sleep]:^6}] sleepstudy correlated slopes, marginal: whole process "
        f"< {SLEEP_TARGET_S:g} s: {sleep_med:.2f} s",
    ]
    problems = [
        f"{k}: {r['div']} divergences (seed {SEED + i})"
        for k, v in [*ok.items(), ("sleepstudy", sleep_runs)]
        for i, r in enumerate(v)
        if r["div"]
    ]
    problems += [
        f"{k}: R-hat {r['r_hat']:.4f} > {RHAT_MAX} for {r['r_hat_at']} (seed {SEED + i})"
        for k, v in [*ok.items(), ("sleepstudy", sleep_runs)]
        for i, r in enumerate(v)
        if r["r_hat"] > RHAT_MAX
    ]
    problems += [
        f"{k}: run {i + 1} waited for a CPU (wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s)"
        for k, v in [*ok.items(), ("sleepstudy", sleep_runs)]
        for i, r in enumerate(v)
        if r["wall"] > BUSY_RATIO * r["cpu"]
    ]
    problems += [f"{k}: {s}" for k, s in status.items()]
    out += ["", "Checks", *([f"  ! {x}" for x in problems] or ["  no divergences, all R-hat <= 1.01"])]
    out.append(f"\n(benchmark took {time.perf_counter() - t_start:.0f} s)")
    print("\n".join(out))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "bambi": version,
                    "pig": runs,
                    "status": status,
                    "sleepstudy": sleep_runs,
                    "bambi_sleepstudy_free_vars": bambi_sleep_vars,
                    "ess_ratio": ratio,
                    "best": best,
                    "targets": {"pig_ess_ratio": met_pig, "sleepstudy_s": met_sleep},
                    "problems": problems,
                },
                indent=2,
            )
        )
    ours = [x for x in problems if not x.startswith("bambi")]  # bambi's own R-hat is reported, not failed on
    return 1 if args.check and (ours or met_pig is False or not met_sleep) else 0


if __name__ == "__main__":
    sys.exit(main())
