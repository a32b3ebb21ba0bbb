"""The response of a built PyMC model is data: ``set_response`` turns it into the model of another response.

For every parameterisation and structure class (one grouping factor, with ``q = 1`` and ``q = 4``;
crossed factors; an ``ou`` and a ``cs`` residual structure), the model built from ``spec`` and then
given ``y2`` has, at random points, the log density of the model built afresh from
``spec.with_response(y2)`` (to 1e-10 relative), although its working columns keep the shift of the
first response; giving the first response back restores the first density. Wrong responses and
models are refused with messages that say what to do, and ``sample(model=...)`` reuses the model.
No sampling except one short run; the graphs are evaluated in PyTensor's FAST_COMPILE mode.
"""

from __future__ import annotations

import numpy as np
import pytest

import bayeslmm
from bayeslmm import DataError, OptionError
from bayeslmm.bayes import build_model, sample, set_response
from bayeslmm.bayes._structure import DenseGroupStructure, FullStructure, GroupStructure, structure_for

from .conftest import random_frame
from .test_cs import cs_frame

CASES = [
    ("y ~ x + (1 | a)", None, GroupStructure),
    ("y ~ x + (x + f | a)", None, GroupStructure),
    ("y ~ x + (1 | a) + (1 | b)", None, FullStructure),
    ("y ~ x + (1 | a)", "ou(t | a)", DenseGroupStructure),
    ("y ~ t + x + (0 + t | g)", "cs(t | g)", DenseGroupStructure),
]
PARAMS = ("conditional", "marginal", "restricted")


def _frame(residual):
    if residual and residual.startswith("cs"):
        return cs_frame()
    df = random_frame(5, 90)
    df["t"] = np.random.default_rng(7).choice([0.0, 0.5, 1.3, 2.0, 3.7, 5.1], len(df))
    return df


def _logp(m):
    import pytensor

    return pytensor.function(m.value_vars, m.logp(), mode="FAST_COMPILE")


def _points(m, k=4):
    rng = np.random.default_rng(3)
    ip = m.initial_point()
    out = []
    for _ in range(k):
        pt = {n: v + rng.normal(scale=0.4, size=np.shape(v)) for n, v in ip.items()}
        if "beta" in pt:
            pt["beta"] = rng.normal(scale=2.0, size=pt["beta"].shape)
        out.append([pt[v.name] for v in m.value_vars])
    return out


@pytest.mark.parametrize("formula,residual,cls", CASES)
@pytest.mark.parametrize("param", PARAMS)
def test_set_response_gives_the_model_built_from_that_response(formula, residual, cls, param) -> None:
    spec = bayeslmm.model_spec(formula, _frame(residual), residual=residual)
    assert isinstance(structure_for(spec), cls)
    rng = np.random.default_rng(11)
    y2 = 50.0 + 3.0 * spec.y[rng.permutation(spec.n)] + rng.normal(size=spec.n)  # another scale and shift
    kw = {"beta_prior_var": 30.0, "sd_scale": 2.0}
    m = build_model(spec, param=param, **kw, mutable_response=True)
    f = _logp(m)  # compiled once: it must follow the data
    pts = _points(m)
    first = [float(f(*p)) for p in pts]
    set_response(m, spec.with_response(np.zeros(spec.n)), y2)  # the spec's own response does not matter
    ref = _logp(build_model(spec.with_response(y2), param=param, **kw))
    for p, a in zip(pts, first):
        b, r = float(f(*p)), float(ref(*p))
        assert np.isfinite(r) and b != pytest.approx(a, rel=1e-6)
        assert b == pytest.approx(r, rel=1e-10), (param, b, r)
    set_response(m, spec, spec.y)
    for p, a in zip(pts, first):
        assert float(f(*p)) == pytest.approx(a, rel=1e-12)


def test_the_working_shift_stays_that_of_the_model() -> None:
    """The new containers use the model's shift; a model built from ``y2`` has another one, same density."""
    spec = bayeslmm.model_spec("y ~ x + (1 | a)", _frame(None))
    y2 = spec.y + 1e4
    m = build_model(spec, param="marginal", mutable_response=True)
    shift = float(m["y_shift"].get_value())
    set_response(m, spec, y2)
    assert float(m["y_shift"].get_value()) == shift
    assert float(
        build_model(spec.with_response(y2), param="marginal", mutable_response=True)["y_shift"].get_value()
    ) == pytest.approx(shift + 1e4)
    yw = y2 - shift
    assert float(m["y_yty"].get_value()) == pytest.approx(float(yw @ yw), rel=1e-12)


def test_wrong_responses_and_models_are_refused() -> None:
    spec = bayeslmm.model_spec("y ~ x + (1 | a)", _frame(None))
    with pytest.raises(OptionError, match="mutable_response=True"):
        set_response(build_model(spec, param="marginal"), spec, spec.y)
    m = build_model(spec, param="marginal", mutable_response=True)
    with pytest.raises(DataError, match=rf"one value per row.*\({spec.n},\); got \({spec.n - 1},\)"):
        set_response(m, spec, spec.y[:-1])
    with pytest.raises(DataError, match="missing or infinite"):
        set_response(m, spec, np.r_[spec.y[:-1], np.nan])
    other = bayeslmm.model_spec("y ~ x + (1 | b)", _frame(None))
    with pytest.raises(OptionError, match="another design"):
        set_response(m, other, other.y)
    import pymc as pm

    with pytest.raises(OptionError, match="not made by bayeslmm.bayes.build_model"):
        set_response(pm.Model(), spec, spec.y)
    from bayeslmm.suff import stats_model_spec, suff_stats

    df = bayeslmm.datasets.load("pig_weights")
    stats = stats_model_spec(suff_stats("weight ~ num_weeks + (1 | id_num)", df))
    with pytest.raises(OptionError, match="no rows"):
        set_response(build_model(stats, param="marginal", mutable_response=True), stats, np.zeros(stats.n))
    with pytest.raises(OptionError, match="param='marginal'"):
        sample(spec, model=m, draws=10, tune=10, chains=1)
    with pytest.raises(OptionError, match="give them to build_model"):
        sample(spec, model=m, param="marginal", beta_prior_var=3.0, draws=10, tune=10, chains=1)


def test_sample_reuses_a_model_for_a_new_response() -> None:
    """``sample(model=...)`` samples the given model with ``spec``'s response: the posterior follows it."""
    spec = bayeslmm.model_spec("y ~ x + (1 | a)", _frame(None))
    m = build_model(spec, param="marginal", beta_prior_var=1e4, sd_scale=5.0, mutable_response=True)
    kw = {"param": "marginal", "draws": 150, "tune": 150, "chains": 1, "seed": 1, "mode": "FAST_RUN"}
    means = []
    for shift in (0.0, 40.0):
        idata = sample(spec.with_response(spec.y + shift), model=m, **kw)
        assert "constant_data" not in idata.children
        np.testing.assert_array_equal(idata.observed_data["y"].values, spec.y + shift)
        means.append(float(idata.posterior["beta"].values[0, :, 0].mean()))
        assert "b_a" in idata.posterior
    assert means[1] - means[0] == pytest.approx(40.0, abs=1.0)
    assert float(m["y_shift"].get_value()) == float(
        build_model(spec, param="marginal", mutable_response=True)["y_shift"].get_value()
    )
