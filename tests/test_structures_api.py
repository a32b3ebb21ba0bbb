"""The residual structures as results: ``fit --json``'s ``residual``, ``variance`` and ``marginal_cov``, the
summary, predictions (conditional means, kriging), simulation, standard errors, Satterthwaite's df,
likelihood-ratio tests of nested structures, :func:`bayeslmm.compare_structures` and the command line.

Against direct dense formulas: ``X_new beta + V_new,obs V_obs^-1 (y_obs - X_obs beta)`` for predictions,
a numeric Hessian of the REML criterion written out for ``us`` for the standard errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError, OptionError

ORTHO = Path(__file__).resolve().parent / "data" / "orthodont.csv"
FORM = "distance ~ age * Sex"


@pytest.fixture(scope="module")
def ortho() -> pd.DataFrame:
    return pd.read_csv(ORTHO)


@pytest.fixture(scope="module")
def fits(ortho: pd.DataFrame) -> dict[str, bayeslmm.LMMFit]:
    """REML fits of one mean model with cs, csh and us by visit (age) within Subject."""
    return {k: bayeslmm.lmm(FORM, ortho, residual=f"{k}(age | Subject)") for k in ("cs", "csh", "us")}


@pytest.fixture(scope="module")
def field() -> pd.DataFrame:
    """60 points of a field with an exponential correlation (range 3) and a nugget."""
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 10, (60, 2))
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    C = 2.0 * np.exp(-d / 3.0) + 0.3 * np.eye(60)
    z = 1.0 + 0.5 * xy[:, 0] + np.linalg.cholesky(C) @ rng.standard_normal(60)
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "z": z, "g": np.repeat(["a", "b", "c"], [25, 20, 15])})


@pytest.fixture(scope="module")
def kriged(field: pd.DataFrame) -> bayeslmm.LMMFit:
    return bayeslmm.lmm("z ~ x", field, residual="exp(x + y | 1)")


# -------------------------------------------------------------------------- JSON and marginal_cov
def test_json_reports_us_in_the_documented_parameterisation(fits) -> None:
    fit = fits["us"]
    d = fit.to_dict()
    json.dumps(d, allow_nan=False)
    res = d["residual"]
    assert res["kind"] == "us" and res["levels"] == ["8", "10", "12", "14"]
    S = np.asarray(res["cov"])
    np.testing.assert_allclose(S, S.T)
    np.testing.assert_allclose(np.sqrt(np.diag(S)), res["sd"])
    np.testing.assert_allclose(S / np.outer(res["sd"], res["sd"]), res["corr"], atol=1e-12)
    assert res["sigma2"] == pytest.approx(S[0, 0]) and res["cov(8,14)"] == pytest.approx(S[0, 3])
    assert d["variance"] is None
    mc = d["marginal_cov"]
    assert mc["rows"] == res["levels"] and mc["complete"] and mc["group"] in fit.spec.residual.levels
    np.testing.assert_allclose(mc["cov"], S)  # no random effects: V_i = R_i
    assert fit.residual_params()["kind"] == "us" and "cov" not in fit.residual_params()  # unchanged


def test_marginal_cov_adds_the_random_effects(ortho: pd.DataFrame) -> None:
    fit = bayeslmm.lmm(FORM + " + (1 | Subject)", ortho, residual="diag(age | Subject)")
    V = fit.marginal_cov()
    tau = float(fit.cov_matrices()["Subject"][0, 0])
    sd = np.asarray(fit.residual_report()["sd"])
    np.testing.assert_allclose(V.to_numpy(), tau + np.diag(sd**2), rtol=1e-12)
    assert list(V.index) == ["8", "10", "12", "14"] and V.attrs["complete"]
    one = fit.marginal_cov(group="M05")
    assert one.attrs["group"] == "M05"
    with pytest.raises(DataError, match="not a level"):
        fit.marginal_cov(group="nobody")


def test_a_structure_per_stratum_reports_each_stratum(ortho: pd.DataFrame) -> None:
    fit = bayeslmm.lmm(FORM, ortho, residual="us(age | Sex/Subject)")
    d = fit.to_dict()
    res, mc = d["residual"], d["marginal_cov"]
    assert res["kind"] == "us" and res["by"] == "Sex" and set(res["strata"]) == {"Female", "Male"}
    assert mc["by"] == "Sex" and set(mc["strata"]) == {"Female", "Male"}
    for st in ("Female", "Male"):
        np.testing.assert_allclose(mc["strata"][st]["cov"], res["strata"][st]["cov"], rtol=1e-12)
        np.testing.assert_allclose(fit.marginal_cov(stratum=st).to_numpy(), res["strata"][st]["cov"], rtol=1e-12)
    assert not np.allclose(res["strata"]["Female"]["cov"], res["strata"]["Male"]["cov"])
    assert fit.marginal_cov(group="F03").attrs["stratum"] == "Female"
    s = str(fit.summary())
    assert "Sex = Female:" in s and "Sex = Male:" in s and "Residual process: us(age | Sex/Subject)" in s


def test_variance_function_and_gls_in_json_and_summary(ortho: pd.DataFrame) -> None:
    fit = bayeslmm.lmm(FORM, ortho, residual="cs(age | Subject)", variance="ident(Sex)")
    d = fit.to_dict()
    assert d["residual"]["kind"] == "cs" and set(d["residual"]) == {"kind", "rho", "sigma2"}
    v = d["variance"]
    assert v["kind"] == "ident" and v["column"] == "Sex" and v["ratios"]["Female"] == 1.0
    rho, s2, k = d["residual"]["rho"], d["residual"]["sigma2"], v["ratios"]["Male"]
    V = fit.marginal_cov(group="M01").to_numpy()  # a boy: sd ratio k at every visit
    np.testing.assert_allclose(V, k**2 * s2 * (rho + (1 - rho) * np.eye(4)), rtol=1e-10)
    gls = bayeslmm.lmm(FORM, ortho, variance="power(age)")
    g = gls.to_dict()
    assert g["residual"] == {"kind": "iid", "sigma2": pytest.approx(gls.sigma2)}
    assert g["variance"]["kind"] == "power" and np.isfinite(g["variance"]["delta"])
    s = str(gls.summary())
    assert "variance function power(age)" in s and "Number of obs: 108\n" in s


def test_spatial_report_and_the_largest_group(field: pd.DataFrame, kriged) -> None:
    rp = kriged.to_dict()["residual"]
    assert rp["kind"] == "exp" and set(rp) == {"kind", "range", "nugget", "sill"}
    fit = bayeslmm.lmm("z ~ x", field, residual="exp(x + y | g, nugget=false)")
    V = fit.marginal_cov()
    assert V.attrs["group"] == "a" and V.shape == (25, 25)  # the group with the most observations
    assert V.index[0].startswith("(") and fit.residual_report()["nugget"] == 0.0
    np.testing.assert_allclose(np.diag(V.to_numpy()), fit.residual_report()["sill"])


def test_summary_prints_variances_sds_and_correlations_per_visit(fits) -> None:
    s = str(fits["us"].summary())
    rep = fits["us"].residual_report()
    assert "Residual covariance us(age | Subject) over the levels of age" in s and "Correlation" in s
    line = next(x for x in s.splitlines() if x.startswith(" 14 "))
    cells = line.split()
    assert float(cells[1]) == pytest.approx(rep["cov"][3][3], rel=1e-4)
    assert float(cells[2]) == pytest.approx(rep["sd"][3], rel=1e-3)
    assert [float(c) for c in cells[3:]] == pytest.approx(rep["corr"][3][:3], abs=6e-4)
    assert "Correlation parameters: rho" in str(fits["csh"].summary())


# -------------------------------------------------------------------------- predictions and simulation
def test_new_visits_of_known_subjects_are_conditional_means(ortho: pd.DataFrame) -> None:
    hold = ortho.sample(12, random_state=3)
    train = ortho.drop(hold.index)
    fit = bayeslmm.lmm(FORM, train, residual="us(age | Subject)")
    rep = fit.residual_report()
    S, lev = np.asarray(rep["cov"]), {v: i for i, v in enumerate(rep["levels"])}
    beta = fit.fixef.to_numpy()
    rows = train.loc[fit.spec.row_index]
    expect = []
    for _, r in hold.iterrows():
        own = np.flatnonzero(rows.Subject.to_numpy() == r.Subject)
        vo = [lev[str(a)] for a in rows.age.to_numpy()[own]]
        x = np.array([1.0, r.age, r.Sex == "Male", r.age * (r.Sex == "Male")])
        resid = fit.spec.y[own] - fit.spec.X[own] @ beta
        expect.append(x @ beta + S[lev[str(r.age)], vo] @ np.linalg.solve(S[np.ix_(vo, vo)], resid))
    np.testing.assert_allclose(fit.predict(hold), expect, rtol=1e-10)


def test_prediction_at_new_locations_is_kriging(field: pd.DataFrame, kriged) -> None:
    rp = kriged.residual_report()
    new = pd.DataFrame({"x": [1.0, 5.0, 7.5], "y": [2.0, 5.0, 9.0]})
    xy = field[["x", "y"]].to_numpy()

    def c(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
        return rp["sill"] * (1 - rp["nugget"]) * np.exp(-d / rp["range"])

    Voo = c(xy, xy) + rp["sill"] * rp["nugget"] * np.eye(len(xy))
    beta = kriged.fixef.to_numpy()
    resid = kriged.spec.y - kriged.spec.X @ beta
    expect = np.c_[np.ones(3), new.x] @ beta + c(new.to_numpy(), xy) @ np.linalg.solve(Voo, resid)
    np.testing.assert_allclose(kriged.predict(new), expect, rtol=1e-9)


def test_simulated_responses_have_the_marginal_covariance(fits) -> None:
    fit = fits["us"]
    nsim = 2000
    e = fit.simulate(nsim, seed=1) - (fit.spec.X @ fit.fixef.to_numpy())[:, None]
    res = fit.spec.residual
    M = np.zeros((len(res.levels), 4, nsim))
    M[res.codes, res.feats["visit"].astype(int)] = e
    S = np.einsum("gan,gbn->ab", M, M) / (len(res.levels) * nsim)
    V = fit.marginal_cov().to_numpy()
    se = np.sqrt((np.outer(np.diag(V), np.diag(V)) + V**2) / (len(res.levels) * nsim))  # of a sample covariance
    assert np.all(np.abs(S - V) < 4.5 * se)


# -------------------------------------------------------------------------- standard errors, df
def test_se_of_the_first_visit_variance_matches_the_numeric_hessian(fits) -> None:
    from bayeslmm.freq._numderiv import hessian

    fit = fits["us"]
    vc = fit.vc_se()
    proc = vc[vc.grp == "process"]
    assert len(proc) == 9 and np.all(np.isfinite(vc.se_vcov)) and np.all(vc.se_vcov > 0)
    res, X, y = fit.spec.residual, fit.spec.X, fit.spec.y
    vis = res.feats["visit"].astype(int)
    groups = [np.flatnonzero(res.codes == g) for g in range(len(res.levels))]
    rp = fit.residual_params()
    keys = [k for k in rp if k != "kind"]

    def deviance(v: np.ndarray) -> float:  # -2 REML log-likelihood + const, beta profiled, dense per subject
        S = res.structure.sigma(dict(zip(keys, v)))
        if np.min(np.linalg.eigvalsh(S)) <= 0:
            return np.inf
        ld, A, b, c = 0.0, 0.0, 0.0, 0.0
        for r in groups:
            Vi = S[np.ix_(vis[r], vis[r])]
            W = np.linalg.inv(Vi)
            ld += np.linalg.slogdet(Vi)[1]
            A, b, c = A + X[r].T @ W @ X[r], b + X[r].T @ W @ y[r], c + y[r] @ W @ y[r]
        return ld + np.linalg.slogdet(A)[1] + c - b @ np.linalg.solve(A, b)

    cov = np.linalg.inv(hessian(deviance, np.array([rp[k] for k in keys])) / 2)
    se_hess = np.sqrt(cov[keys.index("sigma2"), keys.index("sigma2")])
    se_info = float(vc.se_vcov[vc.grp == "Residual"].iloc[0])
    assert se_info == pytest.approx(se_hess, rel=0.05)
    st = fit.satterthwaite()
    assert np.all(np.isfinite(st.df)) and np.all(st.df > 1) and np.all(st.df < fit.nobs)


# -------------------------------------------------------------------------- likelihood-ratio tests
def test_lrt_of_nested_structures_by_reml(fits) -> None:
    cs, csh, us = fits["cs"], fits["csh"], fits["us"]
    a = bayeslmm.lrt(cs, csh)
    b = bayeslmm.lrt(csh, us)
    c = bayeslmm.lrt(cs, us)
    assert (a.df, b.df, c.df) == (3, 5, 8) and a.refit is None and c.refit is None
    assert a.statistic == pytest.approx(2 * (csh.loglik - cs.loglik))
    assert c.statistic == pytest.approx(a.statistic + b.statistic)
    assert a.null["residual"] == "cs(age | Subject)" and "inside the alternative" in " ".join(a.notes)
    with pytest.raises(DataError, match="not a special case of cs"):
        bayeslmm.lrt(us, cs)


def test_lrt_refuses_reml_with_other_fixed_effects(ortho: pd.DataFrame, fits) -> None:
    null = bayeslmm.lmm("distance ~ age", ortho, residual="cs(age | Subject)")
    with pytest.raises(DataError, match="same fixed effects"):
        bayeslmm.lrt(null, fits["us"])
    ml = [
        bayeslmm.lmm(f, ortho, method="ML", residual=r)
        for f, r in (("distance ~ age", "cs(age | Subject)"), (FORM, "us(age | Subject)"))
    ]
    r = bayeslmm.lrt(*ml)
    assert r.df == 2 + 8 and r.refit is None


def test_lrt_ar1_inside_ar1h_and_a_nugget(ortho: pd.DataFrame, field: pd.DataFrame, kriged) -> None:
    ar1 = bayeslmm.lmm(FORM, ortho, residual="ar1(age | Subject)")
    ar1h = bayeslmm.lmm(FORM, ortho, residual="ar1h(age | Subject)")
    assert bayeslmm.lrt(ar1, ar1h).df == 3
    gap = ortho[~((ortho.Subject == "M01") & (ortho.age == 10))]
    a, b = (bayeslmm.lmm(FORM, gap, residual=f"{k}(age | Subject)") for k in ("ar1", "ar1h"))
    with pytest.raises(DataError, match="skips a visit"):
        bayeslmm.lrt(a, b)
    no_nug = bayeslmm.lmm("z ~ x", field, residual="exp(x + y | 1, nugget=false)")
    r = bayeslmm.lrt(no_nug, kriged)
    assert r.df == 1 and r.mixture == [(0.5, 0), (0.5, 1)] and r.p_boundary == pytest.approx(r.p / 2)


# -------------------------------------------------------------------------- compare_structures
def test_compare_structures_bare_names_and_texts(ortho: pd.DataFrame, fits) -> None:
    tab = bayeslmm.compare_structures(FORM, ortho, ["cs", "csh", "us", "ar1"], visit="age", group="Subject", lrt=True)
    assert list(tab.structure) == [f"{k}(age | Subject)" for k in ("cs", "csh", "us", "ar1")]
    assert list(tab.columns[:7]) == ["structure", "npar_cov", "npar", "loglik", "AIC", "BIC", "converged"]
    assert list(tab.npar_cov) == [2, 5, 10, 2] and list(tab.npar) == [6, 9, 14, 6]
    assert tab.loglik[2] == pytest.approx(fits["us"].loglik, rel=1e-9)
    assert tab.AIC[0] == pytest.approx(fits["cs"].aic) and tab.BIC[2] == pytest.approx(fits["us"].bic)
    assert tab.vs[1] == "cs(age | Subject)" and tab.Df[2] == 5 and np.isnan(tab.Chisq[3])  # ar1 is not inside us
    assert tab.Chisq[1] == pytest.approx(bayeslmm.lrt(fits["cs"], fits["csh"]).statistic)
    texts = bayeslmm.compare_structures(FORM, ortho, ["cs(age | Subject)", "us(age | Subject)"], lrt=[(0, 1)])
    assert texts.Df[1] == 8 and texts.loglik[1] == pytest.approx(tab.loglik[2])
    with pytest.raises(OptionError, match="bare name"):
        bayeslmm.compare_structures(FORM, ortho, ["us"])
    with pytest.raises(DataError, match="not nested|not a special case"):
        bayeslmm.compare_structures(FORM, ortho, ["us(age | Subject)", "cs(age | Subject)"], lrt=[(0, 1)])


# -------------------------------------------------------------------------- command line
def test_command_line_json_structures_and_lrt(cli) -> None:
    r = cli("fit", ORTHO, "-f", FORM, "--residual", "cs(age | Subject)", "--variance", "ident(Sex)", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["variance"]["kind"] == "ident" and d["residual"]["kind"] == "cs" and len(d["marginal_cov"]["cov"]) == 4
    r = cli(
        "structures",
        ORTHO,
        "-f",
        FORM,
        "--structures",
        "cs,us",
        "--visit",
        "age",
        "--group",
        "Subject",
        "--lrt",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["structures"]
    assert [x["npar_cov"] for x in rows] == [2, 10] and rows[1]["Df"] == 8
    r = cli(
        "lrt",
        ORTHO,
        "--null",
        FORM,
        "--alt",
        FORM,
        "--null-residual",
        "cs(age | Subject)",
        "--alt-residual",
        "csh(age | Subject)",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["df"] == 3
    r = cli("fit", "--help")
    assert "toeph" in r.stdout and "--variance" in r.stdout and "nugget=false" in r.stdout
