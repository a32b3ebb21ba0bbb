"""The conditional PyMC model built from a ModelSpec (slow tier: PyTensor compiles C code)."""

from __future__ import annotations

import numpy as np
import pytest

import bayeslmm
from bayeslmm.bayes import build_model, sample, varcorr_labels

pytestmark = pytest.mark.slow


def test_structure_names_coordinates_and_finite_logp(sleep) -> None:
    spec = bayeslmm.model_spec("Reaction ~ Days + (Days | Subject)", sleep)
    m = build_model(spec)
    assert {"beta", "sigma", "z_Subject", "b_Subject", "varcorr", "y"} <= set(m.named_vars)
    assert list(m.coords["coef"]) == ["(Intercept)", "Days"]
    assert list(m.coords["Subject_level"]) == list(spec.terms[0].levels)
    assert list(m.coords["component"]) == varcorr_labels(spec) == [
        "Subject|(Intercept)", "Subject|Days", "Subject|(Intercept)|Days", "Residual"]
    assert np.isfinite(m.compile_logp()(m.initial_point()))


def test_bad_priors_and_serial_models_are_refused(sleep) -> None:
    spec = bayeslmm.model_spec("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(bayeslmm.OptionError, match="positive"):
        build_model(spec, beta_prior_var=-1.0)
    ser = bayeslmm.model_spec("Reaction ~ Days", sleep, residual="ar1(Days | Subject)")
    with pytest.raises(bayeslmm.OptionError, match="serial"):
        build_model(ser)


def test_posterior_of_the_pig_model_is_near_reml(pig) -> None:
    spec = bayeslmm.model_spec("weight ~ num_weeks + (1 | id_num)", pig)
    idata = sample(spec, draws=500, tune=500, chains=2, seed=3)
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(idata.children)
    post = idata.posterior
    vc = post["varcorr"].mean(("chain", "draw")).to_numpy()
    fit = bayeslmm.lmm("weight ~ num_weeks + (1 | id_num)", pig)
    # with 48 pigs the posterior mean of the pig variance sits a little above REML; residual within 5%
    assert vc[0] == pytest.approx(fit.varcorr().vcov[0], rel=0.2)
    assert vc[1] == pytest.approx(fit.varcorr().vcov[1], rel=0.05)
    np.testing.assert_allclose(post["beta"].mean(("chain", "draw")), fit.fixef, rtol=0.01)
    assert idata.log_likelihood["y"].shape[-1] == 432
