"""Serial residual processes (OU plus nugget, AR(1)): the Kalman engine against dense formulas."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError, FormulaError
from bayeslmm.freq import GroupedEngine
from bayeslmm.spec import parse_formula
from bayeslmm.spec._residual import parse_residual


def irregular_frame(seed: int, m: int = 25) -> pd.DataFrame:
    """Subjects with 1-7 visits at irregular times, some repeated times, rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(m):
        k = 1 + rng.integers(0, 7)
        t = np.cumsum(rng.exponential(1.0, k))
        if k >= 3 and i % 4 == 0:
            t[2] = t[1]  # a repeated time
        b0 = 0.8 * rng.normal()
        w = np.zeros(k)
        for j in range(k):
            r = 0.6 ** (t[j] - t[j - 1]) if j else 0.0
            w[j] = r * w[j - 1] + np.sqrt(1.5 * (1 - r * r)) * rng.normal() if j else np.sqrt(1.5) * rng.normal()
        y = 2 + 0.5 * t + b0 + w + np.sqrt(0.5) * rng.normal(size=k)
        for j in range(k):
            rows.append({"id": f"s{i:02d}", "t": t[j], "x": rng.normal(), "y": y[j]})
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def unpack(obj: GroupedEngine, psi: np.ndarray) -> tuple:
    """``(T_k list, D_rel, decay, var_w, kappa)`` of a Markov residual structure at ``psi``."""
    return (obj.factors(psi), obj.D_rel(psi), *obj.structure.markov_process(obj.split(psi)[1]))


def dense_serial_criterion(obj: GroupedEngine, theta: np.ndarray, reml: bool) -> float:
    """``-2 l`` from the per-group dense covariance ``Z D Z' + var_w P + kappa I`` (profiled scale)."""
    spec = obj.spec
    res = spec.residual
    _, D, decay, var_w, kappa = unpack(obj, theta)
    n, p = spec.X.shape
    Vinv_blocks, logdet = {}, 0.0
    XtVX = np.zeros((p, p))
    XtVy = np.zeros(p)
    for g in range(len(res.levels)):
        idx = np.flatnonzero(res.codes == g)
        t = res.t[idx]
        if res.kind == "ou":
            P = decay ** np.abs(t[:, None] - t[None, :])
        else:
            order = np.argsort(t, kind="stable")
            rank = np.empty(idx.size)
            rank[order] = np.arange(idx.size)
            P = decay ** np.abs(rank[:, None] - rank[None, :])
        V = var_w * P + kappa * np.eye(idx.size)
        if D is not None:
            Z = obj.Z[idx]
            V = V + Z @ D @ Z.T
        Vi = np.linalg.inv(V)
        logdet += np.linalg.slogdet(V)[1]
        Vinv_blocks[g] = (idx, Vi)
        XtVX += spec.X[idx].T @ Vi @ spec.X[idx]
        XtVy += spec.X[idx].T @ Vi @ spec.y[idx]
    beta = np.linalg.solve(XtVX, XtVy)
    r2 = 0.0
    for idx, Vi in Vinv_blocks.values():
        r = spec.y[idx] - spec.X[idx] @ beta
        r2 += r @ Vi @ r
    if reml:
        return logdet + np.linalg.slogdet(XtVX)[1] + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
    return logdet + n * (1 + np.log(2 * np.pi * r2 / n))


@pytest.mark.parametrize("residual", ["ou(t | id)", "ar1(t | id)"])
@pytest.mark.parametrize("formula", ["y ~ t", "y ~ t + x + (1 | id)", "y ~ t + (1 + t | id)"])
@pytest.mark.parametrize("reml", [True, False])
def test_kalman_criterion_equals_dense_formula(residual: str, formula: str, reml: bool) -> None:
    spec = bayeslmm.model_spec(formula, irregular_frame(1), residual=residual)
    obj = GroupedEngine(spec, reml=reml)
    rng = np.random.default_rng(2)
    lo, hi = obj.bounds()
    for _ in range(3):
        th = np.where(np.isfinite(lo), 0, -1) + rng.uniform(0.1, 0.9, lo.size) * np.where(np.isfinite(lo), 1, 2)
        if residual.startswith("ou"):
            th[-2:] = rng.uniform(0.1, 2.0), rng.uniform(0.1, 0.9)
        assert obj(th) == pytest.approx(dense_serial_criterion(obj, th, reml), abs=1e-8, rel=1e-11)


def test_ou_fit_recovers_a_known_process_and_reports_it() -> None:
    frames = [irregular_frame(s, m=60) for s in range(3)]
    df = pd.concat([f.assign(id=f.id + f"_{k}") for k, f in enumerate(frames)], ignore_index=True)
    fit = bayeslmm.lmm("y ~ t + (1 | id)", df, residual="ou(t | id)")
    rp = fit.residual_params()
    assert rp["kind"] == "ou" and fit.converged
    assert rp["rho"] == pytest.approx(0.6, abs=0.2)
    assert rp["process_var"] + rp["nugget"] == pytest.approx(2.0, rel=0.35)
    assert fit.fixef["t"] == pytest.approx(0.5, abs=0.1)
    d = fit.to_dict()
    assert set(d["residual"]) == {"kind", "process_var", "rho", "nugget"}
    assert d["varcorr"][-1]["vcov"] == pytest.approx(rp["nugget"])
    json.dumps(d)
    s = str(fit.summary())
    assert "Residual process: ou(t | id)" in s and "Serial process: Ornstein-Uhlenbeck" in s
    assert "Normalized residuals" in s


def test_blups_and_conditional_variances_equal_dense_formulas() -> None:
    df = irregular_frame(4)
    fit = bayeslmm.lmm("y ~ t + (1 + t | id)", df, residual="ou(t | id)")
    obj = fit.objective
    spec = fit.spec
    res = spec.residual
    _, D, decay, var_w, kappa = unpack(obj, fit.psi)
    s2 = fit.scale2
    b = fit.ranef_dict()["id"].to_numpy()
    cond = fit.cond_cov()["id"]
    beta = fit.fixef.to_numpy()
    for g in range(len(res.levels)):
        idx = np.flatnonzero(res.codes == g)
        t = res.t[idx]
        Z = obj.Z[idx]
        V = s2 * (Z @ D @ Z.T + var_w * decay ** np.abs(t[:, None] - t[None, :]) + kappa * np.eye(idx.size))
        Dg = s2 * D
        Vi = np.linalg.inv(V)
        np.testing.assert_allclose(b[g], Dg @ Z.T @ Vi @ (spec.y[idx] - spec.X[idx] @ beta), atol=1e-8)
        np.testing.assert_allclose(cond[g], Dg - Dg @ Z.T @ Vi @ Z @ Dg, atol=1e-8)


def test_models_with_only_a_serial_process_and_single_observation_groups() -> None:
    df = irregular_frame(5)
    assert (df.groupby("id").size() == 1).any()
    fit = bayeslmm.lmm("y ~ t", df, residual="ar1(t | id)")
    assert fit.converged and fit.spec.terms == ()
    assert -1 < fit.residual_params()["phi"] < 1
    assert fit.ranef_dict() == {}


def test_input_order_does_not_matter() -> None:
    df = irregular_frame(6)
    a = bayeslmm.lmm("y ~ t + (1 | id)", df, residual="ou(t | id)")
    b = bayeslmm.lmm("y ~ t + (1 | id)", df.sort_values(["id", "t"]), residual="ou(t | id)")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-9)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-5, atol=1e-7)


def test_simulation_has_the_process_covariance() -> None:
    df = irregular_frame(7, m=40)
    fit = bayeslmm.lmm("y ~ t", df, residual="ou(t | id)")
    sims = fit.simulate(3000, seed=1)
    rp = fit.residual_params()
    res = fit.spec.residual
    g = np.flatnonzero(np.bincount(res.codes) >= 3)[0]
    idx = np.flatnonzero(res.codes == g)[:2]
    dt = abs(res.t[idx[0]] - res.t[idx[1]])
    emp = np.cov(sims[idx[0]], sims[idx[1]])
    assert emp[0, 1] == pytest.approx(rp["process_var"] * rp["rho"] ** dt, abs=0.15)
    assert emp[0, 0] == pytest.approx(rp["process_var"] + rp["nugget"], rel=0.1)


@pytest.mark.parametrize(
    "text, match",
    [
        ("ou(t)", "not understood"),
        ("car(t | id)", "not understood"),
        ("ou(t | a/b/c)", "one factor"),
    ],
)
def test_bad_residual_specifications(text: str, match: str) -> None:
    with pytest.raises(FormulaError, match=match):
        parse_residual(text)


def test_residual_errors_with_data() -> None:
    df = irregular_frame(8).assign(tt="a", g2=lambda d: d.id.str[:2])
    with pytest.raises(DataError, match="not found"):
        bayeslmm.lmm("y ~ t", df, residual="ou(nope | id)")
    with pytest.raises(DataError, match="must be numeric"):
        bayeslmm.lmm("y ~ t", df, residual="ou(tt | id)")
    with pytest.raises(DataError, match="own grouping factor"):
        bayeslmm.lmm("y ~ t + (1 | g2)", df, residual="ou(t | id)")
    assert parse_formula("y ~ t").bars == ()


def test_process_predictions_equal_dense_conditional_expectations() -> None:
    df = irregular_frame(9)
    fit = bayeslmm.lmm("y ~ t + (1 | id)", df, residual="ou(t | id)")
    spec, res, obj = fit.spec, fit.spec.residual, fit.objective
    _, D, rho, var_w, kappa = unpack(obj, fit.psi)
    s2 = fit.scale2
    beta = fit.fixef.to_numpy()
    g = int(np.argmax(np.bincount(res.codes)))
    idx = np.flatnonzero(res.codes == g)
    t = res.t[idx]
    t_new = np.array([t.min() - 0.5, (t.min() + t.max()) / 2, t.max() + 1.3])
    level = res.levels[g]
    new = pd.DataFrame({"id": level, "t": t_new, "x": 0.0})
    # dense: joint covariance of (observations, process at new times) for this group
    tt = np.r_[t, t_new]
    C = s2 * var_w * rho ** np.abs(tt[:, None] - tt[None, :])
    V = C[: t.size, : t.size] + s2 * (D[0, 0] + kappa * np.eye(t.size))
    cross_w = C[t.size :, : t.size]  # Cov(w_new, y)
    cross_r = cross_w + s2 * D[0, 0]  # Cov(b + w_new, y)
    r = spec.y[idx] - spec.X[idx] @ beta
    Vi = np.linalg.inv(V)
    pr = fit.process(new)
    np.testing.assert_allclose(pr.process, cross_w @ Vi @ r, atol=1e-8)
    var_w_new = s2 * var_w - np.einsum("ij,jk,ik->i", cross_w, Vi, cross_w)
    np.testing.assert_allclose(pr.process_sd, np.sqrt(var_w_new), atol=1e-8)
    np.testing.assert_allclose(pr.random, cross_r @ Vi @ r, atol=1e-8)
    var_r = s2 * (var_w + D[0, 0]) - np.einsum("ij,jk,ik->i", cross_r, Vi, cross_r)
    np.testing.assert_allclose(pr.random_sd, np.sqrt(var_r), atol=1e-8)
    p = fit.predict(new, se_fit=True)
    np.testing.assert_allclose(p.fit, beta[0] + beta[1] * t_new + cross_r @ Vi @ r, atol=1e-8)
    # at observed times: E(w | y) from the same dense formula
    obs = fit.process()
    Cw = s2 * var_w * rho ** np.abs(t[:, None] - t[None, :])
    np.testing.assert_allclose(obs.process.to_numpy()[idx], Cw @ Vi @ r, atol=1e-8)


def test_normalized_residuals_are_the_whitened_residuals() -> None:
    df = irregular_frame(10)
    fit = bayeslmm.lmm("y ~ t", df, residual="ou(t | id)")
    res, obj = fit.spec.residual, fit.objective
    _, _, rho, var_w, kappa = unpack(obj, fit.psi)
    nr = fit.residuals(scaled=True)
    beta = fit.fixef.to_numpy()
    g = int(np.argmax(np.bincount(res.codes)))
    idx = np.flatnonzero(res.codes == g)
    idx = idx[np.argsort(res.t[idx], kind="stable")]
    t = res.t[idx]
    V = fit.scale2 * (var_w * rho ** np.abs(t[:, None] - t[None, :]) + kappa * np.eye(t.size))
    L = np.linalg.cholesky(V)
    np.testing.assert_allclose(nr[idx], np.linalg.solve(L, fit.spec.y[idx] - fit.spec.X[idx] @ beta), atol=1e-8)


def _panel(seed: int, m: int, process_var: float, nugget: float, rho: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = 6
    t = np.cumsum(rng.exponential(1.0, (m, k)), axis=1)
    w = np.zeros((m, k))
    w[:, 0] = np.sqrt(process_var) * rng.normal(size=m)
    for j in range(1, k):
        r = rho ** (t[:, j] - t[:, j - 1])
        w[:, j] = r * w[:, j - 1] + np.sqrt(process_var * (1 - r * r)) * rng.normal(size=m)
    y = 1 + 0.3 * t + w + np.sqrt(nugget) * rng.normal(size=(m, k))
    return pd.DataFrame({"id": np.repeat(np.arange(m), k), "t": t.ravel(), "y": y.ravel()})


def test_no_process_puts_nu_on_its_bound_and_says_so() -> None:
    df = _panel(3, 150, process_var=0.0, nugget=1.0, rho=0.5)
    fit = bayeslmm.lmm("y ~ t", df, residual="ou(t | id)")
    assert np.isfinite(fit.loglik) and fit.singular
    assert any("boundary" in m and ("nu" in m or "decay" in m) for m in fit.optimizer.messages)
    rp = fit.residual_params()
    assert rp["process_var"] < 1e-3 or rp["rho"] < 1e-3


def test_no_nugget_estimates_a_nugget_near_zero() -> None:
    df = _panel(3, 150, process_var=1.0, nugget=0.0, rho=0.6)
    fit = bayeslmm.lmm("y ~ t", df, residual="ou(t | id)")
    rp = fit.residual_params()
    assert np.isfinite(fit.loglik) and rp["nugget"] < 0.01 * rp["process_var"]
    assert rp["rho"] == pytest.approx(0.6, abs=0.05)


def test_independent_data_drive_rho_to_its_bound() -> None:
    rng = np.random.default_rng(4)
    df = _panel(4, 150, process_var=1.0, nugget=0.3, rho=0.6)
    df["y"] = 1 + 0.3 * df.t + rng.normal(size=len(df))  # no correlation at all
    fit = bayeslmm.lmm("y ~ t", df, residual="ar1(t | id)")
    assert abs(fit.residual_params()["phi"]) < 0.15
    fit = bayeslmm.lmm("y ~ t", df, residual="ou(t | id)")
    assert fit.singular and np.isfinite(fit.loglik)


@pytest.mark.slow
def test_ou_with_100k_subjects() -> None:
    """100,000 subjects x 10 irregular times (1M rows): the scale of the issue's benchmark."""
    rng = np.random.default_rng(0)
    m, k = 100_000, 10
    t = np.cumsum(rng.exponential(1.0, (m, k)), axis=1)
    w = np.zeros((m, k))
    w[:, 0] = np.sqrt(1.5) * rng.normal(size=m)
    for j in range(1, k):
        r = 0.7 ** (t[:, j] - t[:, j - 1])
        w[:, j] = r * w[:, j - 1] + np.sqrt(1.5 * (1 - r * r)) * rng.normal(size=m)
    y = 1 + 0.3 * t + w + np.sqrt(0.5) * rng.normal(size=(m, k))
    df = pd.DataFrame({"id": np.repeat(np.arange(m), k), "t": t.ravel(), "y": y.ravel()})
    fit = bayeslmm.lmm("y ~ t", df, residual="ou(t | id)")
    rp = fit.residual_params()
    assert fit.converged
    assert rp["rho"] == pytest.approx(0.7, abs=0.01)
    assert rp["process_var"] == pytest.approx(1.5, rel=0.03)
    assert rp["nugget"] == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("residual", ["ou(t | id)", "ar1(t | id)"])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_serial_expected_information_equals_the_dense_trace_formula(residual: str, method: str) -> None:
    from bayeslmm.freq._information import expected_information_grouped

    df = irregular_frame(11, m=15)
    fit = bayeslmm.lmm("y ~ t + (1 | id)", df, residual=residual, method=method)
    info, names = expected_information_grouped(fit)
    spec, res = fit.spec, fit.spec.residual
    rp = fit.residual_params()
    n = spec.n
    same = res.codes[:, None] == res.codes[None, :]
    if res.kind == "ou":
        lag = np.abs(res.t[:, None] - res.t[None, :])
    else:
        rank = np.empty(n)
        for g in range(len(res.levels)):
            idx = np.flatnonzero(res.codes == g)
            rank[idx[np.argsort(res.t[idx], kind="stable")]] = np.arange(idx.size)
        lag = np.abs(rank[:, None] - rank[None, :])
    decay = rp["rho"] if res.kind == "ou" else rp["phi"]
    R = np.where(same, decay**lag, 0.0)
    with np.errstate(divide="ignore"):
        dR = np.where(same & (lag > 0), lag * decay ** (lag - 1), 0.0)  # d rho^lag / d rho
    J = same.astype(float)  # random intercept: Z S Z'
    tau2 = fit.cov_matrices()["id"][0, 0]
    if res.kind == "ou":
        V = tau2 * J + rp["process_var"] * R + rp["nugget"] * np.eye(n)
        dV = [J, R, rp["process_var"] * dR, np.eye(n)]
    else:
        V = tau2 * J + rp["sigma2"] * R
        dV = [J, rp["sigma2"] * dR, R]
    Vi = np.linalg.inv(V)
    X = spec.X
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi) if method == "REML" else Vi
    dense = np.array([[0.5 * np.trace(P @ a @ P @ b) for b in dV] for a in dV])
    np.testing.assert_allclose(info, dense, rtol=1e-8, atol=1e-10)
    se = fit.vc_se()
    assert list(se.grp) == ["id", "Residual", "process", *(["process"] if res.kind == "ou" else [])]
    assert (se.se_vcov > 0).all()
    assert fit.to_dict()["vc_se"] is not None
