"""The conditional PyMC model built from a ModelSpec (slow tier: PyTensor compiles C code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bayeslmm
from bayeslmm.bayes import build_model, sample, varcorr_labels

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"


def test_structure_names_coordinates_and_finite_logp(sleep) -> None:
    spec = bayeslmm.model_spec("Reaction ~ Days + (Days | Subject)", sleep)
    m = build_model(spec)
    assert {"beta", "sigma", "z_Subject", "b_Subject", "varcorr", "y"} <= set(m.named_vars)
    assert list(m.coords["coef"]) == ["(Intercept)", "Days"]
    assert list(m.coords["Subject_level"]) == list(spec.terms[0].levels)
    assert (
        list(m.coords["component"])
        == varcorr_labels(spec)
        == ["Subject|(Intercept)", "Subject|Days", "Subject|(Intercept)|Days", "Residual"]
    )
    assert np.isfinite(m.compile_logp()(m.initial_point()))


def test_bad_options_are_refused(sleep) -> None:
    spec = bayeslmm.model_spec("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(bayeslmm.OptionError, match="positive"):
        build_model(spec, beta_prior_var=-1.0)
    with pytest.raises(bayeslmm.OptionError, match="unknown parameterisation"):
        build_model(spec, param="centred")
    with pytest.raises(bayeslmm.OptionError, match="at least one random-effect term or a serial"):
        build_model(bayeslmm.model_spec("Reaction ~ Days", sleep))


def test_posterior_of_the_pig_model_is_near_reml(pig, pig_fit) -> None:
    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", pig)
    idata = sample(spec, draws=500, tune=500, chains=2, seed=3)
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(idata.children)
    post = idata.posterior
    vc = post["varcorr"].mean(("chain", "draw")).to_numpy()
    fit = pig_fit
    # with 48 pigs the posterior mean of the pig variance sits a little above REML; residual within 5%
    assert vc[0] == pytest.approx(fit.varcorr().vcov[0], rel=0.2)
    assert vc[1] == pytest.approx(fit.varcorr().vcov[1], rel=0.05)
    np.testing.assert_allclose(post["beta"].mean(("chain", "draw")), fit.fixef, rtol=0.01)
    assert idata.log_likelihood["y"].shape[-1] == 432


def test_marginal_and_restricted_densities_are_exact(pig, pig_fit) -> None:
    """The PyMC potentials equal the dense normal density and the marginalisation module's."""
    import pytensor
    import scipy.stats

    from bayeslmm.bayes import log_marginal

    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", pig)
    fit = pig_fit
    sd, sig, beta = 3.0, 2.0, np.array([19.0, 6.0])
    for param in ("marginal", "restricted"):
        m = build_model(spec, param=param, beta_prior_var=1e4)
        ip = m.initial_point()
        ip["sd_id_num_log__"] = np.array([np.log(sd)])
        ip["sigma_log__"] = np.array(np.log(sig))
        if param == "marginal":
            ip["beta"] = beta
        [pot] = m.replace_rvs_by_values([m.potentials[0]])
        val = pytensor.function(m.value_vars, pot, on_unused_input="ignore")(*[ip[v.name] for v in m.value_vars])
        if param == "marginal":
            idx = np.argsort(spec.terms[0].codes, kind="stable")
            V = np.kron(np.eye(48), np.full((9, 9), sd**2)) + sig**2 * np.eye(432)
            ref = scipy.stats.multivariate_normal(spec.X[idx] @ beta, V).logpdf(spec.y[idx])
        else:
            ref = log_marginal(fit, np.r_[sd / sig, sig], 1e4)
        assert val == pytest.approx(ref, abs=1e-7)


def test_the_three_parameterisations_agree(pig) -> None:
    """Posterior means of the variance components and fixed effects within 4 Monte Carlo SEs."""
    import arviz as az

    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", pig)
    res = {}
    for param in ("conditional", "marginal", "restricted"):
        idata = bayeslmm.bayes.sample(spec, param=param, draws=1000, tune=1000, chains=2, seed=11, beta_prior_var=1e4)
        post = idata.posterior
        assert {"beta", "b_id_num", "varcorr", "sigma"} <= set(post.data_vars)
        assert post["b_id_num"].shape[-2:] == (48, 1)
        res[param] = {
            v: (post[v].mean(("chain", "draw")).to_numpy(), az.mcse(post[v]).to_numpy()) for v in ("varcorr", "beta")
        }
    for a, b in (("conditional", "marginal"), ("conditional", "restricted"), ("marginal", "restricted")):
        for v in ("varcorr", "beta"):
            (ma, sa), (mb, sb) = res[a][v], res[b][v]
            assert np.all(np.abs(ma - mb) <= 4 * np.hypot(sa, sb)), (a, b, v, ma, mb)


def test_cli_sample_json(cli, tmp_path) -> None:
    import json

    import xarray as xr

    out = tmp_path / "post.nc"
    r = cli(
        "sample",
        "pig_weights",
        "--formula",
        "weight ~ num_weeks + (1 | id_num)",
        "--param",
        "restricted",
        "--draws",
        "200",
        "--tune",
        "200",
        "--seed",
        "1",
        "--sd-prior",
        "halfnormal:20",
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    kinds = [(p["kind"], p.get("name") or p.get("grp")) for p in d["params"]]
    assert kinds == [("fixef", "(Intercept)"), ("fixef", "num_weeks"), ("varcorr", "id_num"), ("varcorr", "Residual")]
    assert {"mean", "sd", "hdi_low", "hdi_high", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"} <= set(d["params"][0])
    assert d["draws"] == 200 and d["chains"] == 2 and d["seconds"] >= d["sampling_seconds"] > 0
    # the file holds the posterior that was summarised
    saved = xr.open_datatree(out)
    beta, varcorr = saved["posterior"]["beta"].values, saved["posterior"]["varcorr"].values
    saved.close()
    assert beta.shape == (2, 200, 2) and varcorr.shape == (2, 200, 2)
    means = np.r_[beta.mean(axis=(0, 1)), varcorr.mean(axis=(0, 1))]
    np.testing.assert_allclose(means, [p["mean"] for p in d["params"]], rtol=1e-12)
    r = cli("sample", "pig_weights", "--formula", "weight ~ num_weeks + (1 | id_num)", "--sd-prior", "gamma:2")
    assert r.returncode == 2 and "halfnormal:S" in r.stderr


def test_posterior_means_match_an_exact_grid_reference(pig, pig_fit) -> None:
    """Random intercept, HalfNormal(20) on both sds, beta_prior_var = 1e4: within 4 Monte Carlo SEs."""
    import arviz as az

    from .grid import grid_posterior_means

    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", pig)
    fit = pig_fit
    ref = grid_posterior_means(fit, 1e4, 20.0, su_max=9.0, s_range=(1.7, 2.6))
    idata = sample(spec, param="marginal", draws=2000, tune=1000, chains=2, seed=5, beta_prior_var=1e4, sd_scale=20.0)
    vc = idata.posterior["varcorr"]
    mean = vc.mean(("chain", "draw")).to_numpy()
    mcse = az.mcse(vc).to_numpy()
    assert abs(mean[0] - ref["su2"]) <= 4 * mcse[0], (mean[0], ref["su2"], mcse[0])
    assert abs(mean[1] - ref["s2"]) <= 4 * mcse[1], (mean[1], ref["s2"], mcse[1])


@pytest.mark.parametrize("param", ["conditional", "restricted"])
def test_predictive_groups(pig, param: str) -> None:
    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", pig)
    idata = sample(spec, param=param, draws=150, tune=150, chains=2, seed=4, prior=True)
    assert {"posterior_predictive", "prior", "prior_predictive"} <= set(idata.children)
    yrep = idata.posterior_predictive["y"]
    assert yrep.shape == (2, 150, 432)
    # replicated data reproduce the observed mean and spread (posterior predictive check of two statistics)
    assert float(yrep.mean()) == pytest.approx(pig.weight.mean(), rel=0.01)
    assert float(yrep.std("obs").mean()) == pytest.approx(pig.weight.std(), rel=0.05)
    assert idata.prior_predictive["y"].shape[-1] == 432
    assert {"beta", "sigma", "varcorr", "b_id_num"} <= set(idata.prior.data_vars)


@pytest.fixture(scope="module")
def pymc_marginal(pig):
    """The reference of the other samplers: PyMC's NUTS on the pig model, ``marginal`` (sampled once)."""
    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", pig)
    return spec, sample(spec, param="marginal", draws=1000, tune=1000, seed=21, beta_prior_var=1e4)


@pytest.mark.parametrize("sampler", ["nutpie", "numpyro", "blackjax"])
def test_other_samplers_give_the_same_posterior(pymc_marginal, sampler: str) -> None:
    """nutpie and the JAX samplers agree with PyMC's NUTS within 4 Monte Carlo SEs (pig, marginal)."""
    import arviz as az

    spec, ref = pymc_marginal
    other = sample(spec, param="marginal", draws=1000, tune=1000, seed=22, beta_prior_var=1e4, sampler=sampler)
    assert {"beta", "b_id_num", "varcorr"} <= set(other.posterior.data_vars)
    for v in ("beta", "varcorr"):
        a, b = ref.posterior[v], other.posterior[v]
        diff = np.abs(a.mean(("chain", "draw")).to_numpy() - b.mean(("chain", "draw")).to_numpy())
        assert np.all(diff <= 4 * np.hypot(az.mcse(a).to_numpy(), az.mcse(b).to_numpy())), (sampler, v, diff)


def _agree(res: dict, names: tuple[str, ...]) -> None:
    import itertools

    for (a, ra), (b, rb) in itertools.combinations(res.items(), 2):
        for v in names:
            (ma, sa), (mb, sb) = ra[v], rb[v]
            assert np.all(np.abs(ma - mb) <= 4 * np.hypot(sa, sb)), (a, b, v, ma, mb)


def _means(idata, names):
    import arviz as az

    return {
        v: (idata.posterior[v].mean(("chain", "draw")).to_numpy(), az.mcse(idata.posterior[v]).to_numpy())
        for v in names
    }


def test_serial_ou_parameterisations_agree_and_sit_near_reml() -> None:
    import pandas as pd

    df = pd.read_csv(DATA / "sim_ou.csv")
    spec = bayeslmm.model_spec("y ~ t + (1 | id)", df, residual="ou(t | id)")
    res = {}
    for param in ("conditional", "marginal", "restricted"):
        idata = sample(spec, param=param, draws=1000, tune=1000, seed=31, beta_prior_var=1e4)
        assert list(idata.posterior["process"].coords["process_param"].values) == ["process_var", "rho"]
        assert idata.log_likelihood["y"].shape[-1] == 60  # per subject
        assert idata.posterior_predictive["y"].shape[-1] == spec.n
        res[param] = _means(idata, ("beta", "varcorr", "process"))
    _agree(res, ("beta", "varcorr", "process"))
    fit = bayeslmm.lmm("y ~ t + (1 | id)", df, residual="ou(t | id)")
    rp = fit.residual_params()
    m = res["marginal"]
    assert m["process"][0][1] == pytest.approx(rp["rho"], abs=0.1)
    assert m["varcorr"][0][-1] == pytest.approx(rp["nugget"], rel=0.25)
    np.testing.assert_allclose(m["beta"][0], fit.fixef, atol=0.1)


@pytest.mark.parametrize(
    "formula,data,unit",
    [
        ("strength ~ 1 + (1 | batch/cask)", "pastes.csv", "batch"),
        ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin.csv", None),
    ],
)
def test_nested_and_crossed_marginal_agree_with_conditional(formula, data, unit) -> None:
    import pandas as pd

    df = pd.read_csv(DATA / data)
    spec = bayeslmm.model_spec(formula, df)
    res = {}
    for param in ("conditional", "marginal"):
        idata = sample(spec, param=param, draws=1000, tune=1000, seed=41)
        res[param] = _means(idata, ("beta", "varcorr"))
        if param == "marginal":
            assert ("log_likelihood" in idata.children) == (unit is not None)
            if unit:
                assert idata.log_likelihood["y"].dims[-1] == unit
    _agree(res, ("beta", "varcorr"))
