"""Golden tests: serial-correlation models against nlme (gls/lme with corExp(nugget) and corAR1).

Reference values and the mapping of nlme's parameters to ours (``rho = exp(-1/range)``,
``process_var = sigma^2 (1 - nug)``, ``nugget = sigma^2 nug``) come from
``reference/make_nlme_reference.R``; data in ``data/``. Tolerances are the issue's:
estimates to 1e-4 relative, log-likelihood to 1e-4 absolute (we get ~1e-8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm

HERE = Path(__file__).resolve().parent
CASES = json.loads((HERE / "reference" / "nlme_serial.json").read_text())


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


def test_process_parameters(fitted) -> None:
    case, fit = fitted
    ref = case["residual_params"]
    got = fit.residual_params()
    assert got["kind"] == ref["kind"]
    for k, v in ref.items():
        if k != "kind":
            assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-8), k


def test_random_effects(fitted) -> None:
    case, fit = fitted
    vc = fit.varcorr()
    ours = vc[vc.grp != "Residual"]
    assert len(ours) == len(case["varcorr"])
    for row, ref in zip(ours.itertuples(), case["varcorr"]):
        assert (row.grp, row.var1) == (ref["grp"], ref["var1"])
        assert row.vcov == pytest.approx(ref["vcov"], rel=1e-4)
    if case.get("ranef"):
        re = fit.ranef().set_index(["grpvar", "term", "grp"]).condval
        sd = np.sqrt(fit.scale2)
        for r in case["ranef"]:
            assert re[(r["grpvar"], r["term"], r["grp"])] == pytest.approx(r["condval"], abs=1e-4 * sd)
