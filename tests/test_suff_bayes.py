"""The PyMC ``marginal`` and ``restricted`` models built from sufficient statistics (no rows).

The model built from merged chunk statistics (``bayeslmm.suff.stats_model_spec``) has the same
log density as the model built from the rows, at random points of the parameter space, for every
public example and the simulated crossed design: one grouping factor (per-level Woodbury, the
elementwise path for ``q <= 2``), nested and crossed factors (dense Woodbury from the blocks).
Default priors agree too (``sd(y)`` is recovered from the blocks). Sampling a row-less model gives
the posterior of beta, the variance components and (on request) the random effects, and says
clearly what needs the rows.
"""

from __future__ import annotations

import numpy as np
import pytest

import bayeslmm
from bayeslmm import ModelSpec, OptionError
from bayeslmm.bayes import build_model, sample
from bayeslmm.suff import stats_model_spec

from .test_suff import CASES, chunked


def _logp_fn(model):
    import pytensor

    return pytensor.function(model.value_vars, model.logp(), mode="FAST_COMPILE")


@pytest.fixture(scope="module", params=list(CASES))
def specs(request):
    formula, load = CASES[request.param]
    df = load()
    return request.param, bayeslmm.model_spec(formula, df), stats_model_spec(chunked(formula, df, seed=11))


@pytest.mark.parametrize("param", ["marginal", "restricted"])
def test_model_from_blocks_has_the_log_density_of_the_model_from_rows(specs, param) -> None:
    name, rows, stats = specs
    assert isinstance(stats, ModelSpec) and not stats.has_rows and stats.y.size == 0 and stats.n == rows.n
    m_rows, m_stats = build_model(rows, param=param), build_model(stats, param=param)
    assert [v.name for v in m_rows.value_vars] == [v.name for v in m_stats.value_vars]
    f_rows, f_stats = _logp_fn(m_rows), _logp_fn(m_stats)
    rng = np.random.default_rng(5)
    ip = m_rows.initial_point()
    for _ in range(4):
        pt = {k: v + rng.normal(scale=0.5, size=np.shape(v)) for k, v in ip.items()}
        if "beta" in pt:
            pt["beta"] = rng.normal(scale=3.0, size=pt["beta"].shape) + np.mean(rows.y) * (np.arange(rows.p) == 0)
        args = [pt[v.name] for v in m_rows.value_vars]
        a, b = float(f_rows(*args)), float(f_stats(*args))
        assert np.isfinite(a)
        assert abs(a - b) <= 1e-8 * abs(a), (name, param, a, b)


def test_default_priors_from_blocks_match_the_rows(specs) -> None:
    from bayeslmm.bayes._model import default_priors

    _, rows, stats = specs
    d_rows, d_stats = default_priors(rows), default_priors(stats)
    for k in d_rows:
        assert d_stats[k] == pytest.approx(d_rows[k], rel=1e-10)


def test_what_needs_the_rows_says_so() -> None:
    df = bayeslmm.datasets.load("pig_weights")
    spec = stats_model_spec(bayeslmm.suff.suff_stats("weight ~ num_weeks + (1 | id_num)", df))
    with pytest.raises(OptionError, match="conditional"):
        build_model(spec, param="conditional")
    with pytest.raises(OptionError, match="posterior_predictive"):
        sample(spec, param="marginal", posterior_predictive=True, draws=10, tune=10, chains=1)
    with pytest.raises(bayeslmm.DataError, match="SuffStats"):
        stats_model_spec(df)


def test_too_many_random_effect_draws_is_an_error_that_says_what_to_do(monkeypatch) -> None:
    import bayeslmm.bayes._sample as s

    df = bayeslmm.datasets.load("pig_weights")
    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", df)
    monkeypatch.setattr(s, "MAX_RANEF_BYTES", 1000)
    with pytest.raises(OptionError, match="ranef=False"):
        sample(spec, param="marginal", draws=10, tune=10, chains=1)


def test_sampling_from_blocks_gives_the_posterior_without_rows() -> None:
    df = bayeslmm.datasets.load("pig_weights")
    formula = "weight ~ num_weeks + (1 | id_num)"
    fit = bayeslmm.suff.lmm_from_stats(chunked(formula, df, seed=2))
    idata = sample(fit.spec, param="marginal", draws=300, tune=300, chains=1, seed=4, beta_prior_var=1e4)
    post = idata.posterior
    assert set(post["coef"].values) == {"(Intercept)", "num_weeks"}
    assert post["b_id_num"].shape == (1, 300, 48, 1)
    assert set(idata.children) == {"posterior", "sample_stats"}
    # with 432 rows the posterior means sit near REML (they differ by a few posterior sds at most)
    beta, sd = post["beta"].mean(("chain", "draw")).values, post["beta"].std(("chain", "draw")).values
    assert np.all(np.abs(beta - fit.fixef.to_numpy()) < 3 * sd)
    vc = post["varcorr"].mean(("chain", "draw")).values
    assert vc[-1] == pytest.approx(fit.sigma**2, rel=0.15)
    # the random effects are the BLUPs' posterior counterpart
    b = post["b_id_num"].mean(("chain", "draw")).values[:, 0]
    assert np.corrcoef(b, fit.ranef()["condval"])[0, 1] > 0.99
    idata2 = sample(fit.spec, param="restricted", draws=50, tune=50, chains=1, seed=4, ranef=False)
    assert "beta" in idata2.posterior and "b_id_num" not in idata2.posterior
