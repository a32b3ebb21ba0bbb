"""The meeting point: REML against the posterior (tables) and the plots.

One real posterior (pig weights, ``conditional``, 2 x 200 draws) is sampled once per session; the
other models get a synthetic posterior with the layout of ``bayeslmm.bayes.sample`` (drawn
around the fit), which is enough to check the arithmetic and is instant.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr

import bayeslmm
from bayeslmm import DataError, OptionError
from bayeslmm.bayes import reml_limit, varcorr_labels
from bayeslmm.compare import (
    Comparison,
    compare,
    compare_ranef,
    plot_caterpillar,
    plot_limit,
    plot_qq,
    plot_residuals,
    plot_shrinkage,
)

from .test_serial import irregular_frame

Z95 = scipy.stats.norm.ppf(0.975)


# pig_fit and sleep_fit (REML) are the session's, from tests/conftest.py


@pytest.fixture(scope="module")
def pig_idata(models, pig_fit: bayeslmm.LMMFit) -> xr.DataTree:
    return models.sample(
        "weight ~ num_weeks + (1 | id_num)",
        "pig_weights",
        param="conditional",
        draws=200,
        tune=200,
        chains=2,
        seed=1,
        posterior_predictive=False,
    )


def fake_idata(fit: bayeslmm.LMMFit, seed: int = 0, chains: int = 2, draws: int = 300) -> xr.DataTree:
    """A posterior in `sample`'s layout: beta ~ N(beta_hat, vcov), D_k ~ Wishart(D_hat), b ~ N(BLUP, condsd)."""
    rng = np.random.default_rng(seed)
    spec, S = fit.spec, chains * draws
    sample_dims = {"chain": np.arange(chains), "draw": np.arange(draws)}

    def da(x: np.ndarray, dims: tuple[str, ...], **coords: list[str]) -> xr.DataArray:
        return xr.DataArray(
            x.reshape(chains, draws, *x.shape[1:]), dims=("chain", "draw", *dims), coords={**sample_dims, **coords}
        )

    beta = rng.multivariate_normal(fit.fixef.to_numpy(), fit.vcov.to_numpy(), S)
    vc, post = [], {}
    for t, D in zip(spec.terms, fit.cov_matrices().values()):
        df = t.nlevels
        W = scipy.stats.wishart(df=df, scale=D / df).rvs(S, random_state=rng).reshape(S, t.q, t.q)
        vc += [W[:, a, a] for a in range(t.q)] + [W[:, a, b] for b in range(t.q) for a in range(b + 1, t.q)]
        b = fit.ranef_dict()[t.name].to_numpy()
        sd = np.sqrt(np.diagonal(fit.cond_cov()[t.name], axis1=1, axis2=2))
        post[f"b_{t.name}"] = da(
            b + sd * rng.standard_normal((S, *b.shape)),
            (f"{t.name}_level", f"{t.name}_coef"),
            **{f"{t.name}_level": list(t.levels), f"{t.name}_coef": list(t.coef_names)},
        )
    n = spec.n
    vc.append(fit.varcorr().vcov.iloc[-1] * rng.chisquare(n, S) / n)
    post["beta"] = da(beta, ("coef",), coef=list(spec.fixef_names))
    post["varcorr"] = da(np.column_stack(vc), ("component",), component=varcorr_labels(spec))
    post["sigma"] = da(np.sqrt(vc[-1]), ())
    if spec.residual is not None:
        rp = fit.residual_params()
        names = ["process_var", "rho"] if rp["kind"] == "ou" else ["phi"]
        vals = np.column_stack([rp[k] * np.exp(0.1 * rng.standard_normal(S)) for k in names])
        post["process"] = da(vals, ("process_param",), process_param=names)
    return xr.DataTree.from_dict(
        {"posterior": xr.Dataset(post), "observed_data": xr.Dataset({"y": ("obs", np.asarray(spec.y))})}
    )


def draws_of(idata: xr.DataTree, name: str) -> np.ndarray:
    d = idata["posterior"][name]
    return d.values.reshape(-1, *d.shape[2:])


# ------------------------------------------------------------------ compare: frequentist columns
def test_compare_estimates_and_wald_columns_are_the_fit_values(pig_fit, pig_idata) -> None:
    tab = compare(pig_fit, pig_idata).table
    assert list(tab.kind) == ["fixef", "fixef", "variance", "variance"]
    assert list(tab.name) == ["(Intercept)", "num_weeks", "id_num|(Intercept)", "Residual"]
    fx = tab[tab.kind == "fixef"]
    np.testing.assert_allclose(fx.estimate, pig_fit.fixef, rtol=1e-14)
    np.testing.assert_allclose(fx.se, pig_fit.se, rtol=1e-14)
    vs = pig_fit.vc_se()
    vr = tab[tab.kind == "variance"]
    np.testing.assert_allclose(vr.estimate, pig_fit.varcorr().vcov, rtol=1e-14)
    np.testing.assert_allclose(vr.estimate.iloc[-1], pig_fit.sigma2, rtol=1e-14)
    np.testing.assert_allclose(vr.se, vs.se_vcov, rtol=1e-14)
    np.testing.assert_allclose(tab.low, tab.estimate - Z95 * tab.se, rtol=1e-12)
    np.testing.assert_allclose(tab.high, tab.estimate + Z95 * tab.se, rtol=1e-12)
    assert list(vr.grp) == ["id_num", "Residual"] and vr.var1.iloc[0] == "(Intercept)" and vr.var1.iloc[1] is None
    t90 = compare(pig_fit, pig_idata, level=0.9).table
    np.testing.assert_allclose(t90.high - t90.low, 2 * scipy.stats.norm.ppf(0.95) * tab.se, rtol=1e-12)


def test_compare_posterior_columns_summarise_the_draws(pig_fit, pig_idata) -> None:
    import arviz_stats

    tab = compare(pig_fit, pig_idata).table
    D = np.column_stack([draws_of(pig_idata, "beta"), draws_of(pig_idata, "varcorr")])
    np.testing.assert_allclose(tab["mean"], D.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(tab["median"], np.median(D, axis=0), rtol=1e-12)
    np.testing.assert_allclose(tab["sd"], D.std(axis=0, ddof=1), rtol=1e-12)
    hdi = arviz_stats.hdi(pig_idata, var_names=["beta", "varcorr"], prob=0.94)
    ref = np.concatenate([hdi["beta"].values, hdi["varcorr"].values])  # (k, 2): lower, upper
    np.testing.assert_allclose(tab[["hdi_low", "hdi_high"]].to_numpy(), ref, rtol=1e-12)
    inside = ((D >= tab.hdi_low.to_numpy()) & (D <= tab.hdi_high.to_numpy())).mean(axis=0)
    assert np.all(np.abs(inside - 0.94) < 0.01)
    assert np.all((tab["mode"] > tab.hdi_low) & (tab["mode"] < tab.hdi_high))
    np.testing.assert_allclose(tab.width_ratio, (tab.hdi_high - tab.hdi_low) / (tab.high - tab.low), rtol=1e-14)
    assert np.all(np.abs(tab.width_ratio - 1) < 0.25)  # flat-ish priors, 432 observations


def test_pig_posterior_agrees_with_reml(pig_fit, pig_idata) -> None:
    tab = compare(pig_fit, pig_idata).table.set_index("name")
    for name in pig_fit.spec.fixef_names:
        assert abs(tab.loc[name, "mean"] - tab.loc[name, "estimate"]) < 2 * tab.loc[name, "sd"]
        assert tab.loc[name, "sd"] == pytest.approx(tab.loc[name, "se"], rel=0.3)
    for name in ("id_num|(Intercept)", "Residual"):
        assert tab.loc[name, "hdi_low"] < tab.loc[name, "estimate"] < tab.loc[name, "hdi_high"]


def test_mode_is_the_kde_mode_of_a_known_density() -> None:
    from bayeslmm.compare._table import _summaries

    x = scipy.stats.gamma(a=4.0).rvs(20000, random_state=np.random.default_rng(3))  # mode 3, mean 4, sd 2
    s = _summaries(x[:, None], 0.9)
    assert s["mode"][0] == pytest.approx(3.0, abs=0.35)  # a KDE mode's error is a tenth of an sd or so
    assert s["mean"][0] == pytest.approx(4.0, abs=0.05) and s["mode"][0] < s["median"][0] - 0.3 < s["mean"][0] - 0.6
    assert s["hdi_high"][0] - s["hdi_low"][0] < np.subtract(*np.quantile(x, [0.95, 0.05]))  # shorter than ETI


def test_profile_intervals_are_the_fits_confint(pig_fit, pig_idata) -> None:
    tab = compare(pig_fit, pig_idata, interval="profile").table.set_index("name")
    ci = pig_fit.confint(method="profile")
    for name in pig_fit.spec.fixef_names:
        np.testing.assert_allclose(tab.loc[name, ["low", "high"]], ci.loc[name].iloc[1:], rtol=1e-12)
    np.testing.assert_allclose(
        tab.loc["id_num|(Intercept)", ["low", "high"]], ci.loc["sd_(Intercept)|id_num"].iloc[1:] ** 2, rtol=1e-12
    )
    np.testing.assert_allclose(tab.loc["Residual", ["low", "high"]], ci.loc["sigma"].iloc[1:] ** 2, rtol=1e-12)
    assert tab.loc["id_num|(Intercept)", "low"] > 0  # unlike a Wald interval on the variance scale, inside (0, inf)


def test_without_variance_standard_errors_the_wald_columns_are_nan(pig_fit, pig_idata, monkeypatch) -> None:
    import bayeslmm.freq._information as information

    monkeypatch.setattr(information, "MAX_Q", 10)  # pretend 48 random effects are too many for vc_se()
    c = compare(pig_fit, pig_idata)
    vr = c.table[c.table.kind == "variance"]
    assert vr.se.isna().all() and vr.low.isna().all() and vr.width_ratio.isna().all()
    np.testing.assert_allclose(vr.estimate, pig_fit.varcorr().vcov, rtol=1e-14)
    assert c.table[c.table.kind == "fixef"].se.notna().all() and vr["mean"].notna().all()
    assert any("no Wald SEs" in n and "bootstrap" in n for n in c.notes)


# ------------------------------------------------------------------ correlations (sleepstudy)
def test_correlated_slopes_give_covariance_and_correlation_rows(sleep_fit) -> None:
    idata = fake_idata(sleep_fit)
    tab = compare(sleep_fit, idata).table
    assert list(tab.kind) == ["fixef", "fixef", "variance", "variance", "covariance", "correlation", "variance"]
    vc, vs = sleep_fit.varcorr(), sleep_fit.vc_se()
    cov, cor = tab.iloc[4], tab.iloc[5]
    assert cov["name"] == cor["name"] == "Subject|(Intercept)|Days"
    assert (cor.grp, cor.var1, cor.var2) == ("Subject", "(Intercept)", "Days")
    assert cov.estimate == vc.vcov[2] and cor.estimate == pytest.approx(vc.sdcor[2], rel=1e-14)
    assert cor.estimate == pytest.approx(vc.vcov[2] / np.sqrt(vc.vcov[0] * vc.vcov[1]), rel=1e-12)
    assert cov.se == vs.se_vcov[2] and cor.se == vs.se_sdcor[2]
    V = draws_of(idata, "varcorr")
    r = V[:, 2] / np.sqrt(V[:, 0] * V[:, 1])
    assert cor["mean"] == pytest.approx(r.mean(), rel=1e-12)
    assert cor["sd"] == pytest.approx(r.std(ddof=1), rel=1e-12)
    assert cor["median"] == pytest.approx(np.median(r), rel=1e-12)
    assert -1 < cor.hdi_low < cor.hdi_high < 1
    assert cov["mean"] == pytest.approx(V[:, 2].mean(), rel=1e-12)


@pytest.fixture(scope="module")
def sleep_profile(sleep_fit) -> Comparison:
    return compare(sleep_fit, fake_idata(sleep_fit), interval="profile")


def test_profile_intervals_of_correlations(sleep_fit, sleep_profile) -> None:
    tab = sleep_profile.table
    ci = sleep_fit.confint(method="profile")
    cor = tab[tab.kind == "correlation"].iloc[0]
    np.testing.assert_allclose([cor.low, cor.high], ci.loc["cor_Days.(Intercept)|Subject"].iloc[1:], rtol=1e-12)
    days = tab[tab.name == "Subject|Days"].iloc[0]
    np.testing.assert_allclose([days.low, days.high], ci.loc["sd_Days|Subject"].iloc[1:] ** 2, rtol=1e-12)
    cov = tab[tab.kind == "covariance"].iloc[0]
    assert np.isnan(cov.low) and np.isnan(cov.high) and np.isnan(cov.width_ratio)


# ------------------------------------------------------------------ compare_ranef
def test_compare_ranef_of_a_random_intercept(pig_fit, pig_idata) -> None:
    tab = compare_ranef(pig_fit, pig_idata).table
    re = pig_fit.ranef()
    spec, t = pig_fit.spec, pig_fit.spec.terms[0]
    assert len(tab) == t.nlevels and list(tab.level) == list(t.levels)
    np.testing.assert_allclose(tab.blup, re.condval, rtol=1e-14)
    np.testing.assert_allclose(tab.condsd, re.condsd, rtol=1e-14)
    r = pd.Series(spec.y - spec.X @ pig_fit.fixef.to_numpy())
    np.testing.assert_allclose(tab.mean_resid, r.groupby(t.codes).mean(), rtol=1e-12)
    n = np.bincount(t.codes)
    s_u2, s2 = pig_fit.varcorr().vcov
    np.testing.assert_allclose(tab.factor, n * s_u2 / (s2 + n * s_u2), rtol=1e-12)
    np.testing.assert_allclose(tab.blup, tab.factor * tab.mean_resid, rtol=1e-6, atol=1e-9)
    b = draws_of(pig_idata, "b_id_num")[:, :, 0]
    np.testing.assert_allclose(tab["mean"], b.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(tab["sd"], b.std(axis=0, ddof=1), rtol=1e-12)
    assert np.corrcoef(tab["mean"], tab.blup)[0, 1] > 0.99


def test_compare_ranef_of_correlated_slopes_has_no_closed_form(sleep_fit) -> None:
    tab = compare_ranef(sleep_fit).table
    assert len(tab) == 2 * 18 and "mean" not in tab
    assert tab.factor.isna().all()
    assert tab[tab.coef == "(Intercept)"].mean_resid.notna().all() and tab[tab.coef == "Days"].mean_resid.isna().all()
    np.testing.assert_allclose(tab.blup, sleep_fit.ranef().condval, rtol=1e-14)


# ------------------------------------------------------------------ serial processes
@pytest.mark.parametrize("residual, names", [("ou(t | id)", ["process_var", "rho"]), ("ar1(t | id)", ["phi"])])
def test_serial_process_rows(residual: str, names: list[str]) -> None:
    fit = bayeslmm.lmm("y ~ t + (1 | id)", irregular_frame(2), residual=residual)
    idata = fake_idata(fit)
    tab = compare(fit, idata).table
    pr = tab[tab.kind == "process"]
    assert list(pr.name) == names
    rp, vs = fit.residual_params(), fit.vc_se().set_index("var1")
    np.testing.assert_allclose(pr.estimate, [rp[k] for k in names], rtol=1e-14)
    np.testing.assert_allclose(pr.se, [vs.loc[k, "se_vcov"] for k in names], rtol=1e-14)
    np.testing.assert_allclose(pr["mean"], draws_of(idata, "process").mean(axis=0), rtol=1e-12)
    assert tab[tab.name == "Residual"].estimate.iloc[0] == pytest.approx(fit.varcorr().vcov.iloc[-1])
    with pytest.raises(OptionError, match="interval='wald'"):
        compare(fit, idata, interval="profile")
    no_process = xr.DataTree.from_dict({"posterior": idata["posterior"].to_dataset().drop_vars("process")})
    with pytest.raises(OptionError, match="has no serial-process"):
        compare(fit, no_process)


@pytest.mark.slow
def test_serial_process_rows_from_the_sampler() -> None:
    from bayeslmm.bayes import sample

    fit = bayeslmm.lmm("y ~ t + (1 | id)", irregular_frame(2), residual="ou(t | id)")
    idata = sample(fit.spec, param="marginal", draws=150, tune=150, chains=2, seed=2, posterior_predictive=False)
    pr = compare(fit, idata).table.query("kind == 'process'")
    assert list(pr.name) == ["process_var", "rho"]
    np.testing.assert_allclose(pr["mean"], draws_of(idata, "process").mean(axis=0), rtol=1e-12)


# ------------------------------------------------------------------ output formats
def test_text_markdown_html_and_dict_hold_every_row(sleep_fit) -> None:
    c = compare(sleep_fit, fake_idata(sleep_fit))
    assert isinstance(c, Comparison) and isinstance(c.table, pd.DataFrame)
    text, md, page = str(c), c.to_markdown(), c._repr_html_()
    k = len(c.table)
    lines = text.splitlines()
    head = next(i for i, s in enumerate(lines) if s.startswith("kind"))
    assert len({len(s) for s in lines[head : head + 2 + k]}) == 1  # aligned: the last column is right-justified
    assert [s.split()[0] for s in lines[head + 2 : head + 2 + k]] == list(c.table.kind)
    assert "REML" in lines[head] and "width ratio" in lines[head]
    rows = [s for s in md.splitlines() if s.startswith("| ") and not s.startswith("| kind")]
    assert len(rows) == k and md.count("Subject\\|(Intercept)\\|Days") == 2
    assert all(s.count(" | ") == 12 for s in rows)  # 13 cells, "|" inside names escaped
    assert page.count("<tr>") == k + 1 and page.count("Subject|(Intercept)|Days") == 2
    for name in c.table.name:
        assert name in text and name in page
    est = c.table.estimate.iloc[0]
    assert f"{est:.1f}" in text.splitlines()[head + 2]  # 251.4: four significant digits
    d = json.loads(json.dumps(c.to_dict()))
    assert len(d) == k and d[0]["estimate"] == pytest.approx(est)


def test_profile_covariance_prints_na(sleep_profile) -> None:
    c = sleep_profile
    row = next(s for s in str(c).splitlines() if s.startswith("covariance"))
    assert row.split().count("NA") == 3  # low, high, width ratio
    assert c.to_dict()[4]["low"] is None


def test_ranef_table_prints_counts_as_integers(pig_fit) -> None:
    text = str(compare_ranef(pig_fit))
    assert "\nid_num  (Intercept)  1      9  " in text


# ------------------------------------------------------------------ bad input
def test_a_posterior_of_another_model_is_refused(pig_fit, pig_idata, sleep_fit) -> None:
    with pytest.raises(OptionError, match="another model: its fixed effects"):
        compare(sleep_fit, pig_idata)
    other = bayeslmm.lmm("weight ~ num_weeks + (num_weeks | id_num)", bayeslmm.datasets.load("pig_weights"))
    with pytest.raises(OptionError, match="another model: its variance components"):
        compare(other, pig_idata)
    with pytest.raises(OptionError, match="another model"):
        compare_ranef(other, pig_idata)
    shifted = bayeslmm.lmm(
        "weight ~ num_weeks + (1 | id_num)",
        bayeslmm.datasets.load("pig_weights").assign(weight=lambda d: d.weight + 1.0),
    )
    with pytest.raises(DataError, match="other data"):
        compare(shifted, pig_idata)
    with pytest.raises(OptionError, match="no posterior group"):
        compare(pig_fit, {"prior": None})
    with pytest.raises(OptionError, match="mixed-model fit"):
        compare(bayeslmm.lm("weight ~ num_weeks", bayeslmm.datasets.load("pig_weights")), pig_idata)


def test_bad_options_are_refused(pig_fit, pig_idata, sleep_fit) -> None:
    with pytest.raises(OptionError, match="'wald' or 'profile'"):
        compare(pig_fit, pig_idata, interval="bootstrap")
    with pytest.raises(OptionError, match="level must be between 0 and 1"):
        compare(pig_fit, pig_idata, level=95)
    with pytest.raises(OptionError, match="hdi_prob"):
        compare(pig_fit, pig_idata, hdi_prob=1.0)
    with pytest.raises(OptionError, match="reml_limit"):
        plot_limit(pig_fit)
    with pytest.raises(DataError, match="one random intercept"):
        plot_shrinkage(sleep_fit)


# ------------------------------------------------------------------ plots
def check_png(fig, path) -> None:
    import matplotlib.image

    fig.savefig(path, dpi=80)
    assert path.stat().st_size > 10_000
    img = matplotlib.image.imread(path)[..., :3]
    colours = np.unique((img.reshape(-1, 3) * 255).round().astype(int), axis=0)
    chromatic = colours[(colours.max(axis=1) - colours.min(axis=1)) > 60]  # not white, grey or black
    assert len(colours) > 2 and len(np.unique(chromatic // 64, axis=0)) >= 2  # at least two distinct hues


def test_plot_shrinkage(pig_fit, pig_idata, tmp_path) -> None:
    fig = plot_shrinkage(pig_fit, pig_idata)
    assert len(fig.axes) == 2
    check_png(fig, tmp_path / "shrinkage.png")
    ax = fig.axes[0]
    x, y = ax.collections[0].get_offsets().T  # the BLUPs against the raw mean residuals
    np.testing.assert_allclose(y, pig_fit.shrinkage().factor * x, rtol=1e-6, atol=1e-9)
    check_png(plot_shrinkage(pig_fit), tmp_path / "shrinkage_freq.png")


def test_plot_limit(pig_fit, tmp_path) -> None:
    path = reml_limit(pig_fit, [1.0, 1e2, 1e4, 1e8])
    fig = plot_limit(path)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(path.reml) + 1 and visible[0].get_xscale() == "log"
    check_png(fig, tmp_path / "limit.png")


@pytest.mark.parametrize("plot", [plot_residuals, plot_qq, plot_caterpillar])
def test_diagnostic_plots(plot, sleep_fit, tmp_path) -> None:
    fig = plot(sleep_fit)
    check_png(fig, tmp_path / f"{plot.__name__}.png")
    if plot is plot_qq:
        assert len([ax for ax in fig.axes if ax.get_visible()]) == 3  # residuals, 2 BLUP coefficients
    if plot is plot_caterpillar:
        ax = fig.axes[1]  # Days | Subject: sorted BLUPs
        x = ax.collections[-1].get_offsets()[:, 0]
        assert np.all(np.diff(x) >= 0) and np.allclose(np.sort(x), np.sort(sleep_fit.ranef_dict()["Subject"].Days))
