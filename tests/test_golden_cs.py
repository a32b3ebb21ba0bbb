"""Golden tests: compound-symmetry residuals ``cs(t | g)`` against nlme (gls/lme with corCompSymm).

Within each level of g, ``Var(e_ij) = sigma2`` and ``Corr(e_ij, e_ik) = rho`` for j != k (t plays
no role).  Reference values and the mapping of nlme's parameters to ours (``rho = Rho``,
``sigma2 = sigma^2``) come from ``reference/make_nlme_cs_reference.R``; data in ``data/``.  The cases
are gls fits (bodyweight, ovary and sim_cs, whose estimated rho is negative) and lme fits with a
random slope but no random intercept (``(0 + Time | Rat)``) plus ``cs(Time | Rat)``.
Tolerances: estimates to 1e-4 relative, log-likelihood to 1e-4 absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm

HERE = Path(__file__).resolve().parent
CASES = json.loads((HERE / "reference" / "nlme_cs.json").read_text())


@pytest.fixture(scope="module", params=sorted(CASES), ids=sorted(CASES))
def fitted(request):
    case = CASES[request.param]
    factors = case["factors"] if isinstance(case["factors"], list) else [case["factors"]]
    df = pd.read_csv(HERE / "data" / f"{case['data']}.csv", dtype={f: str for f in factors})
    return case, bayeslmm.lmm(case["formula"], df, method=case["method"], residual=case["residual"])


def test_loglik_and_aic(fitted) -> None:
    case, fit = fitted
    assert fit.nobs == case["nobs"]
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-4)
    assert fit.npar == case["df"]
    assert fit.aic == pytest.approx(case["aic"], abs=2e-4)
    assert fit.converged


def test_fixed_effects_and_standard_errors(fitted) -> None:
    case, fit = fitted
    assert list(fit.fixef.index) == list(case["fixef"])
    np.testing.assert_allclose(
        fit.fixef.to_numpy(),
        list(case["fixef"].values()),
        rtol=1e-4,
        atol=1e-4 * max(abs(v) for v in case["fixef"].values()) * 1e-2,
    )
    np.testing.assert_allclose(fit.se.to_numpy(), list(case["se"].values()), rtol=1e-4)


def test_residual_parameters(fitted) -> None:
    case, fit = fitted
    ref = case["residual_params"]
    got = fit.residual_params()
    assert got["kind"] == ref["kind"] == "cs"
    assert set(got) == {"kind", "rho", "sigma2"}
    for k in ("rho", "sigma2"):
        assert got[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-8), k


def test_residual_row_of_varcorr(fitted) -> None:
    case, fit = fitted
    vc = fit.varcorr()
    res = vc[vc.grp == "Residual"]
    assert len(res) == 1
    assert res.vcov.iloc[0] == pytest.approx(case["residual_params"]["sigma2"], rel=1e-4)


def test_random_effects(fitted) -> None:
    case, fit = fitted
    vc = fit.varcorr()
    ours = vc[vc.grp != "Residual"]
    assert len(ours) == len(case["varcorr"])
    for row, ref in zip(ours.itertuples(), case["varcorr"]):
        assert (row.grp, row.var1) == (ref["grp"], ref["var1"])
        assert row.vcov == pytest.approx(ref["vcov"], rel=1e-4)
    if case.get("ranef"):
        # tolerance on the scale of each term's random-effect sd (the residual sd is far larger here:
        # sigma2 ~ 15000 for the bodyweight slope cases, whose BLUPs are ~0.1)
        sd = {(v["grp"], v["var1"]): np.sqrt(v["vcov"]) for v in case["varcorr"] if v["var2"] == ""}
        re = fit.ranef().set_index(["grpvar", "term", "grp"]).condval
        for r in case["ranef"]:
            tol = 1e-4 * sd[(r["grpvar"], r["term"])]
            assert re[(r["grpvar"], r["term"], r["grp"])] == pytest.approx(r["condval"], abs=tol)
