"""Inference toolkit: expected information, vc SEs, LRT, bootstrap, Satterthwaite contrasts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.freq._information import expected_information, vc_standard_errors
from bayeslmm.freq._numderiv import hessian
from bayeslmm.linalg import term_matrix

from .conftest import random_frame


def _dense_information(fit) -> np.ndarray:
    spec = fit.spec
    Z = [term_matrix(t).toarray() for t in spec.terms]
    D = [fit.cov_matrices()[t.name] for t in spec.terms]
    V = sum(z @ np.kron(np.eye(t.nlevels), d) @ z.T for z, t, d in zip(Z, spec.terms, D))
    V = V + fit.sigma2 * np.eye(spec.n)
    Vi = np.linalg.inv(V)
    X = spec.X
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi) if fit.reml else Vi
    dV = []
    for z, t in zip(Z, spec.terms):
        for a, b in t.covariance.components():
            S = np.zeros((t.q, t.q))
            S[a, b] = S[b, a] = 1
            dV.append(z @ np.kron(np.eye(t.nlevels), S) @ z.T)
    dV.append(np.eye(spec.n))
    return np.array([[0.5 * np.trace(P @ a @ P @ b) for b in dV] for a in dV])


@pytest.mark.parametrize("formula", ["y ~ x + (1 | a)", "y ~ x + (1 + x | a) + (1 | b)", "y ~ f + (1 | a/b)"])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_expected_information_equals_the_dense_trace_formula(formula: str, method: str) -> None:
    fit = bayeslmm.lmm(formula, random_frame(2), method=method)
    info, names = expected_information(fit)
    assert len(names) == len(fit.varcorr())
    np.testing.assert_allclose(info, _dense_information(fit), rtol=1e-8, atol=1e-10)


def _deviance_psi(fit):
    """-2 loglik as a function of (vcov entries..., sigma^2) for a single-term model."""
    t = fit.spec.terms[0]
    pats = t.covariance.components()

    def dev(psi):
        D = np.zeros((t.q, t.q))
        for v, (a, b) in zip(psi[:-1], pats):
            D[a, b] = D[b, a] = v
        s2 = psi[-1]
        T = np.linalg.cholesky(D / s2)
        theta = np.concatenate([T[j:, j] for j in range(t.q)])
        return fit.deviance_varpar(np.r_[theta, np.sqrt(s2)])

    return dev


@pytest.mark.parametrize(
    "data, formula", [("dyestuff", "Yield ~ 1 + (1 | Batch)"), ("pig_weights", "weight ~ num_weeks + (1 | id_num)")]
)
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_expected_information_equals_the_observed_one_on_balanced_designs(models, data, formula, method) -> None:
    fit = models.fit(formula, data, method)
    info, _ = expected_information(fit)
    psi = fit.varcorr().vcov.to_numpy()
    H = hessian(_deviance_psi(fit), psi)
    np.testing.assert_allclose(info, 0.5 * H, rtol=1e-4)


def test_vc_standard_errors_and_delta_method(sleep_fit) -> None:
    fit = sleep_fit
    se = vc_standard_errors(fit)
    assert list(se.columns[-5:]) == ["se_vcov", "se_sdcor", "wald_lower", "wald_upper", "unreliable"]
    assert se.wald_lower.iloc[0] == pytest.approx(se.sdcor.iloc[0] - 1.959964 * se.se_sdcor.iloc[0], rel=1e-6)
    assert (se.se_vcov > 0).all() and not se.unreliable.any()
    v = se.iloc[0]
    assert v.se_sdcor == pytest.approx(v.se_vcov / (2 * v.sdcor))
    d = fit.to_dict()
    assert len(d["vc_se"]) == 4 and set(d["df"]) == {"(Intercept)", "Days"}


def test_score_is_zero_at_the_optimum(sleep_fit) -> None:
    fit = sleep_fit
    g = fit.score()
    assert np.max(np.abs(g)) < 1e-3


def test_singular_fits_flag_vc_se_as_unreliable() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(np.arange(10), 5), "y": rng.normal(size=50)})
    df["y"] -= df.groupby("g").y.transform("mean") * 0.9
    fit = bayeslmm.lmm("y ~ 1 + (1 | g)", df)
    assert fit.singular and vc_standard_errors(fit).unreliable.iloc[0]


def test_satterthwaite_contrasts(sleep_fit) -> None:
    fit = sleep_fit
    coefs = fit.satterthwaite()
    one = fit.satterthwaite(pd.DataFrame({"Days": [1.0]}, index=["slope"]))
    assert one.df.iloc[0] == pytest.approx(coefs.df["Days"], rel=1e-9)
    two = fit.satterthwaite(np.array([[1.0, 5.0]]))  # the mean reaction at day 5
    est = fit.fixef["(Intercept)"] + 5 * fit.fixef["Days"]
    assert two.Estimate.iloc[0] == pytest.approx(est)
    V = fit.vcov.to_numpy()
    assert two["Std. Error"].iloc[0] == pytest.approx(np.sqrt(np.array([1, 5]) @ V @ [1, 5]))
    assert 16.9 <= two.df.iloc[0] <= 170  # between (subjects - 1) and (n - p)
    with pytest.raises(bayeslmm.OptionError, match="needs 2 coefficients"):
        fit.satterthwaite(np.ones((1, 3)))


def test_lrt_checks_nesting_and_rows(pig, pig_fit) -> None:
    a = pig_fit
    b = bayeslmm.lmm("weight ~ 1 + (1 | id_num)", pig)
    with pytest.raises(bayeslmm.DataError, match="not nested"):
        bayeslmm.lrt(a, b)
    c = bayeslmm.lmm("weight ~ num_weeks + (1 | id_num)", pig.iloc[:-9])
    with pytest.raises(bayeslmm.DataError, match="different rows"):
        bayeslmm.lrt(c, a)


def test_lrt_refits_with_ml_when_fixed_effects_differ(models, sleep_fit) -> None:
    a = models.fit("Reaction ~ 1 + (Days | Subject)", "sleepstudy")
    b = sleep_fit
    r = bayeslmm.lrt(a, b)
    assert r.refit == "ML" and r.df == 1 and r.p_boundary is None
    ml = models.fit("Reaction ~ Days + (Days | Subject)", "sleepstudy", "ML")
    assert r.alt["loglik"] == pytest.approx(ml.loglik, abs=1e-7)


def test_bootstrap_is_reproducible_and_independent_of_workers(pig_fit) -> None:
    fit = pig_fit
    a = bayeslmm.bootstrap(fit, 20, seed=3, n_jobs=1, progress=False)
    b = bayeslmm.bootstrap(fit, 20, seed=3, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(a.draws, b.draws)
    ci = a.intervals(0.9)
    assert (ci["5.0%"] < ci["estimate"]).all() and (ci["estimate"] < ci["95.0%"]).all()


@pytest.mark.slow
def test_boundary_corrected_test_holds_its_size() -> None:
    """Under H0 (no random intercept) the chi-bar-square test rejects ~5%; the naive one far less."""
    rng = np.random.default_rng(17)
    reps, rej_naive, rej_bar = 300, 0, 0
    g = np.repeat(np.arange(15), 6)
    x = np.tile(np.arange(6.0), 15)
    for _ in range(reps):
        df = pd.DataFrame({"g": g, "x": x, "y": 1 + 0.5 * x + rng.normal(size=g.size)})
        r = bayeslmm.lrt(bayeslmm.lm("y ~ x", df), bayeslmm.lmm("y ~ x + (1 | g)", df))
        rej_naive += r.p < 0.05
        rej_bar += r.p_boundary < 0.05
    # binomial sd of a 5% rate over 300 replicates is 1.26%
    assert 0.025 <= rej_bar / reps <= 0.08
    assert rej_naive / reps < rej_bar / reps and rej_naive / reps <= 0.035


@pytest.mark.parametrize("case", ["pig_reml", "pig_ml", "dyestuff_reml", "sleep_uncorr_ml", "sleep_corr_ml"])
def test_profile_intervals_match_lme4(models, case: str) -> None:
    """lme4's confint(method = "profile"): interval ends to 1e-3 relative (lme4 interpolates its profile)."""
    import json
    from pathlib import Path

    ref = json.loads((Path(__file__).parent / "reference" / "profile_reference.json").read_text())[case]
    fit = models.fit(ref["formula"], ref["data"], ref["method"])
    ci = fit.confint().loc[ref["names"]]
    np.testing.assert_allclose(ci.iloc[:, 1], ref["lower"], rtol=1e-3)
    np.testing.assert_allclose(ci.iloc[:, 2], ref["upper"], rtol=1e-3)


def test_wald_intervals(sleep_fit) -> None:
    fit = sleep_fit
    ci = fit.confint(method="wald")
    assert ci.loc["Days"].iloc[1] == pytest.approx(fit.fixef["Days"] - 1.959964 * fit.se["Days"], rel=1e-6)
