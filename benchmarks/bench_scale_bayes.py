"""Scale benchmark, Bayesian path: sampling the ``marginal`` model from sufficient statistics.

What it measures
----------------
The data of ``bench_scale.py`` (``y ~ x + (1 + x | g)``, G groups, 1,000,000 by default, fixed
seed) at several numbers of rows (``--sizes``, millions; 2 and 10 by default) with the groups
held fixed. For each size, in a fresh subprocess:

* the pass over the rows (``suff_stats``, 1M-row chunks) and the REML fit from the blocks;
* building the PyMC ``marginal`` model from the blocks (``stats_model_spec`` -> ``build_model``),
  compiling its log density and gradient (PyTensor, Numba backend) and the median time of one
  gradient evaluation (20 evaluations);
* NUTS (PyMC's sampler, ``--chains`` chains of ``--tune`` + ``--draws``, ``ranef=False``: the
  random-effect draws of a million levels are not stored), its wall time, the gradient
  evaluations it made (sum of ``n_steps``) and the seconds per evaluation, the posterior means of
  the variance parameters beside REML, and R-hat / bulk ESS.

The claim it checks: once the blocks exist, one gradient (and so a NUTS step) costs the same
whatever the number of rows; the total sampling time then differs only through the number of
leapfrog steps NUTS chooses (the posterior's geometry), not through the rows.

Usage::

    .venv/bin/python benchmarks/bench_scale_bayes.py                     # 2M and 10M rows, 1M groups
    .venv/bin/python benchmarks/bench_scale_bayes.py --sizes 1,10 --groups 100000 --draws 200
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import FORMULA, _effects, _rows  # noqa: E402

GIB = 1024**3


def worker(args: argparse.Namespace) -> dict:
    import pandas as pd
    import pytensor

    from bayeslmm.bayes import build_model, sample
    from bayeslmm.suff import lmm_from_stats, suff_stats

    df = pd.DataFrame(_rows(args.n, _effects(args.groups, 1), 2))
    t0 = time.perf_counter()
    stats = suff_stats(FORMULA, df, chunk_rows=1_000_000)
    t1 = time.perf_counter()
    del df
    fit = lmm_from_stats(stats)
    t2 = time.perf_counter()
    model = build_model(fit.spec, param="marginal")
    grad = pytensor.function(model.value_vars, pytensor.grad(model.logp(), model.value_vars), mode="NUMBA")
    ip = model.initial_point()
    vals = [ip[v.name] for v in model.value_vars]
    grad(*vals)
    t3 = time.perf_counter()
    times = []
    for _ in range(20):
        a = time.perf_counter()
        grad(*vals)
        times.append(time.perf_counter() - a)
    t4 = time.perf_counter()
    idata = sample(
        fit.spec, param="marginal", draws=args.draws, tune=args.tune, chains=args.chains, seed=3, ranef=False
    )
    t5 = time.perf_counter()
    steps = int(idata.sample_stats["n_steps"].sum()) if "n_steps" in idata.sample_stats else None
    import arviz as az

    summ = az.summary(idata, var_names=["varcorr"], round_to="none")
    vc = fit.varcorr()
    return {
        "rows": args.n,
        "groups": args.groups,
        "pass_s": t1 - t0,
        "reml_s": t2 - t1,
        "compile_s": t3 - t2,
        "grad_ms": 1000 * float(np.median(times)),
        "sample_s": t5 - t4,
        "draw_steps": steps,
        "ms_per_step": 1000 * (t5 - t4) * args.chains / steps if steps else None,
        "post_mean": [float(v) for v in summ["mean"]],
        "reml": [float(v) for v in vc.vcov],
        "rhat_max": float(summ["r_hat"].max()),
        "ess_bulk_min": float(summ["ess_bulk"].min()),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2,10", help="rows in millions, comma separated (default 2,10)")
    ap.add_argument("--groups", type=int, default=1_000_000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--tune", type=int, default=200)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    rows = []
    for m in [float(s) for s in args.sizes.split(",")]:
        n = int(m * 1_000_000)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--n",
            str(n),
            "--groups",
            str(args.groups),
            "--draws",
            str(args.draws),
            "--tune",
            str(args.tune),
            "--chains",
            str(args.chains),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"worker failed for {n} rows:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(
        f"\nmarginal model of {FORMULA} from sufficient statistics, {args.groups:,} groups, "
        f"NUTS {args.chains} x ({args.tune} + {args.draws})"
    )
    hdr = (
        f"{'rows':>12} {'pass s':>8} {'REML s':>8} {'compile s':>10} {'grad ms':>8} {'sample s':>9} "
        f"{'steps':>8} {'ms/step':>8} {'R-hat':>6} {'ESS min':>8} {'div':>4} {'peak GiB':>9}"
    )
    # steps: leapfrog steps of all chains; ms/step: sampling wall time x chains / steps (the chains run in
    # parallel, one per core), which includes PyMC's compilation of the sampler's function
    print(hdr)
    for r in rows:
        print(
            f"{r['rows']:>12,} {r['pass_s']:8.1f} {r['reml_s']:8.1f} {r['compile_s']:10.1f} {r['grad_ms']:8.1f} "
            f"{r['sample_s']:9.1f} {r['draw_steps']:>8} {r['ms_per_step']:8.1f} {r['rhat_max']:6.3f} "
            f"{r['ess_bulk_min']:8.0f} {r['divergences']:>4} {r['maxrss_gib']:9.2f}"
        )
    print("\nposterior means vs REML (sd0^2, sd1^2, cov, sigma^2):")
    for r in rows:
        print(
            f"  {r['rows']:>12,}: posterior {np.round(r['post_mean'], 4).tolist()}  REML "
            f"{np.round(r['reml'], 4).tolist()}"
        )


if __name__ == "__main__":
    main()
