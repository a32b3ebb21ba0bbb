"""Speed benchmark: bayeslmm REML against lme4 (R) and statsmodels MixedLM.

What it measures
----------------
Three REML fits, each solved by every tool that can solve it:

1. ``pig``       the pig-weights example, ``weight ~ num_weeks + (1 | id_num)``
                 (432 rows, 48 pigs).
2. ``insteval``  lme4's InstEval, crossed random intercepts,
                 ``y ~ service + (1 | s) + (1 | d) + (1 | dept)``
                 (73,421 rows; s: 2,972, d: 1,128, dept: 14 levels). The data are
                 exported from R once to ``benchmarks/data/insteval.csv``; without
                 R/lme4 a simulated stand-in of the same dimensions is used.
3. ``slope100k`` simulated (fixed seed) random intercept and slope,
                 ``y ~ x + (1 + x | g)``, 100,000 rows in 10,000 groups.

For every tool and task it records

* **whole process**: wall-clock seconds of a fresh subprocess that starts the
  interpreter, loads the library, reads the CSV, fits and prints the result:
  ``bayeslmm fit DATA.csv --formula F --json`` (the CLI), ``Rscript -e
  'library(lme4); d <- read.csv(...); lmer(...)'`` and ``python -c 'import
  statsmodels ...; MixedLM(...).fit(reml=True)'``;
* **fit only**: the time spent fitting, measured inside that same process:
  bayeslmm's ``fit_seconds`` (cross-products, optimisation and convergence
  checks; it excludes parsing the formula and building the design, which take
  ~0.3-0.5 s the first time because formulaic is imported then), lme4's
  ``system.time(lmer(...))`` (includes building the model frame) and the
  wall time of statsmodels' ``MixedLM.from_formula(...).fit()``;
* **optimizer evals**: objective evaluations; bayeslmm counts all of them
  (start search, BOBYQA, finite-difference checks), lme4's ``feval`` only BOBYQA's;
* **log-lik**: the maximised REML log-likelihood each tool reports. The three
  tools use the same scale (lme4's ``logLik``), so equal values mean the tools
  solved the same problem and reached the same optimum; a tool whose value is
  lower stopped short of the optimum.

How to read it
--------------
Times are medians over the repeats, with ``[min-max]`` when there was more than
one run; ``n=`` says how many runs. The last column is bayeslmm's time divided
by lme4's (below 1: bayeslmm is faster). The "targets" section checks the
goals of the speed issue: the whole ``bayeslmm fit`` process on the pig data
in at most half the time of ``Rscript`` fitting it with lme4, and the
InstEval-sized crossed REML fit in under 2 s of bayeslmm fit time (lme4: ~20-30 s).
Logliks that disagree by more than 1e-3 are flagged under "checks".

A pig warm-up run of each tool precedes the timed runs (so the OS file cache
holds the interpreters and libraries); the pig runs are interleaved across
tools; the larger tasks are not warmed up. Tools run one after the other, never
in parallel. The pig target is also reported for the plain ``bayeslmm fit``
(printing the summary instead of ``--json``).

Timings are only as good as the machine is quiet: the header shows the load
average when the benchmark started, and "checks" flags runs whose wall time
exceeded their CPU time (they waited for a CPU) and runs during which other
processes kept more than a quarter of a CPU busy (Linux ``/proc/stat``; the
per-run figures are in the JSON). Multi-threaded BLAS on a small
busy machine can make the dense Cholesky steps erratic: by default the
environment is passed through unchanged; ``--threads N`` sets
OPENBLAS/OMP/MKL_NUM_THREADS for every subprocess (R's reference BLAS is
single-threaded anyway).

The package is benchmarked as installed (the editable working tree), unless
``--snapshot`` (a copy of ``bayeslmm/`` taken at the start, for a tree that is
being edited) or ``--git-ref REV`` (``bayeslmm/`` as committed at REV, via
``git archive``) is given; the header names the revision and a digest of the
sources.

Usage::

    .venv/bin/python benchmarks/bench_reml.py [--quick] [--json FILE] [--tasks pig,insteval,slope100k]
                                               [--threads N] [--sm-timeout S] [--rscript PATH]
                                               [--snapshot | --git-ref REV] [--check]

``--quick`` reduces the repeats (CI smoke run); ``--check`` exits with status 1
when a target is missed or logliks disagree (otherwise the exit status is 0
whenever the benchmark itself ran). A missing Rscript or lme4 (or statsmodels)
shows as "not installed" in its column.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"
PIG_CSV_SHARED = Path("/work/shared/data/pig_weights.csv")

TOOLS = ("bayeslmm", "lme4", "statsmodels")
TOOL_HEADERS = {"bayeslmm": "bayeslmm", "lme4": "lme4 (Rscript)", "statsmodels": "statsmodels"}
#: Logliks further apart than this are reported as disagreeing.
LOGLIK_TOL = 1e-3
#: Issue targets.
PIG_RATIO_TARGET = 0.5
INSTEVAL_FIT_TARGET_S = 2.0
SEED = 20240611
#: A run whose wall time exceeds this multiple of its CPU time waited for the CPU (a busy machine).
BUSY_RATIO = 1.3
#: A run during which other processes kept this many CPUs busy on average was disturbed.
OTHERS_MAX = 0.25


# --------------------------------------------------------------------------- results
@dataclass
class ToolResult:
    """What one tool did on one task."""

    status: str = "ok"  # "ok" or the text shown in the table ("not installed", "n/a (...)", "failed: ...")
    process_seconds: list[float] = field(default_factory=list)
    process_cpu_seconds: list[float] = field(default_factory=list)  # user + system CPU of those processes
    others_cpus: list[float | None] = field(default_factory=list)  # CPUs busy with other processes meanwhile
    fit_seconds: list[float] = field(default_factory=list)
    loglik: float | None = None
    n_evals: int | None = None
    converged: bool | None = None
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # runs that crashed (the others still count)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Task:
    """One benchmark problem."""

    key: str
    title: str
    formula: str  # lme4 / bayeslmm formula
    data: str  # CSV path
    data_note: str
    formula_cli: str | None = None  # what the bayeslmm CLI is given, when it differs from ``formula``
    r_colclasses: str | None = None  # R ``colClasses`` for read.csv
    statsmodels: dict[str, Any] | None = None  # MixedLM arguments; None: statsmodels cannot fit it
    summary_seconds: list[float] = field(default_factory=list)  # plain `bayeslmm fit` (summary output), pig only
    results: dict[str, ToolResult] = field(default_factory=dict)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------- subprocesses
class Runner:
    """Runs the tools' subprocesses and parses what they print."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = dict(os.environ)
        if args.threads:
            for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                self.env[v] = str(args.threads)
        self.python = sys.executable
        exe = Path(sys.executable).parent / "bayeslmm"
        self.bayeslmm_cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bayeslmm.cli"]
        self.bayeslmm_env = self.env
        self.pkg_dir = REPO / "bayeslmm"
        self.snapshot_dir: str | None = None
        if args.snapshot or args.git_ref:  # a frozen copy of the package (the working tree may change meanwhile)
            import tempfile

            self.snapshot_dir = tempfile.mkdtemp(prefix="bayeslmm-bench-")
            self.pkg_dir = Path(self.snapshot_dir) / "bayeslmm"
            if args.git_ref:  # the package as committed at that revision (read-only: git archive)
                arch = subprocess.run(
                    ["git", "-C", str(REPO), "archive", "--format=tar", args.git_ref, "bayeslmm"],
                    capture_output=True,
                    timeout=120,
                )
                if arch.returncode != 0:
                    shutil.rmtree(self.snapshot_dir, ignore_errors=True)
                    sys.exit(f"bench_reml: git archive {args.git_ref} failed: {arch.stderr.decode().strip()}")
                subprocess.run(["tar", "-x", "-C", self.snapshot_dir], input=arch.stdout, check=True)
            else:
                shutil.copytree(REPO / "bayeslmm", self.pkg_dir, ignore=shutil.ignore_patterns("__pycache__"))
            pp = os.pathsep.join(x for x in (self.snapshot_dir, self.env.get("PYTHONPATH")) if x)
            self.bayeslmm_env = {**self.env, "PYTHONPATH": pp}
            self.bayeslmm_cmd = [sys.executable, "-m", "bayeslmm.cli"]
        self.rscript = shutil.which(args.rscript) if args.rscript else None
        self.availability: dict[str, str] = {}  # tool -> "" when usable, else the reason
        self.versions: dict[str, str] = {}
        self.last_cpu = 0.0  # user + system CPU seconds of the last subprocess
        self.last_others: float | None = None  # CPUs used by other processes meanwhile (average)

    def run(
        self, argv: list[str], timeout: float | None = None, env: dict[str, str] | None = None
    ) -> tuple[float, subprocess.CompletedProcess]:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        b0 = _busy_cpu_seconds()
        t0 = time.perf_counter()
        cp = subprocess.run(argv, capture_output=True, text=True, env=env or self.env, timeout=timeout, cwd=REPO)
        wall = time.perf_counter() - t0
        b1 = _busy_cpu_seconds()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        # CPU used by everything else on the machine meanwhile, in CPUs on average (None: unknown)
        self.last_others = max(0.0, (b1 - b0 - self.last_cpu) / wall) if b0 is not None and b1 is not None else None
        return wall, cp

    # ------------------------------------------------------------ availability
    def probe(self) -> None:
        try:
            _, cp = self.run([*self.bayeslmm_cmd, "--version"], timeout=120, env=self.bayeslmm_env)
            ok = cp.returncode == 0
            self.versions["bayeslmm"] = cp.stdout.strip().split()[-1] if ok else "?"
            self.availability["bayeslmm"] = "" if ok else "not installed"
        except (OSError, subprocess.TimeoutExpired):
            self.availability["bayeslmm"] = "not installed"
        if self.rscript is None:
            self.availability["lme4"] = "not installed (no Rscript)"
        else:
            try:
                _, cp = self.run(
                    [
                        self.rscript,
                        "-e",
                        'cat(R.version$major, R.version$minor, "|", '
                        'tryCatch(as.character(packageVersion("lme4")), error = function(e) "none"))',
                    ],
                    timeout=120,
                )
                r, lme4 = (cp.stdout.split("|") + ["none"])[:2]
                lme4 = lme4.strip()
                self.versions["R"] = ".".join(r.split())
                if cp.returncode != 0 or lme4 == "none":
                    self.availability["lme4"] = "not installed (no lme4)"
                else:
                    self.versions["lme4"] = lme4
                    self.availability["lme4"] = ""
            except (OSError, subprocess.TimeoutExpired):
                self.availability["lme4"] = "not installed (Rscript failed)"
        try:
            _, cp = self.run([self.python, "-c", "import statsmodels; print(statsmodels.__version__)"], timeout=120)
            ok = cp.returncode == 0
            self.versions["statsmodels"] = cp.stdout.strip() if ok else ""
            self.availability["statsmodels"] = "" if ok else "not installed"
        except (OSError, subprocess.TimeoutExpired):
            self.availability["statsmodels"] = "not installed"
        _, cp = self.run(
            [
                self.python,
                "-c",
                "import numpy, scipy, pandas; print(numpy.__version__, scipy.__version__, pandas.__version__)",
            ],
            timeout=120,
        )
        if cp.returncode == 0:
            for k, v in zip(("numpy", "scipy", "pandas"), cp.stdout.split(), strict=False):
                self.versions[k] = v

    def measured(self, wall: float) -> dict[str, Any]:
        """Wall time, CPU time and other processes' load of the last subprocess."""
        return {"wall": wall, "cpu": self.last_cpu, "others": self.last_others}

    # ------------------------------------------------------------ one run per tool
    def bayeslmm_summary_once(self, task: Task, timeout: float | None) -> float:
        """Wall seconds of the plain ``bayeslmm fit`` (printing the summary, no ``--json``)."""
        wall, cp = self.run(
            [*self.bayeslmm_cmd, "fit", task.data, "--formula", task.formula_cli or task.formula],
            timeout=timeout,
            env=self.bayeslmm_env,
        )
        if cp.returncode != 0:
            raise RuntimeError(_last_line(cp.stderr) or f"exit status {cp.returncode}")
        return wall

    def bayeslmm_once(self, task: Task, timeout: float | None) -> dict[str, Any]:
        formula = task.formula_cli or task.formula
        wall, cp = self.run(
            [*self.bayeslmm_cmd, "fit", task.data, "--formula", formula, "--method", "REML", "--json"],
            timeout=timeout,
            env=self.bayeslmm_env,
        )
        if cp.returncode != 0:
            raise RuntimeError(_last_line(cp.stderr) or f"exit status {cp.returncode}")
        d = json.loads(cp.stdout)
        opt = d.get("optimizer") or {}
        return {
            **self.measured(wall),
            "fit": float(d["fit_seconds"]),
            "loglik": float(d["loglik"]),
            "n_evals": opt.get("n_evals"),
            "converged": d.get("converged"),
            "messages": opt.get("messages") or [],
        }

    def lme4_once(self, task: Task, timeout: float | None) -> dict[str, Any]:
        cc = task.r_colclasses
        read = f"read.csv({_r_str(task.data)}" + (f", colClasses = {cc})" if cc else ")")
        code = (
            "suppressMessages(library(lme4)); "
            f"d <- {read}; "
            f"st <- system.time(m <- lmer({task.formula}, data = d, REML = TRUE)); "
            "msg <- m@optinfo$conv$lme4$messages; "
            'cat(sprintf("BENCH %.10f %.6f %d %s\\n", as.numeric(logLik(m)), st[["elapsed"]], '
            'as.integer(m@optinfo$feval), if (is.null(msg)) "" else paste(msg, collapse = "; ")))'
        )
        wall, cp = self.run([self.rscript, "-e", code], timeout=timeout)
        line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if cp.returncode != 0 or line is None:
            raise RuntimeError(_last_line(cp.stderr) or f"exit status {cp.returncode}")
        parts = line.split(" ", 4)
        msg = parts[4].strip() if len(parts) > 4 else ""
        return {
            **self.measured(wall),
            "fit": float(parts[2]),
            "loglik": float(parts[1]),
            "n_evals": int(parts[3]),
            "converged": not msg,
            "messages": [msg] if msg else [],
        }

    def statsmodels_once(self, task: Task, timeout: float | None) -> dict[str, Any]:
        sm = task.statsmodels
        assert sm is not None
        code = (
            "import json, time, warnings\n"
            "import pandas as pd\n"
            "import statsmodels.formula.api as smf\n"
            f"d = pd.read_csv({sm['data']!r}, dtype={sm.get('dtype', {})!r})\n"
            "t0 = time.perf_counter()\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            f"    m = smf.mixedlm({sm['fixed']!r}, d, groups={sm['groups']!r}, re_formula={sm.get('re')!r})"
            ".fit(reml=True)\n"
            "fit = time.perf_counter() - t0\n"
            "print('BENCH ' + json.dumps({'loglik': float(m.llf), 'fit': fit, 'converged': bool(m.converged),"
            " 'warnings': sorted({str(x.message).splitlines()[0] for x in w})}))\n"
        )
        wall, cp = self.run([self.python, "-c", code], timeout=timeout)
        line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if cp.returncode != 0 or line is None:
            raise RuntimeError(_last_line(cp.stderr) or f"exit status {cp.returncode}")
        d = json.loads(line[6:])
        return {
            **self.measured(wall),
            "fit": d["fit"],
            "loglik": d["loglik"],
            "n_evals": None,
            "converged": d["converged"],
            "messages": d["warnings"],
        }


def _busy_cpu_seconds() -> float | None:
    """Non-idle CPU seconds of the whole machine since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait; no guest double count
    except (OSError, ValueError, IndexError):
        return None


def _r_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _last_line(s: str) -> str:
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


# --------------------------------------------------------------------------- data
def pig_csv() -> tuple[str, str]:
    if PIG_CSV_SHARED.exists():
        return str(PIG_CSV_SHARED), f"{PIG_CSV_SHARED}"
    path = DATA / "pig_weights.csv"
    if not path.exists():
        from bayeslmm import datasets

        DATA.mkdir(parents=True, exist_ok=True)
        datasets.load("pig_weights").to_csv(path, index=False)
    return str(path), f"{path} (bundled dataset exported)"


def insteval_csv(runner: Runner) -> tuple[str, str, bool]:
    """Path, description, and whether it is the real InstEval (else a simulation)."""
    real = DATA / "insteval.csv"
    if real.exists():
        return str(real), f"{real.relative_to(REPO)} (lme4::InstEval, cached)", True
    if runner.availability.get("lme4") == "":
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = DATA / f".insteval.{os.getpid()}.csv"
        code = (
            "suppressMessages(library(lme4)); d <- InstEval[, c('s', 'd', 'dept', 'service', 'y')]; "
            "for (v in c('s', 'd', 'dept', 'service')) d[[v]] <- as.character(d[[v]]); "
            f"write.csv(d, {_r_str(str(tmp))}, row.names = FALSE)"
        )
        _, cp = runner.run([runner.rscript, "-e", code], timeout=600)
        if cp.returncode == 0 and tmp.exists():
            os.replace(tmp, real)
            return str(real), f"{real.relative_to(REPO)} (lme4::InstEval, exported now)", True
        tmp.unlink(missing_ok=True)
        print(f"warning: exporting InstEval from R failed ({_last_line(cp.stderr)}); simulating", file=sys.stderr)
    sim = DATA / f"insteval_sim_seed{SEED}.csv"
    if not sim.exists():
        simulate_insteval(sim)
    return str(sim), f"{sim.relative_to(REPO)} (simulated, InstEval dimensions, seed {SEED})", False


def _write_csv(df: Any, path: Path) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def simulate_insteval(path: Path) -> None:
    """Crossed data of InstEval's dimensions: 73,421 rows, s 2,972, d 1,128 (nested in 14 dept)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    n, ns, nd, ndept = 73_421, 2_972, 1_128, 14
    s = np.concatenate([np.arange(ns), rng.integers(0, ns, n - ns)])  # every level observed
    d = np.concatenate([np.arange(nd), rng.integers(0, nd, n - nd)])
    rng.shuffle(s)
    rng.shuffle(d)
    dept_of_d = np.concatenate([np.arange(ndept), rng.integers(0, ndept, nd - ndept)])
    dept = dept_of_d[d]
    service = rng.binomial(1, 0.43, n)
    eta = (
        3.28
        - 0.09 * service
        + rng.normal(0, 0.33, ns)[s]
        + rng.normal(0, 0.51, nd)[d]
        + rng.normal(0, 0.08, ndept)[dept]
    )
    y = np.clip(np.round(eta + rng.normal(0, 1.18, n)), 1, 5)
    df = pd.DataFrame({"s": s + 1, "d": d + 1, "dept": dept + 1, "service": service, "y": y.astype(int)})
    for c in ("s", "d", "dept", "service"):
        df[c] = df[c].astype(str)
    _write_csv(df, path)


def slope_csv() -> tuple[str, str]:
    path = DATA / f"slope100k_seed{SEED}.csv"
    if not path.exists():
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(SEED)
        n, ng = 100_000, 10_000
        g = np.repeat(np.arange(ng), n // ng)
        x = rng.normal(0, 1, n)
        cov = np.array([[1.0, 0.3 * 1.0 * 0.5], [0.3 * 1.0 * 0.5, 0.25]])  # sd 1 and 0.5, corr 0.3
        b = rng.multivariate_normal([0, 0], cov, ng)
        y = 2.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(0, 1.0, n)
        _write_csv(pd.DataFrame({"g": [f"g{i:05d}" for i in g], "x": x, "y": y}), path)
    return str(path), f"{path.relative_to(REPO)} (simulated, seed {SEED})"


# --------------------------------------------------------------------------- benchmark
def measure(
    task: Task,
    tool: str,
    fn: Any,
    repeats: int,
    warmup: int,
    timeout: float | None,
    skip_note: str | None = None,
    label: str | None = None,
) -> None:
    res = task.results.setdefault(tool, ToolResult())
    for i in range(warmup + repeats):
        what = "warm-up" if i < warmup else label or f"run {i - warmup + 1}/{repeats}"
        print(f"  [{task.key}] {tool:<11} {what} ...", end="", flush=True, file=sys.stderr)
        try:
            r = fn(task, timeout)
        except subprocess.TimeoutExpired:
            res.status = skip_note or f"timed out (> {timeout:.0f} s)"
            print(f" timed out after {timeout:.0f} s", file=sys.stderr)
            return
        except Exception as e:  # noqa: BLE001 - a tool failing is a result, not a crash
            res.failures.append(f"{what}: {e}")
            print(f" failed: {e}", file=sys.stderr)
            continue
        print(
            f" {r['wall']:.2f} s (cpu {r['cpu']:.2f} s, fit {r['fit']:.3f} s, loglik {r['loglik']:.4f})",
            file=sys.stderr,
        )
        if i < warmup:
            continue
        res.process_seconds.append(r["wall"])
        res.process_cpu_seconds.append(r["cpu"])
        res.others_cpus.append(r["others"])
        res.fit_seconds.append(r["fit"])
        res.loglik = r["loglik"]
        res.n_evals = r["n_evals"]
        res.converged = r["converged"]
        for m in r["messages"]:
            if m and m not in res.notes:
                res.notes.append(m)


def run_benchmarks(args: argparse.Namespace, runner: Runner) -> list[Task]:
    quick = args.quick
    tasks: list[Task] = []
    fns = {"bayeslmm": runner.bayeslmm_once, "lme4": runner.lme4_once, "statsmodels": runner.statsmodels_once}

    def unavailable(task: Task, tool: str) -> bool:
        why = runner.availability.get(tool, "")
        if why:
            task.results[tool] = ToolResult(status=why)
        return bool(why)

    # ---- 1. pig: whole process, round robin over tools, warm-up first
    if "pig" in args.tasks:
        path, note = pig_csv()
        t = Task("pig", "1. pig weights, 432 rows, 48 pigs", "weight ~ num_weeks + (1 | id_num)", path, note)
        t.statsmodels = {"data": path, "fixed": "weight ~ num_weeks", "groups": "id_num"}
        tools = [tool for tool in TOOLS if not unavailable(t, tool)]
        reps = 2 if quick else 7
        for tool in tools:
            measure(t, tool, fns[tool], 0, 1, 300)
        for rep in range(reps):  # interleaved so drift in machine load hits every tool alike
            for tool in tools:
                if t.results.get(tool, ToolResult()).ok:
                    measure(t, tool, fns[tool], 1, 0, 300, label=f"run {rep + 1}/{reps}")
            if "bayeslmm" in tools:  # the same command without --json, as a user types it
                try:
                    w = runner.bayeslmm_summary_once(t, 300)
                    t.summary_seconds.append(w)
                    print(f"  [pig] bayeslmm    run {rep + 1}/{reps} without --json ... {w:.2f} s", file=sys.stderr)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"  [pig] bayeslmm without --json failed: {e}", file=sys.stderr)
        tasks.append(t)

    # ---- 2. InstEval-sized crossed REML
    if "insteval" in args.tasks:
        path, note, real = insteval_csv(runner)
        t = Task(
            "insteval",
            "2. InstEval crossed, 73,421 rows; s 2,972 x d 1,128 x dept 14",
            "y ~ service + (1 | s) + (1 | d) + (1 | dept)",
            path,
            note,
        )
        # the CLI reads the CSV with pandas' default types (service -> 0/1 integers): C() keeps it categorical
        t.formula_cli = "y ~ C(service) + (1 | s) + (1 | d) + (1 | dept)"
        t.r_colclasses = 'c(s = "character", d = "character", dept = "character", service = "character")'
        if not unavailable(t, "bayeslmm"):
            measure(t, "bayeslmm", fns["bayeslmm"], 1 if quick else 3, 0, 600)
        if not unavailable(t, "lme4"):
            measure(t, "lme4", fns["lme4"], 1, 0, 600)
        if not unavailable(t, "statsmodels"):
            t.results["statsmodels"] = ToolResult(status="n/a (crossed not supported)")
        tasks.append(t)

    # ---- 3. single factor, random intercept and slope, 100k rows
    if "slope100k" in args.tasks:
        path, note = slope_csv()
        t = Task(
            "slope100k", "3. random intercept + slope, 100,000 rows, 10,000 groups", "y ~ x + (1 + x | g)", path, note
        )
        t.statsmodels = {"data": path, "fixed": "y ~ x", "groups": "g", "re": "~x", "dtype": {"g": "str"}}
        if not unavailable(t, "bayeslmm"):
            measure(t, "bayeslmm", fns["bayeslmm"], 1 if quick else 3, 0, 600)
        if not unavailable(t, "lme4"):
            measure(t, "lme4", fns["lme4"], 1 if quick else 3, 0, 600)
        if not unavailable(t, "statsmodels"):
            to = args.sm_timeout
            measure(t, "statsmodels", fns["statsmodels"], 1, 0, to, skip_note=f"skipped: > {to:.0f} s (budget)")
        tasks.append(t)
    for t in tasks:  # a tool all of whose timed runs crashed
        for r in t.results.values():
            if r.ok and not r.process_seconds:
                r.status = "failed (see Checks)"
    return tasks


# --------------------------------------------------------------------------- report
def _fmt_s(xs: list[float]) -> str:
    m = median(xs)
    if m is None:
        return "-"
    f = (lambda v: f"{v:.3f}") if m < 10 else (lambda v: f"{v:.1f}")
    if len(xs) == 1:
        return f"{f(m)} (n=1)"
    return f"{f(m)} [{f(min(xs))}-{f(max(xs))}] n={len(xs)}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def loglik_checks(task: Task) -> list[str]:
    lls = {k: r.loglik for k, r in task.results.items() if r.ok and r.loglik is not None}
    out = []
    if len(lls) < 2:
        return out
    best_tool = max(lls, key=lambda k: lls[k])
    for k, v in lls.items():
        gap = lls[best_tool] - v
        if gap > LOGLIK_TOL:
            out.append(
                f"{task.key}: {k} loglik {v:.4f} is {gap:.4g} below {best_tool}'s {lls[best_tool]:.4f} "
                "(stopped short of the optimum, or a different model)"
            )
    return out


def render(tasks: list[Task], extra_problems: list[str]) -> tuple[str, list[dict], list[str]]:
    headers = ["task", "measure", *(TOOL_HEADERS[t] for t in TOOLS), "bayeslmm/lme4"]
    rows: list[list[str]] = []
    for t in tasks:
        R = {k: t.results.get(k, ToolResult(status="-")) for k in TOOLS}

        def cells(get: Any, R: dict[str, ToolResult] = R) -> list[str]:
            return [get(R[k]) if R[k].ok else R[k].status for k in TOOLS]

        b, l4 = R["bayeslmm"], R["lme4"]
        both = b.ok and l4.ok
        rows.append(
            [
                t.title,
                "whole process, s",
                *cells(lambda r: _fmt_s(r.process_seconds)),
                _ratio(median(b.process_seconds), median(l4.process_seconds)) if both else "-",
            ]
        )
        rows.append(
            [
                "",
                "fit only, s",
                *cells(lambda r: _fmt_s(r.fit_seconds)),
                _ratio(median(b.fit_seconds), median(l4.fit_seconds)) if both else "-",
            ]
        )
        lls = [r.loglik for r in R.values() if r.ok and r.loglik is not None]
        spread = f"max diff {max(lls) - min(lls):.1e}" if len(lls) > 1 else "-"
        rows.append(["", "REML log-lik", *cells(lambda r: f"{r.loglik:.4f}" if r.loglik is not None else "-"), spread])
        rows.append(["", "optimizer evals", *cells(lambda r: str(r.n_evals) if r.n_evals is not None else "-"), ""])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    sep = "-+-".join("-" * w for w in widths)

    def line(cols: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()

    out = [line(headers), sep]
    for i, r in enumerate(rows):
        if i and r[0]:
            out.append(sep)
        out.append(line(r))

    # ---- targets
    targets: list[dict] = []
    tm = {t.key: t for t in tasks}
    if "pig" in tm:
        b, l4 = tm["pig"].results.get("bayeslmm"), tm["pig"].results.get("lme4")
        if b and l4 and b.ok and l4.ok:
            ratio = median(b.process_seconds) / median(l4.process_seconds)
            value = f"{median(b.process_seconds):.3f} s / {median(l4.process_seconds):.3f} s = {ratio:.2f}"
            ss = tm["pig"].summary_seconds
            if ss:
                value += (
                    f" (without --json, printing the summary: {median(ss):.3f} s, ratio "
                    f"{median(ss) / median(l4.process_seconds):.2f})"
                )
            targets.append(
                {
                    "target": f"pig: whole `bayeslmm fit --json` process <= {PIG_RATIO_TARGET} x `Rscript` + lme4",
                    "value": value,
                    "met": ratio <= PIG_RATIO_TARGET,
                }
            )
        else:
            targets.append(
                {"target": "pig: bayeslmm/Rscript whole-process ratio", "value": "not measured", "met": None}
            )
    if "insteval" in tm:
        b, l4 = tm["insteval"].results.get("bayeslmm"), tm["insteval"].results.get("lme4")
        if b and b.ok:
            fs = median(b.fit_seconds)
            extra = (
                f" (lme4: {median(l4.fit_seconds):.1f} s, ratio {fs / median(l4.fit_seconds):.2f})"
                if l4 and l4.ok
                else ""
            )
            targets.append(
                {
                    "target": f"InstEval crossed REML: bayeslmm fit < {INSTEVAL_FIT_TARGET_S:g} s",
                    "value": f"{fs:.2f} s{extra}",
                    "met": fs < INSTEVAL_FIT_TARGET_S,
                }
            )
    out += ["", "Targets"] + ([] if targets else ["  (none for these tasks)"])
    for tg in targets:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[tg["met"]]
        out.append(f"  [{verdict:^6}] {tg['target']}: {tg['value']}")

    # ---- checks and notes
    problems: list[str] = list(extra_problems)
    notes: list[str] = []
    for t in tasks:
        problems += loglik_checks(t)
        for k, r in t.results.items():
            if r.ok and r.converged is False:
                problems.append(f"{t.key}: {k} reports non-convergence")
            for f in r.failures:
                problems.append(f"{t.key}: {k} {f}")
            slow = [
                (w, c)
                for w, c in zip(r.process_seconds, r.process_cpu_seconds, strict=True)
                if w >= 1.0 and w > BUSY_RATIO * c
            ]
            if slow:
                problems.append(
                    f"{t.key}: {k}: {len(slow)} of {len(r.process_seconds)} runs spent much longer "
                    f"on the clock than on the CPU (e.g. wall {slow[0][0]:.1f} s, CPU {slow[0][1]:.1f} s): "
                    "the machine was busy (other processes), those timings are inflated"
                )
            busy = [o for o in r.others_cpus if o is not None and o > OTHERS_MAX]
            if busy:
                problems.append(
                    f"{t.key}: {k}: during {len(busy)} of {len(r.others_cpus)} runs other processes kept "
                    f"up to {max(busy):.1f} CPUs busy: those timings may be inflated (see the JSON)"
                )
            for n in r.notes:
                notes.append(f"{t.key}: {k}: {n}")
    out += ["", "Checks"]
    out += [f"  ! {p}" for p in problems] or [
        f"  all tools that ran agree on the log-likelihood within {LOGLIK_TOL:g} and report convergence"
    ]
    if notes:
        out += ["", "Messages from the tools"] + [f"  - {n}" for n in notes]
    out += ["", "Data"] + [f"  {t.key}: {t.data_note}" for t in tasks]
    out += ["  formulas: " + "; ".join(f"{t.key}: {t.formula}" for t in tasks)]
    if "insteval" in tm:
        out.append(
            "  insteval: the CLI is given 'C(service)' because it reads the CSV with pandas' default "
            "types (service -> 0/1 integers); R reads all four columns as character"
        )
    return "\n".join(out), targets, problems


def source_state(pkg: Path, ref: str | None = None) -> dict[str, str]:
    """Git revision of the repository and a digest of the package's sources (to detect edits during a run)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode())
        h.update(f.read_bytes())
    out = {"digest": h.hexdigest()[:12], "git": "?", "dirty": ""}
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", ref or "HEAD"], capture_output=True, text=True, timeout=30
        )
        st = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "bayeslmm"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if rev.returncode == 0:
            out["git"] = rev.stdout.strip()
            n = len([ln for ln in st.stdout.splitlines() if ln.strip()])
            out["dirty"] = f"{n} uncommitted file(s) in bayeslmm/" if n and not ref else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def environment(runner: Runner, args: argparse.Namespace) -> dict[str, Any]:
    blas_env = {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": args.load0,
        "python": platform.python_version(),
        "versions": runner.versions,
        "threads": args.threads
        or f"environment ({', '.join(f'{k}={v}' for k, v in blas_env.items() if v) or 'unset'})",
        "quick": args.quick,
        "source": source_state(runner.pkg_dir, args.git_ref),
        "snapshot": runner.snapshot_dir,
        "bayeslmm_cmd": runner.bayeslmm_cmd,
        "rscript": runner.rscript,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke run)")
    p.add_argument("--json", metavar="FILE", help="also write all raw timings and results as JSON")
    p.add_argument(
        "--tasks",
        default="pig,insteval,slope100k",
        help="comma-separated subset of pig,insteval,slope100k (default: all)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="set OPENBLAS/OMP/MKL_NUM_THREADS for every subprocess (default: leave the environment)",
    )
    p.add_argument(
        "--sm-timeout",
        type=float,
        default=120.0,
        help="time budget for a statsmodels fit of the 100k task, seconds (default 120)",
    )
    p.add_argument("--rscript", default="Rscript", help="Rscript executable (default: Rscript on PATH)")
    p.add_argument(
        "--snapshot",
        action="store_true",
        help="benchmark a copy of bayeslmm/ taken at the start (when the working tree is being edited)",
    )
    p.add_argument(
        "--git-ref",
        metavar="REV",
        help="benchmark bayeslmm/ as committed at REV (e.g. HEAD), extracted with git archive",
    )
    p.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target is missed or the logliks disagree"
    )
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(args.tasks) - {"pig", "insteval", "slope100k"}
    if unknown:
        p.error(f"unknown task(s): {', '.join(sorted(unknown))}")

    args.load0 = os.getloadavg()  # before this benchmark starts anything
    runner = Runner(args)
    try:
        runner.probe()
        env = environment(runner, args)
        print(
            f"probing tools: {', '.join(f'{k}: {v or "ok"}' for k, v in runner.availability.items())}", file=sys.stderr
        )
        t0 = time.perf_counter()
        tasks = run_benchmarks(args, runner)
        changed = source_state(runner.pkg_dir)["digest"] != env["source"]["digest"]
    finally:
        if runner.snapshot_dir:
            shutil.rmtree(runner.snapshot_dir, ignore_errors=True)
    msg = "the bayeslmm sources changed while the benchmark ran: its timings may mix versions"
    table, targets, problems = render(tasks, [msg] if changed else [])

    v = runner.versions
    head = [
        f"bayeslmm REML speed benchmark ({'quick' if args.quick else 'full'} run, {env['date']})",
        f"machine: {env['cpu_count']} CPUs, {env['platform']}; BLAS threads: {env['threads']}; "
        f"load average at start {env['loadavg_at_start'][0]:.2f}",
        (
            f"bayeslmm source: committed tree of {args.git_ref} (git {env['source']['git']})"
            if args.git_ref
            else f"bayeslmm source: git {env['source']['git']}"
            + (f" + {env['source']['dirty']}" if env["source"]["dirty"] else "")
            + (" (working tree copied at start, --snapshot)" if runner.snapshot_dir else " (working tree)")
        )
        + f", sources digest {env['source']['digest']}",
        "versions: "
        + ", ".join(
            f"{k} {v[k]}" for k in ("bayeslmm", "numpy", "scipy", "pandas", "statsmodels", "R", "lme4") if v.get(k)
        ),
        "times: median wall seconds [min-max] over n runs; 'whole process' = fresh subprocess incl. start-up,",
        "imports and CSV reading; 'fit only' = timed inside that process (see the module docstring).",
        "",
    ]
    print("\n".join(head) + "\n" + table + f"\n\n(benchmark took {time.perf_counter() - t0:.0f} s)")

    if args.json:
        payload = {
            "environment": env,
            "tasks": [
                {
                    "key": t.key,
                    "title": t.title,
                    "formula": t.formula,
                    "data": t.data,
                    "data_note": t.data_note,
                    "results": {k: asdict(r) for k, r in t.results.items()},
                    **({"bayeslmm_summary_output_seconds": t.summary_seconds} if t.summary_seconds else {}),
                }
                for t in tasks
            ],
            "targets": targets,
            "problems": problems,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2))
    if args.check and (problems or any(tg["met"] is False for tg in targets)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
