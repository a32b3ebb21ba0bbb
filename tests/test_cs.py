"""Compound symmetry within groups, ``cs(t | g)``: the structure added as one class, in both paths.

The golden values against nlme's ``corCompSymm`` are in ``test_golden_cs.py``; here every piece is
checked against dense ``n x n`` formulas written independently of the package: the REML/ML criterion
at random parameters (the dense per-group kernel, with and without a random slope, unequal group
sizes), the expected information, the conditional means of the prediction, the simulation, the PyMC
``marginal``/``restricted``/``conditional`` densities; plus invariances and the errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import bayeslmm
from bayeslmm import StructureError
from bayeslmm.freq import GroupedEngine
from bayeslmm.linalg import term_matrix


def cs_frame(seed: int = 3, groups: int = 30, rho: float = 0.35) -> pd.DataFrame:
    """Groups of 2..7 rows (so that the dense kernel sees several size classes), ``y`` with CS errors."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(groups):
        m = int(rng.integers(2, 8))
        t = np.sort(rng.choice(np.arange(10.0), m, replace=False))
        C = 1.3 * ((1 - rho) * np.eye(m) + rho)
        e = np.linalg.cholesky(C) @ rng.standard_normal(m)
        x = rng.normal(size=m)
        slope = 0.4 * rng.normal()
        for j in range(m):
            rows.append((f"g{g:02d}", t[j], x[j], 2.0 + 0.5 * t[j] - 0.8 * x[j] + slope * t[j] + e[j]))
    df = pd.DataFrame(rows, columns=["g", "t", "x", "y"])
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows in no particular order


def dense_V(spec, D: np.ndarray | None, rho: float, s2: float) -> np.ndarray:
    """``V = s2 (Z D Z' + R)`` with ``R_jk = [same group] (rho + (1 - rho) [j = k])``."""
    res = spec.residual
    same = (res.codes[:, None] == res.codes[None, :]).astype(float)
    V = same * (rho + (1 - rho) * np.eye(spec.n))
    if spec.terms:
        Z = np.hstack([term_matrix(t).toarray() for t in spec.terms])
        V = V + Z @ np.kron(np.eye(spec.terms[0].nlevels), D) @ Z.T
    return s2 * V


def dense_criterion(spec, D, rho: float, reml: bool) -> float:
    """Minus twice the profiled (restricted) log-likelihood from the dense ``V_rel``."""
    V = dense_V(spec, D, rho, 1.0)
    X, y = spec.X, spec.y
    n, p = X.shape
    Vi = np.linalg.inv(V)
    A = X.T @ Vi @ X
    beta = np.linalg.solve(A, X.T @ Vi @ y)
    r = y - X @ beta
    r2 = float(r @ Vi @ r)
    logdet = np.linalg.slogdet(V)[1]
    if reml:
        return logdet + np.linalg.slogdet(A)[1] + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
    return logdet + n * (1 + np.log(2 * np.pi * r2 / n))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return cs_frame()


@pytest.fixture(scope="module")
def slope_fit(frame):
    return bayeslmm.lmm("y ~ t + x + (0 + t | g)", frame, residual="cs(t | g)")


@pytest.mark.parametrize("formula", ["y ~ t + x", "y ~ t + x + (0 + t | g)", "y ~ t + (0 + t + x | g)"])
@pytest.mark.parametrize("reml", [True, False])
def test_criterion_equals_the_dense_formula(frame, formula: str, reml: bool) -> None:
    spec = bayeslmm.model_spec(formula, frame, residual="cs(t | g)")
    engine = GroupedEngine(spec, reml=reml)
    rng = np.random.default_rng(1)
    lo, hi = engine.bounds()
    for _ in range(4):
        theta = rng.uniform(0.1, 1.5, spec.ntheta) * np.where(np.isfinite(spec.theta_lower()), 1, rng.choice([-1, 1]))
        rho = rng.uniform(lo[-1], 0.9)
        psi = np.r_[theta, rho]
        Ts = engine.factors(psi)
        D = Ts[0] @ Ts[0].T if Ts else None
        assert engine(psi) == pytest.approx(dense_criterion(spec, D, rho, reml), rel=1e-10, abs=1e-8)


def test_fit_quantities_equal_dense_gls_and_blups(slope_fit) -> None:
    fit = slope_fit
    spec = fit.spec
    rp = fit.residual_params()
    assert rp["kind"] == "cs" and set(rp) == {"kind", "rho", "sigma2"}
    D = fit.cov_matrices()["g"] / rp["sigma2"]
    V = dense_V(spec, D, rp["rho"], rp["sigma2"])
    Vi = np.linalg.inv(V)
    X, y = spec.X, spec.y
    cov = np.linalg.inv(X.T @ Vi @ X)
    beta = cov @ X.T @ Vi @ y
    np.testing.assert_allclose(fit.fixef.to_numpy(), beta, rtol=1e-9)
    np.testing.assert_allclose(fit.vcov.to_numpy(), cov, rtol=1e-8)
    Z = term_matrix(spec.terms[0]).toarray()
    b = fit.cov_matrices()["g"][0, 0] * Z.T @ Vi @ (y - X @ beta)
    np.testing.assert_allclose(fit.ranef().condval.to_numpy(), b, rtol=1e-7, atol=1e-10)
    # the Residual row of varcorr() is sigma2; npar counts beta, theta, rho and the scale
    assert fit.varcorr().vcov.iloc[-1] == pytest.approx(rp["sigma2"])
    assert fit.npar == spec.p + 1 + 1 + 1
    # normalized residuals: V^-1/2 (y - X beta) by the Cholesky factor of each group in time order
    res = spec.residual
    z = fit.residuals(scaled=True)
    for g in range(len(res.levels)):
        rows = np.flatnonzero(res.codes == g)
        rows = rows[np.argsort(res.t[rows], kind="stable")]
        L = np.linalg.cholesky(V[np.ix_(rows, rows)])
        np.testing.assert_allclose(z[rows], np.linalg.solve(L, y[rows] - X[rows] @ beta), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_expected_information_equals_the_dense_trace_formula(frame, method: str) -> None:
    from bayeslmm.freq._information import expected_information_grouped

    fit = bayeslmm.lmm("y ~ t + x + (0 + t | g)", frame, residual="cs(t | g)", method=method)
    info, names = expected_information_grouped(fit)
    spec, rp = fit.spec, fit.residual_params()
    res = spec.residual
    same = (res.codes[:, None] == res.codes[None, :]).astype(float)
    Z = term_matrix(spec.terms[0]).toarray()
    eye = np.eye(spec.n)
    d = fit.cov_matrices()["g"][0, 0]
    V = d * Z @ Z.T + rp["sigma2"] * same * (rp["rho"] + (1 - rp["rho"]) * eye)
    dV = {"g|t": Z @ Z.T, "rho": rp["sigma2"] * same * (1 - eye), "sigma2": same * (rp["rho"] + (1 - rp["rho"]) * eye)}
    assert sorted(names) == sorted(dV)
    Vi = np.linalg.inv(V)
    X = spec.X
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi) if fit.reml else Vi
    ref = np.array([[0.5 * np.trace(P @ dV[a] @ P @ dV[b]) for b in names] for a in names])
    np.testing.assert_allclose(info, ref, rtol=1e-8)
    se = fit.vc_se()
    assert list(se.grp) == ["g", "Residual", "process"] and se.var1.iloc[-1] == "rho"
    assert np.all(np.isfinite(se.se_vcov))


def test_prediction_is_the_dense_conditional_mean(slope_fit, frame) -> None:
    fit = slope_fit
    spec, rp = fit.spec, fit.residual_params()
    new = pd.DataFrame({"g": ["g03", "g03", "g07", "zz"], "t": [4.5, 11.0, 0.5, 2.0], "x": [0.1, -0.2, 0.3, 0.0]})
    pred = fit.predict(new, allow_new_levels=True, se_fit=True)
    beta = fit.fixef.to_numpy()
    d = fit.cov_matrices()["g"][0, 0]
    s2, rho = rp["sigma2"], rp["rho"]
    codes = spec.residual.codes
    r = spec.y - spec.X @ beta
    for i, row in new.iterrows():
        xb = beta[0] + beta[1] * row.t + beta[2] * row.x
        if row.g not in spec.residual.levels:
            assert pred.fit[i] == pytest.approx(xb)
            continue
        rows = np.flatnonzero(codes == spec.residual.levels.index(row.g))
        t_obs = spec.terms[0].Zraw[rows, 0]
        Voo = d * np.outer(t_obs, t_obs) + s2 * (rho + (1 - rho) * np.eye(rows.size))
        cross = d * row.t * t_obs + s2 * rho  # Cov(z'b + e_new, y_obs)
        mean = cross @ np.linalg.solve(Voo, r[rows])
        var = d * row.t**2 + s2 - cross @ np.linalg.solve(Voo, cross)
        assert pred.fit[i] == pytest.approx(xb + mean, rel=1e-9)
        assert pred.sd_random[i] == pytest.approx(np.sqrt(var), rel=1e-7)
    # at the rows of the fit the conditional residual is the residual itself: the prediction is y
    np.testing.assert_allclose(fit.predict(), spec.y, rtol=1e-9, atol=1e-9)


def test_simulated_responses_have_the_fitted_covariance(slope_fit) -> None:
    fit = slope_fit
    sims = fit.simulate(4000, seed=5)
    rp = fit.residual_params()
    d = fit.cov_matrices()["g"][0, 0]
    V = dense_V(fit.spec, np.array([[d / rp["sigma2"]]]), rp["rho"], rp["sigma2"])
    resid = sims - (fit.spec.X @ fit.fixef.to_numpy())[:, None]
    emp = np.cov(resid)
    # each sample covariance is within 5 of its standard errors sqrt((V_jj V_kk + V_jk^2) / N) of V_jk:
    # inside the first row's group (the structure's correlation) and against every other row (0)
    d_ = np.diag(V)
    se = np.sqrt((d_[0] * d_ + V[0] ** 2) / sims.shape[1])
    assert np.all(np.abs(emp[0] - V[0]) < 5 * se)
    k = np.flatnonzero(V[0] != 0)
    se_k = np.sqrt((np.outer(d_[k], d_[k]) + V[np.ix_(k, k)] ** 2) / sims.shape[1])
    assert np.all(np.abs(emp[np.ix_(k, k)] - V[np.ix_(k, k)]) < 5 * se_k)


def test_invariant_to_row_order_labels_and_shifts(frame, slope_fit) -> None:
    ref = slope_fit
    rng = np.random.default_rng(2)
    df = frame.iloc[rng.permutation(len(frame))].copy()
    df["g"] = df["g"].map(lambda s: "q" + s[::-1])  # other labels, other level order
    df["y"] = 3.0 * df["y"] + 1e6
    fit = bayeslmm.lmm("y ~ t + x + (0 + t | g)", df, residual="cs(t | g)")
    assert fit.loglik == pytest.approx(ref.loglik - len(df) * np.log(3.0) * (1 - 3 / len(df)), abs=1e-6)
    rp, rp0 = fit.residual_params(), ref.residual_params()
    assert rp["rho"] == pytest.approx(rp0["rho"], rel=1e-5)
    assert rp["sigma2"] == pytest.approx(9 * rp0["sigma2"], rel=1e-5)
    np.testing.assert_allclose(fit.fixef.to_numpy()[1:], 3 * ref.fixef.to_numpy()[1:], rtol=1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), 3 * ref.se.to_numpy(), rtol=1e-5)


def test_errors_say_what_to_do(frame) -> None:
    with pytest.raises(StructureError, match="not identifiable"):
        bayeslmm.lmm("y ~ t + (1 | g)", frame, residual="cs(t | g)")
    with pytest.raises(bayeslmm.DataError, match="own grouping factor"):
        bayeslmm.lmm("y ~ t + (0 + t | x_grp)", frame.assign(x_grp=frame.g.str[:2]), residual="cs(t | g)")
    with pytest.raises(bayeslmm.FormulaError, match="cs\\(visit \\| group\\)"):
        bayeslmm.lmm("y ~ t", frame, residual="cx(t | g)")


# -- the PyMC path -------------------------------------------------------------------------------
def _point(m, seed: int) -> dict:
    import pytensor

    rng = np.random.default_rng(seed)
    ip = {k: v + rng.normal(scale=0.3, size=np.shape(v)) for k, v in m.initial_point().items()}
    if "beta" in ip:
        ip["beta"] = rng.normal(size=ip["beta"].shape)
    names = [n for n in ("varcorr", "process", "beta") if n in m.named_vars] + [
        n for n in m.named_vars if n.startswith("b_")
    ]
    outs = m.replace_rvs_by_values([m[n] for n in names] + [m.potentials[0]])
    f = pytensor.function(m.value_vars, outs, on_unused_input="ignore", mode="FAST_COMPILE")
    return dict(zip([*names, "potential"], f(*[ip[v.name] for v in m.value_vars])))


@pytest.mark.parametrize("formula", ["y ~ t + x", "y ~ t + x + (0 + t | g)"])
def test_pymc_densities_equal_dense_formulas(frame, formula: str) -> None:
    from bayeslmm.bayes import build_model

    spec = bayeslmm.model_spec(formula, frame, residual="cs(t | g)")
    bpv = 5.0
    for param in ("marginal", "restricted", "conditional"):
        m = build_model(spec, param=param, beta_prior_var=bpv)
        assert list(m.coords["process_param"]) == ["rho"]
        pt = _point(m, seed=len(param))
        s2, rho = pt["varcorr"][-1], pt["process"][0]
        assert -1 / 6 < rho < 1  # the prior's support: groups of up to 7 rows
        D = np.array([[pt["varcorr"][0] / s2]]) if spec.terms else None
        V = dense_V(spec, D, rho, s2)
        if param == "marginal":
            ref = scipy.stats.multivariate_normal(spec.X @ pt["beta"], V).logpdf(spec.y)
        elif param == "restricted":
            ref = scipy.stats.multivariate_normal(np.zeros(spec.n), V + bpv * spec.X @ spec.X.T).logpdf(spec.y)
        else:
            mu = spec.X @ pt["beta"]
            if spec.terms:
                mu = mu + term_matrix(spec.terms[0]).toarray() @ pt["b_g"].ravel()
            R = (
                dense_V(spec, None, rho, s2)
                if not spec.terms
                else dense_V(bayeslmm.model_spec("y ~ t + x", frame, residual="cs(t | g)"), None, rho, s2)
            )
            ref = scipy.stats.multivariate_normal(mu, R).logpdf(spec.y)
        assert pt["potential"] == pytest.approx(ref, rel=1e-10, abs=1e-8), param


def test_pymc_prior_of_rho_is_checked(frame) -> None:
    from bayeslmm.bayes import build_model

    spec = bayeslmm.model_spec("y ~ t", frame, residual="cs(t | g)")
    with pytest.raises(bayeslmm.OptionError, match="must put its mass on"):
        build_model(spec, param="marginal", priors={"rho": "Uniform(lower=-1, upper=1)"})
    m = build_model(spec, param="marginal", priors={"rho": "Uniform(lower=0, upper=1)"})
    assert "rho" in m.named_vars


@pytest.mark.slow
def test_posterior_of_rho_is_near_reml_with_a_flat_ish_prior() -> None:
    """A real (small) run: the posterior of rho and sigma2 on the negative-rho data set of the goldens."""
    from pathlib import Path

    from bayeslmm.bayes import sample

    df = pd.read_csv(Path(__file__).parent / "data" / "sim_cs.csv")
    fit = bayeslmm.lmm("y ~ t + x", df, residual="cs(t | g)")
    idata = sample(fit.spec, param="restricted", draws=400, tune=400, chains=2, random_seed=11, progressbar=False)
    rho = idata.posterior["process"].values[..., 0].ravel()
    se = fit.vc_se().set_index(["grp", "var1"]).loc[("process", "rho"), "se_vcov"]
    assert abs(rho.mean() - fit.residual_params()["rho"]) < 1.5 * se
    assert rho.min() > -0.2  # the largest group has 6 rows
