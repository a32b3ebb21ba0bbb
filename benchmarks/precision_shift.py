"""Log-likelihood and SE errors when y or a covariate with a random slope carries a large constant.

Usage: ``python benchmarks/precision_shift.py`` (put an older checkout first on ``PYTHONPATH`` to
measure it). The data are simulated on a 2^-20 grid, so ``y + c`` and ``x + c`` are exact and every
difference from the unshifted fit is the engine's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import bayeslmm

GRID = 2.0**20


def main() -> None:
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(2024)
    g = np.repeat(np.arange(30), 8)
    x = rng.uniform(0, 9, g.size)
    b = rng.multivariate_normal([0, 0], [[16.0, 1.0], [1.0, 1.5]], size=30)
    y = 40 + 3.0 * x + b[g, 0] + b[g, 1] * x + rng.normal(0, 2.5, g.size)
    d = pd.DataFrame({"y": np.round(y * GRID) / GRID, "x": np.round(x * GRID) / GRID, "g": [f"s{i:02d}" for i in g]})
    formula = "y ~ x + (x | g)"
    base = bayeslmm.lmm(formula, d)
    print(f"{'shift':>14} | {'d loglik':>10} | {'rel. SE(x)':>10} | {'rel. slope':>10}")
    for what in ("y", "x"):
        for k in (1e4, 1e6, 1e8):
            c = float(np.round(k * d[what].std() * GRID) / GRID)
            label = f"{what} + {k:.0e} sd"
            try:
                f = bayeslmm.lmm(formula, d.assign(**{what: d[what] + c}))
                print(
                    f"{label:>14} | {f.loglik - base.loglik:+10.2e} | {f.se['x'] / base.se['x'] - 1:+10.1e} | "
                    f"{f.fixef['x'] / base.fixef['x'] - 1:+10.1e}"
                )
            except Exception as e:  # an old engine may drop the column or fail
                print(f"{label:>14} | {type(e).__name__}: {str(e)[:50]}")


if __name__ == "__main__":
    main()
