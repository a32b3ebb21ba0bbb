"""Model checking with ArviZ: diagnostics, predictive checks, LOO/WAIC and model comparison.

Three small sleepstudy fits are sampled once for the module (2 chains x 200 draws); the
diagnostics' warnings are tested on InferenceData built by hand with known defects.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

import bayeslmm
from bayeslmm.bayes import sample
from bayeslmm.compare._checks import compare_models, diagnose, model_fit, plot_rank, plot_trace, save
from bayeslmm.compare._ppc import plot_ppc, plot_ppc_groups, plot_prior_predictive, ppc_group_stats

from .conftest import assert_drawn

SLOPE = "Reaction ~ Days + (Days | Subject)"
INTERCEPT = "Reaction ~ Days + (1 | Subject)"


@pytest.fixture(scope="module")
def fits(sleep) -> dict[str, tuple]:
    """``{name: (spec, idata)}``: random intercept+slope and random intercept (marginal), and the
    random intercept model in the conditional parameterisation."""
    out = {}
    for name, formula, param in [
        ("slope", SLOPE, "marginal"),
        ("intercept", INTERCEPT, "marginal"),
        ("conditional", INTERCEPT, "conditional"),
    ]:
        spec = bayeslmm.model_spec(formula, sleep)
        out[name] = (spec, sample(spec, param=param, draws=200, tune=200, chains=2, seed=1, prior=name == "slope"))
    return out


def _tree(
    posterior: dict[str, tuple],
    stats: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
    coords: dict | None = None,
) -> xr.DataTree:
    groups = {"posterior": xr.Dataset({k: (dims, v) for k, (dims, v) in posterior.items()}, coords=coords)}
    if stats is not None:
        groups["sample_stats"] = xr.Dataset({k: (("chain", "draw"), v) for k, v in stats.items()}, attrs=attrs or {})
    return xr.DataTree.from_dict(groups)


# ------------------------------------------------------------------------------------------- diagnose


def test_diagnose_reports_arviz_rhat_and_ess(fits) -> None:
    import arviz_stats as azs

    _, idata = fits["slope"]
    d = diagnose(idata)
    assert list(d.table.index) == [
        "beta[(Intercept)]",
        "beta[Days]",
        "varcorr[Subject|(Intercept)]",
        "varcorr[Subject|Days]",
        "varcorr[Subject|(Intercept)|Days]",
        "varcorr[Residual]",
        "sigma",
    ]
    vc = idata.posterior["varcorr"]
    row = d.table.loc["varcorr[Subject|Days]"]
    assert row["r_hat"] == pytest.approx(float(azs.rhat(vc).sel(component="Subject|Days")), rel=1e-12)
    assert row["ess_bulk"] == pytest.approx(float(azs.ess(vc, method="bulk").sel(component="Subject|Days")))
    assert row["ess_tail"] == pytest.approx(float(azs.ess(vc, method="tail").sel(component="Subject|Days")))
    assert d.table.loc["sigma", "r_hat"] == pytest.approx(float(azs.rhat(idata.posterior["sigma"])))
    assert (d.chains, d.draws) == (2, 200)
    assert d.divergences == int(idata.sample_stats["diverging"].sum())
    # every ESS below the threshold is reported (the worst element per variable is named)
    low = d.table[d.table["ess_bulk"] < 400]
    for var in low["variable"].unique():
        assert any(w.startswith("bulk ESS") and (f"for {var}[" in w or f"for {var}:" in w) for w in d.warnings)
    assert str(d).startswith("MCMC diagnostics: 2 chains x 200 draws")
    assert repr(d) == str(d)  # a notebook or REPL shows the report, not the dataclass fields
    assert "<table" in d._repr_html_()


def test_diagnose_flags_disagreeing_chains_low_ess_divergences_and_tree_depth() -> None:
    rng = np.random.default_rng(0)
    C, D = 2, 500
    beta = rng.normal(size=(C, D, 2))
    beta[1] += 2.0  # the second chain sits 2 sd away
    sigma = np.empty((C, D))  # AR(1), phi = 0.99: a few effective draws
    sigma[:, 0] = rng.normal(size=C)
    for t in range(1, D):
        sigma[:, t] = 0.99 * sigma[:, t - 1] + np.sqrt(1 - 0.99**2) * rng.normal(size=C)
    diverging = np.zeros((C, D), dtype=bool)
    diverging[0, [10, 20, 30]] = True
    hit = np.zeros((C, D), dtype=bool)
    hit[1, :5] = True
    depth = np.where(hit, 10, 3)
    idata = _tree(
        {"beta": (("chain", "draw", "coef"), beta), "sigma": (("chain", "draw"), sigma)},
        {
            "diverging": diverging,
            "reached_max_treedepth": hit,
            "tree_depth": depth,
            "energy": np.cumsum(rng.normal(size=(C, D)), axis=1),
        },  # a random walk: E-BFMI near 0
        coords={"coef": ["(Intercept)", "x"]},
    )
    d = diagnose(idata)
    assert not d.ok
    assert d.divergences == 3 and d.max_treedepth_hits == 5 and d.max_treedepth == 10
    assert d.table.loc["beta[x]", "r_hat"] > 1.3
    assert d.table.loc["sigma", "ess_bulk"] < 100
    w = d.warnings
    assert sum(x.startswith("3 divergent transitions after tuning") for x in w) == 1
    assert any(x.startswith("5 transitions stopped at the maximum tree depth (10)") for x in w)
    rhat = [x for x in w if x.startswith("R-hat") and "beta[" in x]  # one per variable, worst element named
    assert len(rhat) == 1 and "(and 1 more elements of beta)" in rhat[0]
    assert "chains disagree" in rhat[0] and "> 1.01" in rhat[0]
    assert any(x.startswith("bulk ESS") and "for sigma" in x and "< 400" in x for x in w)
    assert len(d.bfmi) == 2 and max(d.bfmi) < 0.3 and any(x.startswith("E-BFMI below 0.3") for x in w)
    assert "3 divergent transitions" in str(d)
    # no sample_stats: only the convergence checks
    bare = _tree({"sigma": (("chain", "draw"), sigma)})
    assert diagnose(bare).divergences == 0 and any("sigma" in x for x in diagnose(bare).warnings)


def test_diagnose_reads_nutpie_names_and_passes_a_clean_posterior() -> None:
    rng = np.random.default_rng(1)
    C, D = 4, 1000
    diverging = np.zeros((C, D), dtype=bool)
    tuning = np.zeros((C, D), dtype=bool)
    diverging[0, :2] = tuning[0, :2] = True  # divergences while tuning do not count
    diverging[2, 7] = True
    hit = np.zeros((C, D), dtype=bool)
    hit[3, 100] = True
    idata = _tree(
        {"sigma": (("chain", "draw"), rng.normal(size=(C, D)))},
        {"diverging": diverging, "tuning": tuning, "maxdepth_reached": hit, "depth": np.full((C, D), 4)},
        attrs={"inference_library_settings": '{"settings": {"maxdepth": 8}}'},
    )
    d = diagnose(idata, var_names="sigma")
    assert (d.divergences, d.max_treedepth_hits, d.max_treedepth) == (1, 1, 8)
    assert [x.split(":")[0] for x in d.warnings] == [
        "1 divergent transition after tuning",
        "1 transitions stopped at the maximum tree depth (8)",
    ]
    clean = _tree({"sigma": (("chain", "draw"), rng.normal(size=(C, D)))}, {"diverging": np.zeros((C, D), dtype=bool)})
    d = diagnose(clean, var_names=["sigma"])
    assert d.ok and "no warnings" in str(d) and "No warnings" in d._repr_html_()
    with pytest.raises(bayeslmm.OptionError, match="no variable 'beta'"):
        diagnose(clean, var_names=["beta"])
    with pytest.raises(bayeslmm.OptionError, match="none of beta, varcorr"):
        diagnose(_tree({"mu": (("chain", "draw"), np.zeros((C, D)))}))


def test_divergence_advice_depends_on_the_parameterisation() -> None:
    z = np.zeros((2, 50, 3))
    div = np.zeros((2, 50), dtype=bool)
    div[0, 0] = True
    sig = np.random.default_rng(2).normal(size=(2, 50))
    cond = _tree({"sigma": (("chain", "draw"), sig), "z_g": (("chain", "draw", "g"), z)}, {"diverging": div})
    marg = _tree({"sigma": (("chain", "draw"), sig)}, {"diverging": div})
    assert "param='marginal'" in diagnose(cond).warnings[0]
    assert "param='marginal'" not in diagnose(marg).warnings[0] and "target_accept" in diagnose(marg).warnings[0]


# ------------------------------------------------------------------------------------------------ plots


def test_plots_write_png_files(fits, tmp_path) -> None:
    spec, idata = fits["slope"]
    plots = {
        "trace": plot_trace(idata),
        "rank": plot_rank(idata),
        "ppc": plot_ppc(idata),
        "prior": plot_prior_predictive(idata),
        "groups": plot_ppc_groups(idata, spec, "slope", covariate="Days"),
    }
    for name, p in plots.items():
        path = tmp_path / f"{name}.png"
        save(p, path)
        img = plt.imread(path)[..., :3]
        assert min(img.shape[:2]) > 200, name
        inked = (img.min(axis=2) < 0.8).mean()  # share of pixels drawn (not white or near white)
        assert 0.005 < inked < 0.6, (name, inked)
    # drawn into given axes, one interval and one observed group mean per subject, and saved from the axes
    fig, ax = plt.subplots()
    assert plot_ppc_groups(idata, spec, ax=ax) is fig
    means = ppc_group_stats(idata, spec, "mean").table
    [intervals] = [c for c in ax.collections if len(c.get_segments()) == 18]
    np.testing.assert_allclose(sorted(s[0][0] for s in intervals.get_segments()), sorted(means["pred_low"]))
    observed = np.concatenate([line.get_xdata() for line in ax.lines if line.get_marker() == "o"])
    np.testing.assert_allclose(np.sort(observed), np.sort(means["observed"]))
    save(ax, tmp_path / "axes.png")
    img = plt.imread(tmp_path / "axes.png")
    assert img.shape[:2] == (round(fig.get_figheight() * fig.dpi), round(fig.get_figwidth() * fig.dpi))
    assert_drawn(tmp_path / "axes.png")
    plt.close("all")
    with pytest.raises(bayeslmm.OptionError, match="cannot save"):
        save(object(), tmp_path / "x.png")
    _, cond = fits["conditional"]
    with pytest.raises(bayeslmm.OptionError, match="prior=True"):
        plot_prior_predictive(cond)


# ------------------------------------------------------------------------------------ group statistics


def test_group_means_and_slopes_match_pandas_and_numpy(fits, sleep) -> None:
    spec, idata = fits["slope"]
    chk = ppc_group_stats(idata, spec, "mean")
    obs = sleep.groupby(sleep["Subject"].astype(str))["Reaction"].mean()
    np.testing.assert_allclose(chk.table["observed"], obs.loc[chk.table.index].to_numpy(), rtol=1e-12)
    assert chk.table.index.name == "Subject" and (chk.table["n"] == 10).all()
    # replicated group means, straight from the posterior predictive draws
    yrep = idata.posterior_predictive["y"].values.reshape(-1, spec.n)
    codes = spec.terms[0].codes
    direct = np.stack([yrep[:, codes == g].mean(axis=1) for g in range(spec.terms[0].nlevels)], axis=1)
    np.testing.assert_allclose(chk.replicated, direct, rtol=1e-10)
    np.testing.assert_allclose(chk.table["ppp"], (direct >= chk.table["observed"].to_numpy()).mean(axis=0))
    slopes = ppc_group_stats(idata, spec, "slope", covariate="Days").table["observed"]
    for level, g in sleep.groupby(sleep["Subject"].astype(str)):
        assert slopes[level] == pytest.approx(np.polyfit(g["Days"], g["Reaction"], 1)[0], rel=1e-10)


def test_slope_check_finds_the_missing_random_slope(fits) -> None:
    """Within-subject slopes vary more than a random-intercept model can reproduce."""
    out = {}
    for name in ("slope", "intercept"):
        spec, idata = fits[name]
        out[name] = ppc_group_stats(idata, spec, "slope", covariate="Days", prob=0.95).table
    assert out["intercept"]["outside"].sum() >= 4
    assert out["slope"]["outside"].sum() <= 1
    assert ((out["intercept"]["ppp"] < 0.025) | (out["intercept"]["ppp"] > 0.975)).sum() >= 4


def test_group_stats_refuse_bad_input(fits, sleep) -> None:
    spec, idata = fits["slope"]
    with pytest.raises(bayeslmm.OptionError, match="needs covariate"):
        ppc_group_stats(idata, spec, "slope")
    with pytest.raises(bayeslmm.OptionError, match="no covariate 'Dayz'"):
        ppc_group_stats(idata, spec, "slope", covariate="Dayz")
    with pytest.raises(bayeslmm.OptionError, match="constant within every group"):
        ppc_group_stats(idata, spec, "slope", covariate="(Intercept)")
    with pytest.raises(bayeslmm.OptionError, match="unknown stat"):
        ppc_group_stats(idata, spec, "median")
    other = bayeslmm.model_spec(SLOPE, sleep.assign(Reaction=sleep["Reaction"] + 1))
    with pytest.raises(bayeslmm.OptionError, match="differs from spec.y"):
        ppc_group_stats(idata, other)
    prior = ppc_group_stats(idata, spec, predictive="prior_predictive")
    assert prior.replicated.shape == (200, 18)


# ------------------------------------------------------------------------------------------ LOO, WAIC


def test_loo_is_the_sum_of_pointwise_elpd_with_pareto_k_per_group(fits) -> None:
    _, idata = fits["slope"]
    fit = model_fit(idata)
    assert fit.unit == "Subject"
    assert fit.loo.elpd == pytest.approx(float(fit.loo.elpd_i.sum()), rel=1e-12)
    assert fit.pareto_k.sizes == {"Subject": 18}
    assert list(fit.pareto_k["Subject"].values) == list(idata.log_likelihood["Subject"].values)
    n_bad = int((fit.pareto_k > fit.loo.good_k).sum())
    assert any(w.startswith(f"Pareto k > {fit.loo.good_k:.2f} for {n_bad} of 18 groups") for w in fit.warnings) == (
        n_bad > 0
    )
    # WAIC, computed here from the same matrix, agrees with LOO to within a few units on 18 groups
    assert fit.elpd_waic == pytest.approx(fit.loo.elpd, abs=5)
    assert list(fit.table.index) == ["loo", "waic"]
    assert "leave-one-group-out" in str(fit) and "<table" in fit._repr_html_()
    cond = model_fit(fits["conditional"][1])
    assert cond.unit == "obs" and cond.pareto_k.size == 180 and "(leave-one-out)" in str(cond)
    assert cond.loo.elpd == pytest.approx(float(cond.loo.elpd_i.sum()), rel=1e-12)


def test_compare_ranks_random_slopes_first(fits) -> None:
    models = {"intercept": fits["intercept"][1], "slope": fits["slope"][1]}
    tab = compare_models(models)
    assert list(tab.index) == ["slope", "intercept"]
    assert list(tab["rank"]) == [0, 1]
    assert tab.attrs["unit"] == "Subject"
    assert tab.loc["slope", "elpd"] == pytest.approx(model_fit(models["slope"]).loo.elpd)
    assert tab.loc["intercept", "elpd_diff"] < 0
    assert tab["weight"].sum() == pytest.approx(1.0)


def test_compare_refuses_incomparable_log_likelihoods(fits) -> None:
    marg, cond = fits["intercept"][1], fits["conditional"][1]
    with pytest.raises(bayeslmm.OptionError, match=r"per group of 'Subject'.*per observation.*same param"):
        compare_models({"m": marg, "c": cond})
    changed = marg.copy(deep=True)
    changed["observed_data"] = xr.Dataset({"y": ("obs", marg.observed_data["y"].values + 1.0)})
    with pytest.raises(bayeslmm.OptionError, match="different data"):
        compare_models({"a": marg, "b": changed})
    with pytest.raises(bayeslmm.OptionError, match="at least two"):
        compare_models({"a": marg})
    without = marg.copy()
    del without["log_likelihood"]
    with pytest.raises(bayeslmm.OptionError, match="param='conditional'"):
        compare_models({"a": marg, "b": without})
