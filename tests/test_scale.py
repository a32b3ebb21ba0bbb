"""Larger designs: crossed factors of InstEval's size and many groups (slow tier)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import bayeslmm


def test_import_does_not_load_the_bayesian_stack() -> None:
    code = (
        "import bayeslmm, sys; bayeslmm.lmm; "
        "print(sorted(m for m in ('pymc', 'pytensor', 'arviz', 'scipy.stats') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_insteval_sized_crossed_design_fits_and_recovers_the_variances() -> None:
    """73,421 rows; crossed factors with 2,972, 1,128 and 14 levels (simulated, known truth)."""
    rng = np.random.default_rng(11)
    n, ls, ld, ldept = 73_421, 2_972, 1_128, 14
    s = rng.integers(0, ls, n)
    d = rng.integers(0, ld, n)
    dept = d % ldept  # lecturers belong to departments, as in InstEval
    service = rng.integers(0, 2, n)
    sd = {"s": 0.33, "d": 0.52, "dept": 0.08, "resid": 1.18}
    y = (
        3.2
        - 0.07 * service
        + sd["s"] * rng.normal(size=ls)[s]
        + sd["d"] * rng.normal(size=ld)[d]
        + sd["dept"] * rng.normal(size=ldept)[dept]
        + sd["resid"] * rng.normal(size=n)
    )
    df = pd.DataFrame({"y": y, "service": service.astype(str), "s": s, "d": d, "dept": dept})
    fit = bayeslmm.lmm("y ~ service + (1 | s) + (1 | d) + (1 | dept)", df)
    assert fit.converged and fit.ngroups == {"s": ls, "d": ld, "dept": ldept}
    vc = fit.varcorr().set_index("grp").sdcor
    assert vc["s"] == pytest.approx(sd["s"], rel=0.1)
    assert vc["d"] == pytest.approx(sd["d"], rel=0.1)
    assert vc["Residual"] == pytest.approx(sd["resid"], rel=0.02)
    # a stationary point of the criterion: no lower value around it
    for k in range(3):
        for h in (-1e-3, 1e-3):
            th = fit.theta.copy()
            th[k] = max(th[k] + h, 0.0)
            assert fit.objective(th) >= fit.criterion - 1e-7
    # BLUPs and conditional sds exist for every level of every factor
    re = fit.ranef()
    assert len(re) == ls + ld + ldept and np.isfinite(re.condsd).all()


@pytest.mark.slow
def test_many_groups_random_slopes() -> None:
    """100,000 rows in 20,000 groups with correlated intercepts and slopes (batched small kernels)."""
    rng = np.random.default_rng(5)
    m, k = 20_000, 5
    g = np.repeat(np.arange(m), k)
    x = rng.normal(size=m * k)
    L = np.linalg.cholesky(np.array([[1.0, 0.3], [0.3, 0.5]]))
    b = rng.normal(size=(m, 2)) @ L.T
    y = 1 + 2 * x + b[g, 0] + b[g, 1] * x + 0.7 * rng.normal(size=m * k)
    fit = bayeslmm.lmm("y ~ x + (1 + x | g)", pd.DataFrame({"y": y, "x": x, "g": g}))
    assert fit.converged
    D = fit.cov_matrices()["g"]
    np.testing.assert_allclose(D, [[1.0, 0.3], [0.3, 0.5]], atol=0.05)
    assert fit.sigma == pytest.approx(0.7, rel=0.02)


def test_import_loads_no_numerical_stack() -> None:
    """``import bayeslmm`` (and its command line) loads neither NumPy nor pandas: the command line
    installs its Ctrl-C handling before they load, and a start-up that needs none of them stays short."""
    code = (
        "import sys, bayeslmm, bayeslmm.cli; "
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules)); "
        "print(callable(bayeslmm.lmm), 'lmm' in dir(bayeslmm))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True True"
