"""The marginalisation module: beta integrated out, and REML as the limit of the posterior mode."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

import bayeslmm
from bayeslmm.bayes import log_marginal, reml_limit

from .conftest import random_frame
from .dense import dense_parts
from .test_serial import irregular_frame, unpack


@pytest.mark.parametrize("t", [0.5, 10.0, 1e4])
def test_log_marginal_equals_the_dense_normal_density(t: float) -> None:
    fit = bayeslmm.lmm("y ~ x + f + (1 + x | a) + (1 | b)", random_frame(5))
    rng = np.random.default_rng(1)
    vp = fit.varpar() * rng.uniform(0.7, 1.3, fit.varpar().size)
    spec = fit.spec
    _, _, Vt = dense_parts(spec, vp[:-1])
    cov = vp[-1] ** 2 * Vt + t * spec.X @ spec.X.T
    ref = scipy.stats.multivariate_normal(np.zeros(spec.n), cov).logpdf(spec.y)
    assert log_marginal(fit, vp, t) == pytest.approx(ref, abs=1e-8, rel=1e-12)


def test_log_marginal_of_a_serial_model_equals_the_dense_density() -> None:
    fit = bayeslmm.lmm("y ~ t + (1 | id)", irregular_frame(2), residual="ou(t | id)")
    spec, res, obj = fit.spec, fit.spec.residual, fit.objective
    _, D, rho, var_w, kappa = unpack(obj, fit.psi)
    s2 = fit.scale2
    same = res.codes[:, None] == res.codes[None, :]
    V = s2 * (
        D[0, 0] * same
        + var_w * np.where(same, rho ** np.abs(res.t[:, None] - res.t[None, :]), 0)
        + kappa * np.eye(spec.n)
    )
    t = 100.0
    ref = scipy.stats.multivariate_normal(np.zeros(spec.n), V + t * spec.X @ spec.X.T).logpdf(spec.y)
    assert log_marginal(fit, fit.varpar(), t) == pytest.approx(ref, abs=1e-8)


def test_the_gap_to_reml_tends_to_minus_p_half_log_2pi() -> None:
    """log p(y | psi, t) + (p/2) log t - l_REML(psi) -> -(p/2) log(2 pi), at any psi."""
    fit = bayeslmm.lmm("Reaction ~ Days + (Days | Subject)", bayeslmm.datasets.load("sleepstudy"))
    p = fit.spec.p
    for scale in (0.8, 1.0, 1.5):
        vp = fit.varpar() * scale
        reml = -0.5 * fit.deviance_varpar(vp)
        gaps = [log_marginal(fit, vp, t) + 0.5 * p * np.log(t) - reml for t in (1e2, 1e5, 1e10)]
        assert abs(gaps[2] + 0.5 * p * np.log(2 * np.pi)) < 1e-5
        assert abs(gaps[1] - gaps[2]) < abs(gaps[0] - gaps[2])  # monotone approach


@pytest.mark.parametrize(
    "formula, data, residual",
    [
        ("weight ~ num_weeks + (1 | id_num)", "pig_weights", None),
        ("Reaction ~ Days + (Days | Subject)", "sleepstudy", None),
        ("Yield ~ 1 + (1 | Batch)", "dyestuff", None),
        ("y ~ t + (1 | id)", "irregular", "ou(t | id)"),
    ],
)
def test_posterior_mode_reaches_reml(formula: str, data: str, residual: str | None) -> None:
    df = irregular_frame(3, m=40) if data == "irregular" else bayeslmm.datasets.load(data)
    path = reml_limit(bayeslmm.lmm(formula, df, residual=residual), [10.0, 1e3, 1e8])
    assert path.max_rel_diff[-1] < 1e-6
    assert path.max_rel_diff[0] > path.max_rel_diff[-1]
    d = path.to_dict()
    assert [r["grp"] for r in d["reml"]] == [r["grp"] for r in d["path"][-1]["varcorr"]]


def test_limit_refuses_ml_fits_and_bad_prior_variances(pig) -> None:
    with pytest.raises(bayeslmm.OptionError, match="REML fit"):
        reml_limit(bayeslmm.lmm("weight ~ num_weeks + (1 | id_num)", pig, method="ML"))
    with pytest.raises(bayeslmm.OptionError, match="positive"):
        reml_limit(bayeslmm.lmm("weight ~ num_weeks + (1 | id_num)", pig), [0.0, 10.0])


def test_cli_limit_json() -> None:
    from .test_cli import run

    r = run(
        "limit",
        "pig_weights",
        "--formula",
        "weight ~ num_weeks + (1 | id_num)",
        "--beta-prior-vars",
        "10,1e8",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [p["beta_prior_var"] for p in d["path"]] == [10.0, 1e8]
    assert d["path"][1]["max_rel_diff"] < 1e-6 and d["reml"][0]["vcov"] == pytest.approx(15.1419, abs=1e-3)


def test_the_bayesian_module_does_not_import_pymc() -> None:
    code = "import bayeslmm.bayes, sys; print('pymc' in sys.modules, 'pytensor' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
