"""The results object: estimates, BLUPs, shrinkage, prediction, simulation, printing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError

PIG = "weight ~ num_weeks + (1 | id_num)"


@pytest.fixture(scope="module")
def pigfit(pig_fit):
    """The session's pig-weights REML fit (tests/conftest.py)."""
    return pig_fit


@pytest.fixture(scope="module")
def sleepfit(sleep_fit):
    """The session's sleepstudy REML fit, correlated random intercepts and slopes."""
    return sleep_fit


def test_pig_example_matches_the_published_lme4_fit(pigfit) -> None:
    assert pigfit.criterion == pytest.approx(2033.8, abs=0.05)
    vc = pigfit.varcorr()
    assert vc.vcov.tolist() == pytest.approx([15.142, 4.395], abs=5e-4)
    assert pigfit.fixef.tolist() == pytest.approx([19.35561, 6.20990], abs=5e-6)
    assert pigfit.se.tolist() == pytest.approx([0.60314, 0.03906], abs=5e-6)
    assert pigfit.nobs == 432 and pigfit.ngroups == {"id_num": 48}
    assert pigfit.converged and not pigfit.singular


def test_closed_form_shrinkage_equals_blups(pigfit) -> None:
    shr = pigfit.shrinkage()
    assert len(shr) == 48 and (shr.n == 9).all()
    s_u2, s2 = pigfit.varcorr().vcov
    assert shr.factor.iloc[0] == pytest.approx(9 * s_u2 / (s2 + 9 * s_u2), rel=1e-12)
    np.testing.assert_allclose(shr.factor * shr.mean_resid, shr.blup, atol=1e-10)


def test_shrinkage_refuses_models_without_a_single_random_intercept(sleepfit) -> None:
    with pytest.raises(DataError, match="one random intercept"):
        sleepfit.shrinkage()


def test_fitted_and_residuals(sleepfit) -> None:
    spec = sleepfit.spec
    zb = np.zeros(spec.n)
    re = sleepfit.ranef_dict()["Subject"]
    levels = np.asarray(spec.terms[0].levels)[spec.terms[0].codes]
    zb = re.loc[levels, "(Intercept)"].to_numpy() + re.loc[levels, "Days"].to_numpy() * spec.X[:, 1]
    np.testing.assert_allclose(sleepfit.fitted, spec.X @ sleepfit.fixef.to_numpy() + zb, atol=1e-9)
    np.testing.assert_allclose(sleepfit.residuals(), spec.y - sleepfit.fitted)
    np.testing.assert_allclose(sleepfit.residuals(scaled=True), sleepfit.residuals() / sleepfit.sigma)


def test_information_criteria(sleepfit) -> None:
    k = 2 + 3 + 1
    assert sleepfit.npar == k
    assert sleepfit.aic == pytest.approx(-2 * sleepfit.loglik + 2 * k)
    assert sleepfit.bic == pytest.approx(-2 * sleepfit.loglik + np.log(180) * k)


def test_predict_on_training_rows_equals_fitted(sleepfit, sleep) -> None:
    np.testing.assert_allclose(sleepfit.predict(sleep), sleepfit.fitted, atol=1e-9)
    np.testing.assert_allclose(sleepfit.predict(sleep, re_form=False), sleepfit.spec.X @ sleepfit.fixef.to_numpy())


def test_predict_new_levels(sleepfit) -> None:
    new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["308", "999"]})
    with pytest.raises(DataError, match="new level.*999.*allow_new_levels"):
        sleepfit.predict(new)
    p = sleepfit.predict(new, allow_new_levels=True)
    pop = sleepfit.fixef["(Intercept)"] + 5 * sleepfit.fixef["Days"]
    assert p[1] == pytest.approx(pop)
    b308 = sleepfit.ranef_dict()["Subject"].loc["308"]
    assert p[0] == pytest.approx(sleepfit.fixef["(Intercept)"] + b308["(Intercept)"])


def test_predict_standard_errors(sleepfit) -> None:
    new = pd.DataFrame({"Days": [0.0, 9.0], "Subject": ["308", "308"]})
    out = sleepfit.predict(new, se_fit=True, re_form=False)
    V = sleepfit.vcov.to_numpy()
    assert out.se_fixed[0] == pytest.approx(np.sqrt(V[0, 0]))
    x = np.array([1.0, 9.0])
    assert out.se_fixed[1] == pytest.approx(np.sqrt(x @ V @ x))


def test_predict_with_categorical_and_transform(frame) -> None:
    fit = bayeslmm.lmm("y ~ I(x**2) + f + (1 | a)", frame)
    np.testing.assert_allclose(fit.predict(frame.iloc[:10]), fit.fitted[:10], atol=1e-9)


def test_simulate_is_reproducible_and_has_the_model_moments(pigfit) -> None:
    a = pigfit.simulate(3, seed=1)
    assert a.shape == (432, 3)
    np.testing.assert_array_equal(a, pigfit.simulate(3, seed=1))
    assert not np.allclose(a, pigfit.simulate(3, seed=2))
    sims = pigfit.simulate(400, seed=5)
    # marginal variance of one observation: s_u^2 + s^2; covariance within a pig: s_u^2
    s_u2, s2 = pigfit.varcorr().vcov
    assert np.var(sims[0]) == pytest.approx(s_u2 + s2, rel=0.2)
    assert np.cov(sims[0], sims[1])[0, 1] == pytest.approx(s_u2, rel=0.3)
    assert sims.mean() == pytest.approx(pigfit.fitted.mean(), rel=0.01)


def test_summary_has_the_lme4_layout(pigfit) -> None:
    s = str(pigfit.summary())
    for piece in [
        "Linear mixed model fit by REML ['lmerMod']",
        "REML criterion at convergence: 2033.8",
        "Scaled residuals:",
        "Random effects:",
        "id_num   (Intercept)",
        "Residual",
        "Number of obs: 432, groups:  id_num, 48",
        "Fixed effects:",
        "Correlation of Fixed Effects:",
        "(Intr)",
    ]:
        assert piece in s
    assert "<table" in pigfit._repr_html_()


def test_ml_summary_shows_information_criteria(models) -> None:
    s = str(models.fit(PIG, "pig_weights", method="ML").summary())
    assert "maximum likelihood" in s and "AIC" in s and "2037.9" in s


def test_to_dict_is_json_with_the_documented_fields(sleepfit) -> None:
    d = json.loads(json.dumps(sleepfit.to_dict()))
    for key in [
        "formula",
        "method",
        "nobs",
        "ngroups",
        "converged",
        "singular",
        "fit_seconds",
        "fixef",
        "se",
        "varcorr",
        "loglik",
        "reml_criterion",
        "aic",
        "bic",
        "ranef",
    ]:
        assert key in d
    assert d["varcorr"][2] == {
        "grp": "Subject",
        "var1": "(Intercept)",
        "var2": "Days",
        "vcov": pytest.approx(9.6, abs=0.1),
        "sdcor": pytest.approx(0.066, abs=0.001),
    }
    assert d["varcorr"][-1]["grp"] == "Residual" and d["varcorr"][-1]["var1"] is None
    assert len(d["ranef"]) == 36 and set(d["ranef"][0]) == {"grpvar", "term", "grp", "condval", "condsd"}


def test_singular_fit_is_detected() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(np.arange(10), 5), "y": rng.normal(size=50)})
    df["y"] -= df.groupby("g").y.transform("mean") * 0.9  # between-group variation below noise level
    fit = bayeslmm.lmm("y ~ 1 + (1 | g)", df)
    assert fit.singular and fit.theta[0] == pytest.approx(0, abs=1e-4)
    assert any("singular" in m for m in fit.optimizer.messages)
    assert "singular" in str(fit.summary())


def test_summary_of_a_model_with_a_3x3_covariance_and_three_coefficients() -> None:
    from pathlib import Path

    df = pd.read_csv(Path(__file__).parent / "data" / "machines.csv")
    s = str(bayeslmm.lmm("score ~ Machine + (0 + Machine | Worker)", df).summary())
    assert "Corr" in s and s.count("Machine[") >= 3
    corr_block = s.split("Correlation of Fixed Effects:")[1].strip().splitlines()
    assert len(corr_block) == 3  # header + two rows of the lower triangle
