"""Structures by visit, spatial structures, variance functions and strata in the PyMC models.

* The ``marginal``/``restricted`` potentials (and one ``conditional``) equal dense ``n x n`` normal
  densities whose ``R`` is written here from the definitions (not from :mod:`bayeslmm.cov`), at random
  points of the model; the posterior's ``process`` holds the natural parameters of the model's
  variables (``us``: ``sd_a sd_b (L L')[a, b]`` from the LKJ factor; ``toep``: the autocorrelations of
  the partial autocorrelations); the ``restricted`` potential is the REML engine's
  :func:`~bayeslmm.bayes.log_marginal` at the same parameters; the gradient through the indexing
  ``Sigma[v_j, v_k]`` and the LKJ factor is that of finite differences.
* REML as a limit: the maximiser of the ``restricted`` potential (a flat prior, no Jacobian) tends to
  the REML estimate of every natural parameter as ``beta_prior_var`` grows.
* ``compare`` has a row for every parameter of the REML fit (prior draws in place of a posterior; a
  short NUTS run in the slow tier).

The graphs are evaluated in PyTensor's FAST_COMPILE mode.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.optimize
import scipy.stats

import bayeslmm
from bayeslmm.bayes import build_model, log_marginal, process_labels
from bayeslmm.bayes._sample import _D_blocks
from bayeslmm.cov._visit import autocorrelations
from bayeslmm.linalg import term_matrix

DATA = Path(__file__).parent / "data"

#: name -> (formula, data, residual, variance)
CASES = {
    "us": ("distance ~ C(age) * Sex", "orthodont", "us(age | Subject)", None),
    "csh": ("distance ~ C(age) * Sex", "orthodont", "csh(age | Subject)", None),
    "toeph": ("distance ~ C(age) * Sex", "orthodont", "toeph(age | Subject)", None),
    "exp": ("yield ~ variety", "wheat2", "exp(latitude + longitude | Block)", None),
    "ident": ("y ~ base + arm * visit", "mmrm", "cs(visit | id)", "ident(visit)"),
    "strata": ("y ~ base + arm * visit", "mmrm", "us(visit | arm/id)", None),
    "diag+slope": ("distance ~ C(age) + Sex + (0 + age | Subject)", "orthodont", "diag(age | Subject)", None),
    "power+intercept": ("distance ~ age + Sex + (1 | Subject)", "orthodont", None, "power(age)"),
}
VISITS = ("us", "csh", "ar1h", "toep", "toeph", "diag")


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    mmrm = pd.read_csv(DATA / "sim_mmrm.csv")
    ids = sorted(mmrm.id.unique())
    return {
        "orthodont": pd.read_csv(DATA / "orthodont.csv"),
        "wheat2": pd.read_csv(DATA / "wheat2.csv"),
        "mmrm": mmrm[mmrm.id.isin(ids[::5])].reset_index(drop=True),  # 40 subjects, both arms, missed visits
    }


@pytest.fixture(scope="module")
def fits(frames):
    """The REML fit of a case, fitted once."""
    cache: dict[str, Any] = {}

    def fit(case: str) -> Any:
        if case not in cache:
            formula, data, residual, variance = CASES[case]
            cache[case] = bayeslmm.lmm(formula, frames[data], residual=residual, variance=variance)
        return cache[case]

    return fit


def _spec(frames, case):
    formula, data, residual, variance = CASES[case]
    return bayeslmm.model_spec(formula, frames[data], residual=residual, variance=variance)


def _point(m, seed):
    """A random point of the model's value variables: the deterministics, the free variables (on their
    own scale) and the potential there."""
    import pytensor

    rng = np.random.default_rng(seed)
    ip = {k: v + rng.normal(scale=0.4, size=np.shape(v)) for k, v in m.initial_point().items()}
    if "beta" in ip:
        ip["beta"] = rng.normal(size=ip["beta"].shape)
    names = [n for n in ("varcorr", "process", "beta") if n in m.named_vars]
    names += [n for n in m.named_vars if n.startswith("b_")]
    free = [v.name for v in m.free_RVs if not v.name.startswith(("z_", "beta"))]
    outs = m.replace_rvs_by_values([m[n] for n in [*names, *free]] + [m.potentials[0]])
    f = pytensor.function(m.value_vars, outs, on_unused_input="ignore", mode="FAST_COMPILE")
    vals = f(*[ip[v.name] for v in m.value_vars])
    return dict(zip([*names, *free, "potential"], vals))


def _natural(spec, pt):
    """``{"sigma2", *process_keys}`` of a point."""
    return {"sigma2": float(pt["varcorr"][-1])} | {
        k: float(v) for k, v in zip(process_labels(spec), np.atleast_1d(pt["process"]))
    }


# --------------------------------------------------------------------- dense R from the definitions
def _visit_cov(kind, nat, visits):
    """``(m, m)`` covariance over the visits of a structure by visit (SAS's definitions)."""
    m = len(visits)
    var = np.array([nat["sigma2"], *(nat.get(f"var({v})", nat["sigma2"]) for v in visits[1:])])
    sd = np.sqrt(var)
    if kind == "us":
        S = np.diag(var)
        for a in range(m):
            for b in range(a + 1, m):
                S[a, b] = S[b, a] = nat[f"cov({visits[a]},{visits[b]})"]
        return S
    lag = np.abs(np.subtract.outer(np.arange(m), np.arange(m)))
    if kind == "csh":
        C = np.where(lag == 0, 1.0, nat["rho"])
    elif kind == "ar1h":
        C = nat["rho"] ** lag
    elif kind in ("toep", "toeph"):
        C = np.r_[1.0, [nat[f"rho(lag {k})"] for k in range(1, m)]][lag]
    else:  # diag
        C = np.eye(m)
    return np.outer(sd, sd) * C


def _dense_R(spec, nat):
    res = spec.residual
    same = res.codes[:, None] == res.codes[None, :]
    kind = res.kind
    if kind in VISITS:
        visits = res.labels["visit"]
        v = res.feats["visit"].astype(int)
        if "stratum" not in res.feats:
            return same * _visit_cov(kind, nat, visits)[v[:, None], v[None, :]]
        R = np.zeros((spec.n, spec.n))
        st = res.feats["stratum"].astype(int)
        for a, label in enumerate(res.labels["stratum"]):
            tag = f" [{label}]"
            sub = {k[: -len(tag)]: x for k, x in nat.items() if k.endswith(tag)}
            sub["sigma2"] = nat["sigma2"] if a == 0 else nat[f"sigma2{tag}"]
            rows = st == a
            R += np.outer(rows, rows) * _visit_cov(kind, sub, visits)[v[:, None], v[None, :]]
        return same * R
    if kind == "cs":  # cs(visit | id) with ident(visit): w_i w_j sigma2 (rho + (1 - rho) [i = j])
        levels = res.labels["vf"]
        ratio = np.array([1.0, *(nat[f"ratio({lv})"] for lv in levels[1:])])
        w = ratio[res.feats["vf"].astype(int)]
        C = np.where(np.eye(spec.n, dtype=bool), 1.0, nat["rho"])
        return same * np.outer(w, w) * nat["sigma2"] * C
    if kind == "exp":
        xy = res.feats["coords"]
        d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
        eye = np.eye(spec.n)
        c = np.exp(-d / nat["range"])
        return same * nat["sigma2"] * ((1 - nat["nugget"]) * c * (1 - eye) + eye)
    if kind == "iid":  # power(x): w = |x|^delta
        w = np.abs(res.feats["vf"]) ** nat["delta"]
        return nat["sigma2"] * np.diag(w * w)
    raise AssertionError(kind)


def _dense_ZDZ(spec, vc):
    if not spec.terms:
        return np.zeros((spec.n, spec.n)), np.zeros((spec.n, 0))
    Z = np.hstack([term_matrix(t).toarray() for t in spec.terms])
    Ds = [Dk[0] for Dk in _D_blocks(spec, vc[None])]
    D = scipy.linalg.block_diag(*[np.kron(np.eye(t.nlevels), Dk) for t, Dk in zip(spec.terms, Ds)])
    return Z @ D @ Z.T, Z


def _pacf(rho):
    """Partial autocorrelations of ``rho(lag 1..K)`` (the last Yule-Walker coefficient of each order)."""
    r = np.r_[1.0, rho]
    return np.array([np.linalg.solve(scipy.linalg.toeplitz(r[:k]), r[1 : k + 1])[-1] for k in range(1, r.size)])


def _check_process(spec, pt):
    """The posterior's ``process`` is the natural parameters of the model's own variables."""
    nat = _natural(spec, pt)
    sigma = float(pt["sigma"])
    assert nat["sigma2"] == pytest.approx(sigma**2, rel=1e-12)
    st = spec.residual.structure
    for key in process_labels(spec):
        base, _, tag = key.partition(" [")
        tag = f" [{tag}" if tag else ""
        if base.startswith("var("):
            assert nat[key] == pytest.approx(float(pt[f"sd({base[4:-1]}){tag}"]) ** 2, rel=1e-12), key
        elif base == "sigma2":
            assert nat[key] == pytest.approx(float(pt[f"sigma{tag}"]) ** 2, rel=1e-12), key
        elif key in pt:  # rho, range, nugget, ratio(..), delta: the variable itself
            assert nat[key] == pytest.approx(float(pt[key]), rel=1e-12), key
    if st.name == "us":
        tags = [""] if "stratum" not in spec.residual.feats else [f" [{s}]" for s in spec.residual.labels["stratum"]]
        visits = spec.residual.labels["visit"]
        for a, tag in enumerate(tags):
            L = pt[f"us_corr_chol{tag}"]
            first = sigma if a == 0 else float(pt[f"sigma{tag}"])
            sd = np.r_[first, [float(pt[f"sd({v}){tag}"]) for v in visits[1:]]]
            S = np.outer(sd, sd) * (L @ L.T)
            for i in range(len(visits)):
                for j in range(i + 1, len(visits)):
                    assert nat[f"cov({visits[i]},{visits[j]}){tag}"] == pytest.approx(S[i, j], rel=1e-10)
    if st.name in ("toep", "toeph"):
        m = len(spec.residual.labels["visit"])
        rho = np.array([nat[f"rho(lag {k})"] for k in range(1, m)])
        pacf = np.array([float(pt[f"pacf(lag {k})"]) for k in range(1, m)])
        np.testing.assert_allclose(_pacf(rho), pacf, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------- densities
@pytest.mark.parametrize("case", ["us", "csh", "toeph", "exp", "ident", "strata", "diag+slope", "power+intercept"])
def test_marginal_and_restricted_potentials_equal_dense_densities(frames, case) -> None:
    spec = _spec(frames, case)
    tau = 7.0
    for k, param in enumerate(("marginal", "restricted")):
        m = build_model(spec, param=param, beta_prior_var=tau)
        pt = _point(m, seed=17 + k)
        _check_process(spec, pt)
        ZDZ, _ = _dense_ZDZ(spec, pt["varcorr"])
        V = ZDZ + _dense_R(spec, _natural(spec, pt))
        if param == "marginal":
            ref = scipy.stats.multivariate_normal(spec.X @ pt["beta"], V).logpdf(spec.y)
        else:
            ref = scipy.stats.multivariate_normal(np.zeros(spec.n), V + tau * spec.X @ spec.X.T).logpdf(spec.y)
        assert pt["potential"] == pytest.approx(ref, rel=1e-10, abs=1e-8), param


@pytest.mark.parametrize("case", ["diag+slope", "strata"])
def test_conditional_potential_equals_dense(frames, case) -> None:
    spec = _spec(frames, case)
    m = build_model(spec, param="conditional")
    pt = _point(m, seed=5)
    _check_process(spec, pt)
    _, Z = _dense_ZDZ(spec, pt["varcorr"])
    mu = spec.X @ pt["beta"]
    off = 0
    for t in spec.terms:
        mu = mu + Z[:, off : off + t.ncols] @ pt[f"b_{t.name}"].ravel()
        off += t.ncols
    ref = scipy.stats.multivariate_normal(mu, _dense_R(spec, _natural(spec, pt))).logpdf(spec.y)
    assert pt["potential"] == pytest.approx(ref, rel=1e-10)


def _varpar(structure, nat):
    """The REML engine's ``(psi, s)`` at the natural parameters of ``us`` or a spatial structure."""
    if structure.name == "us":
        S = structure.sigma(nat)
        L = np.linalg.cholesky(S / nat["sigma2"])
        r, c = structure._tril()
        psi = L[r, c]
    else:
        psi = np.r_[np.log(nat["range"] / structure.d0), [nat["nugget"]] if structure.nugget else []]
    got = structure.natural(psi, nat["sigma2"])
    assert all(got[k] == pytest.approx(nat[k], rel=1e-10, abs=1e-12) for k in nat)
    return np.r_[psi, np.sqrt(nat["sigma2"])]


@pytest.mark.parametrize("case", ["us", "exp"])
def test_restricted_potential_is_the_engines_log_marginal(fits, case) -> None:
    """The PyMC ``restricted`` density and the REML engine's (:func:`log_marginal`) at the same point."""
    fit = fits(case)
    tau = 50.0
    m = build_model(fit.spec, param="restricted", beta_prior_var=tau)
    pt = _point(m, seed=3)
    vp = _varpar(fit.spec.residual.structure, _natural(fit.spec, pt))
    assert pt["potential"] == pytest.approx(log_marginal(fit, vp, tau), rel=1e-10)


@pytest.mark.parametrize("case", ["us"])
def test_gradient_through_the_visit_indexing_is_exact(frames, case) -> None:
    """``Sigma[v_j, v_k]`` (advanced indexing) and the LKJ factor have the gradient of finite differences."""
    import pytensor
    import pytensor.tensor as pt

    m = build_model(_spec(frames, case), param="marginal")
    (logp,) = m.replace_rvs_by_values([m.potentials[0]])  # through the LKJ transform to the covariances
    f = pytensor.function(m.value_vars, [logp, *pt.grad(logp, m.value_vars)], mode="FAST_COMPILE")
    rng = np.random.default_rng(2)
    x = [ip + rng.normal(scale=0.3, size=np.shape(ip)) for ip in (m.initial_point()[v.name] for v in m.value_vars)]
    d = [rng.normal(size=np.shape(a)) for a in x]
    out = f(*x)
    h = 1e-5
    hi = f(*[a + h * b for a, b in zip(x, d)])[0]
    lo = f(*[a - h * b for a, b in zip(x, d)])[0]
    assert sum(float(np.sum(g * b)) for g, b in zip(out[1:], d)) == pytest.approx((hi - lo) / (2 * h), rel=1e-6)


# --------------------------------------------------------------------- the REML limit
def _potential_mode(fit, beta_prior_var, start_nat):
    """The maximiser of the ``restricted`` potential alone (a flat prior on the variance parameters and no
    Jacobian, as :func:`bayeslmm.bayes.reml_limit`), over the model's unconstrained values, from the
    natural parameters ``start_nat`` moved by about 0.2 on the unconstrained scale; its natural parameters."""
    import pytensor
    import pytensor.tensor as pt
    from threadpoolctl import threadpool_limits

    spec, st = fit.spec, fit.spec.residual.structure
    m = build_model(spec, param="restricted", beta_prior_var=beta_prior_var)
    start = {"sigma": np.sqrt(start_nat["sigma2"])}
    if st.name == "us":
        S = st.sigma(start_nat)
        sd = np.sqrt(np.diag(S))
        start |= {f"sd({v})": s for v, s in zip(st.visits[1:], sd[1:])}
        start["us_corr_chol"] = np.linalg.cholesky(S / np.outer(sd, sd))
    else:
        start |= {k: start_nat[k] for k in st.process_keys}
    fwd = []
    for v in m.value_vars:
        rv = m.values_to_rvs[v]
        fwd.append(m.rvs_to_transforms[rv].forward(pt.as_tensor(start[rv.name]), *rv.owner.inputs))
    x0 = [np.asarray(a, dtype=float) for a in pytensor.function([], fwd, mode="FAST_COMPILE")()]
    shapes = [x.shape for x in x0]
    sizes = [x.size for x in x0]
    pot, nat_out = m.replace_rvs_by_values([m.potentials[0], pt.concatenate([m["varcorr"][-1:], m["process"]])])
    k = len(m.value_vars)
    f = pytensor.function(m.value_vars, [-pot, *pt.grad(-pot, m.value_vars), nat_out], mode="FAST_COMPILE")

    def unpack(x):
        return [a.reshape(s) for a, s in zip(np.split(x, np.cumsum(sizes)[:-1]), shapes)]

    def fun(x):
        out = f(*unpack(x))
        return float(out[0]), np.concatenate([np.ravel(o) for o in out[1 : k + 1]])

    x = np.concatenate([x.ravel() for x in x0])
    x = x + 0.2 * np.random.default_rng(1).standard_normal(x.size)
    with threadpool_limits(1):  # BLAS threads on tiny matrices: ten times slower on a busy machine
        r = scipy.optimize.minimize(fun, x, jac=True, method="BFGS", options={"gtol": 1e-9})
    vals = f(*unpack(r.x))[-1]
    return dict(zip(["sigma2", *st.process_keys], map(float, vals)))


def _rel_diff(structure, a, b):
    """Largest difference of the natural parameters ``a`` from ``b``: ``us`` covariances relative to the
    product of the two sds (a difference in a correlation), the range and the sill relative to themselves,
    the nugget's share absolute."""
    if structure.name == "us":
        Sa, Sb = structure.sigma(a), structure.sigma(b)
        sd = np.sqrt(np.diag(Sb))
        return float(np.max(np.abs(Sa - Sb) / np.outer(sd, sd)))
    return max(abs(a[k] - b[k]) / (1.0 if k == "nugget" else abs(b[k])) for k in b)


@pytest.mark.parametrize("case", ["us", "exp"])
def test_restricted_mode_reaches_reml(fits, case) -> None:
    from bayeslmm.freq import minimize_bobyqa

    fit = fits(case)
    st = fit.spec.residual.structure
    # REML to a tight tolerance (as reml_limit does), so that the distance measures the limit
    lo, hi = fit.objective.bounds()
    tight = {"upper": np.r_[hi, np.inf], "ftol_abs": 1e-12, "ftol_rel": 1e-15, "xtol_abs": 1e-12, "step_scale": 0.01}
    vp = minimize_bobyqa(fit.deviance_varpar, np.r_[lo, 1e-12], fit.varpar(), **tight).x
    reml = st.natural(vp[:-1], vp[-1] ** 2)
    diffs = []
    for t in (10.0, 1e8):
        mode = _potential_mode(fit, t, reml)
        diffs.append(_rel_diff(st, mode, reml))
    assert diffs[-1] < 1e-6  # the REML estimate to the optimisers' precision
    assert diffs[0] > 1e-3  # while a prior variance of 10 on beta moves the mode


# --------------------------------------------------------------------- priors, compare rows
def test_toeplitz_partial_autocorrelations_give_positive_definite_matrices() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        pacf = rng.uniform(-0.99, 0.99, 6)
        rho = np.array(autocorrelations(list(pacf)))
        assert np.all(np.linalg.eigvalsh(scipy.linalg.toeplitz(np.r_[1.0, rho])) > 0)
        np.testing.assert_allclose(_pacf(rho), pacf, rtol=1e-8, atol=1e-10)


def test_natural_parameters_from_numpy_draws(frames) -> None:
    """``natural_from_draws`` takes NumPy as PyTensor: ``us`` from sds and an LKJ factor, ``toep`` from
    partial autocorrelations."""
    us = _spec(frames, "us").residual.structure
    C = np.array([[1.0, 0.5, 0.3, 0.2], [0.5, 1.0, 0.4, 0.1], [0.3, 0.4, 1.0, 0.6], [0.2, 0.1, 0.6, 1.0]])
    sd = np.array([2.0, 1.5, 3.0, 0.5])
    draws = {f"sd({v})": s for v, s in zip(us.visits[1:], sd[1:])} | {"corr_chol": np.linalg.cholesky(C)}
    np.testing.assert_allclose(us.sigma(us.natural_from_draws(draws, 4.0)), np.outer(sd, sd) * C, rtol=1e-12)
    toep = _spec(frames, "toeph").residual.structure
    pacf = [0.6, -0.3, 0.2]
    nat = toep.natural_from_draws({f"pacf(lag {k})": p for k, p in enumerate(pacf, 1)} | draws, 4.0)
    np.testing.assert_allclose(_pacf(np.array([nat[f"rho(lag {k})"] for k in (1, 2, 3)])), pacf, rtol=1e-12)
    assert nat["var(12)"] == pytest.approx(9.0)


def test_default_priors_and_lkj_eta(frames) -> None:
    spec = _spec(frames, "us")
    m = build_model(spec, param="restricted", lkj_eta=3.5)
    lkj = m["us_corr_chol"]
    assert "LKJCorr" in type(lkj.owner.op).__name__
    assert float(lkj.owner.inputs[-1].eval()) == 3.5 and lkj.type.shape[-2:] in ((4, 4), (None, None))
    assert "HalfNormal" in type(m["sd(10)"].owner.op).__name__
    exp = _spec(frames, "exp")
    pri = exp.residual.structure.priors(1.0)
    assert pri["range"].dist == "LogNormal" and pri["range"].params["mu"] == pytest.approx(
        np.log(exp.residual.structure.d0)
    )
    assert pri["nugget"].dist == "Beta"
    toep = _spec(frames, "toeph").residual.structure.priors(2.0)
    assert set(toep) == {"sd(10)", "sd(12)", "sd(14)", "pacf(lag 1)", "pacf(lag 2)", "pacf(lag 3)"}
    csh = _spec(frames, "csh").residual.structure.priors(2.0)
    assert csh["rho"].params == {"lower": pytest.approx(-1 / 3), "upper": 1}
    m = build_model(_spec(frames, "toeph"), priors={"pacf(lag 1)": "Uniform(lower=0, upper=1)"})
    assert float(m["pacf(lag 1)"].owner.inputs[-2].eval()) == 0.0
    with pytest.raises(bayeslmm.OptionError, match="must put its mass on"):
        build_model(_spec(frames, "exp"), priors={"nugget": "HalfNormal(sigma=1)"})
    build_model(_spec(frames, "power+intercept"), priors={"delta": "Normal(mu=0, sigma=2)"})
    with pytest.raises(bayeslmm.OptionError, match="not available for sd"):
        build_model(spec, priors={"sd(10)": "Normal(mu=0, sigma=2)"})


@pytest.mark.parametrize("case", ["us", "csh", "toeph", "exp", "ident", "strata"])
def test_compare_has_a_row_for_every_parameter(fits, case) -> None:
    """Prior draws stand in for a posterior: the rows, not the numbers."""
    import pymc as pm

    fit = fits(case)
    m = build_model(fit.spec, param="marginal")
    with m, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The effect of Potentials", category=UserWarning)
        pri = pm.sample_prior_predictive(
            draws=40, var_names=["beta", "varcorr", "process"], random_seed=1, compile_kwargs={"mode": "FAST_COMPILE"}
        )
    prior = pri.prior.to_dataset() if hasattr(pri.prior, "to_dataset") else pri.prior
    tab = bayeslmm.compare.compare(fit, {"posterior": prior}).table
    rp = fit.residual_params()
    st = fit.spec.residual.structure
    expected = [*fit.spec.fixef_names, "Residual", *(k for k in rp if k not in ("kind", st.residual_key))]
    assert expected[fit.spec.p + 1 :] == list(st.process_keys)
    assert list(tab.name) == expected
    assert list(tab.kind) == ["fixef"] * fit.spec.p + ["variance"] + ["process"] * (len(expected) - fit.spec.p - 1)
    est = tab.set_index("name").estimate
    for k in expected[fit.spec.p + 1 :]:
        assert est[k] == pytest.approx(rp[k])
    assert np.all(np.isfinite(tab[["mean", "sd", "se"]].to_numpy(dtype=float)))


@pytest.mark.slow
def test_sampled_us_posterior_compares_with_reml(fits) -> None:
    """A short NUTS run of the ``restricted`` MMRM (orthodont, ``us``): a row for every REML parameter,
    posterior medians near the REML estimates."""
    from bayeslmm.bayes import sample

    fit = fits("us")
    idata = sample(fit.spec, param="restricted", draws=300, tune=300, chains=2, seed=1)
    assert int(idata.sample_stats["diverging"].sum()) <= 5
    tab = bayeslmm.compare.compare(fit, idata).table
    rp = fit.residual_params()
    assert list(tab.name) == [*fit.spec.fixef_names, "Residual", *(k for k in rp if k not in ("kind", "sigma2"))]
    assert np.all(np.abs(tab["median"] - tab["estimate"]) < 3 * tab["sd"])
