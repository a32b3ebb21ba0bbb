"""Simulation-based calibration (SBC; Talts et al. 2018) of the ``marginal`` sampler.

What is checked
---------------
If ``theta`` is drawn from the prior, ``y`` from the model given ``theta``, and ``L`` independent
draws from the exact posterior ``p(theta | y)`` are taken, the rank of the true ``theta`` among the
draws (the number of draws below it) is uniform on ``0..L``. Averaged over the prior this holds for
every parameter at once, whatever the data, so non-uniform ranks over many replicates mean that the
posterior computed is not the posterior of the model that generated the data: a wrong density
(the Woodbury log-determinant or quadratic form of ``marginal``), a prior different from the one
the model claims, a sampler that does not converge or is biased, or a mislabelled output.

The design is fixed: 10 groups of 3 to 6 observations (44 in all, unbalanced) and one standard
normal covariate, ``y ~ x + (1 | g)``. For each of ``R`` replicates, with a fixed seed:

1. draw ``beta ~ N(0, TAU I)``, ``sd_g, sigma ~ HalfNormal(S)`` and ``b_g ~ N(0, sd_g^2)``
   with numpy (the model's own priors, passed explicitly as ``beta_prior_var=TAU, sd_scale=S``:
   the defaults are computed from ``y`` and would make the prior depend on the simulated data);
2. simulate ``y = X beta + b_g[g] + sigma e``;
3. sample ``bayeslmm.bayes.sample(spec.with_response(y), param="marginal", model=model, ...)``
   (one chain), ``model`` built once and given each replicate's ``y`` by ``set_response``;
4. keep ``L`` draws spaced evenly over the chain (thinning, so that they are roughly
   independent: the ranks are uniform only for independent draws) and take the rank of the true
   value of each of ``beta[(Intercept)]``, ``beta[x]``, ``sd_g``, ``sigma`` and the random effects
   ``b_g`` of two levels (a group of 3 and one of 6). The ``b_g`` draws are not sampled by NUTS
   but drawn afterwards from their exact conditional Gaussian, so their ranks check that step too.

Uniformity of each parameter's ``R`` ranks is tested with a Pearson chi-square on ``BINS`` equal
bins and a Kolmogorov-Smirnov test on the (seeded) jittered ranks, the smaller p-value doubled;
the threshold ``ALPHA / n_params`` (Bonferroni) keeps the chance of a false alarm of the whole
test below ``ALPHA = 0.001``. The seeds are fixed, so a given platform gives the same result on
every run.

That the test can fail is shown on the same posterior draws made wrong on purpose, without more
sampling: draws shifted by one posterior sd (a biased sampler), draws shrunk towards their mean
by a factor of 3 (an overconfident one), and ``sigma^2`` reported as ``sigma`` (the ``varcorr``
scale mixed up with the ``sd`` scale). The same test rejects each of them. With ``R = 80`` SBC
detects only gross errors: a posterior sd off by a factor of 2, or a bias of half a posterior
sd, is rejected for some parameters but not all, and the variance-for-sd mix-up is not rejected
for ``sd_g``, whose prior puts much mass near 1 where ``sd^2 ~ sd``. It complements, and does not
replace, the exact-density and grid-reference tests of ``test_bayes_model.py``. The machinery
itself (ranks, bins, tests; ``tests/sbc.py``) is checked first, in the fast tier, on an exact
conjugate posterior with thousands of replicates.

Speed
-----
The response enters the model only through data containers (``y'y``, ``X'y``, ``Z_i'y``), so
the model is built once and each replicate's response set with ``set_response``; ``sample(...,
model=model)`` then reuses the log density and gradient compiled for PyMC's NUTS by the first
replicate. With a new model per replicate (before issue 13) every replicate compiled anew: with
the default ``mode="NUMBA"`` about 11 s per replicate with PyMC's NUTS (50 s with nutpie); with
the C backend without fusion (``get_mode("CVM").excluding("fusion")``, kept here: fusion would
write constants into the generated C code) about 1.4 s (~0.4 s sampling, the rest building and
compiling), 113 s for the 80 replicates on a quiet 2-core machine, against 58 s with one model,
plus a one-off ~30 s to fill the C cache on a fresh machine. What is
tested is therefore the ``marginal`` model (priors, marginal density and its gradient), PyMC's
NUTS (``sampler="pymc"``) and the post-processing of ``sample`` (``varcorr``, the ``b_<term>``
draws); not nutpie, nor the Numba-compiled density (the same graph, another backend).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.bayes import build_model, sample, set_response

from .sbc import rank, rank_chi2, rank_ks, thin, uniformity_pvalue

ALPHA = 0.001  # family-wise false-alarm rate of each uniformity test
R = 80  # replicates
DRAWS, TUNE = 240, 200  # per replicate, one chain
L = 39  # kept draws per replicate (every ~6th): ranks 0..39
BINS = 5  # 8 rank values per bin, R / BINS = 16 expected per bin
TAU, S = 1.0, 1.0  # beta_prior_var and sd_scale, fixed
SIZES = (3, 4, 5, 6, 3, 5, 4, 6, 3, 5)
B_LEVELS = (0, 3)  # random effects checked: a group of 3 and a group of 6
SEED = 20240611


def _design() -> Any:
    rng = np.random.default_rng(SEED)
    g = np.repeat(np.arange(len(SIZES)), SIZES)
    df = pd.DataFrame({"y": np.zeros(g.size), "x": rng.normal(size=g.size), "g": [f"g{i:02d}" for i in g]})
    return bayeslmm.model_spec("y ~ x + (1 | g)", df)


def _simulate(spec: Any, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicate ``r``: true parameters (``beta``, ``sd_g``, ``sigma``, ``b_g`` of ``B_LEVELS``) and ``y``."""
    rng = np.random.default_rng([SEED, r])
    t = spec.terms[0]
    beta = rng.normal(0.0, np.sqrt(TAU), spec.p)
    sd_g, sigma = np.abs(rng.normal(0.0, S, 2))
    b = sd_g * rng.normal(size=t.nlevels)
    y = spec.X @ beta + b[t.codes] + sigma * rng.normal(size=spec.n)
    return np.r_[beta, sd_g, sigma, b[list(B_LEVELS)]], y


def run_sbc() -> dict[str, Any]:
    """Run the ``R`` replicates: true values ``(R, k)``, kept draws ``(R, L, k)``, diagnostics."""
    import time

    import arviz as az
    from pytensor.compile.mode import get_mode

    mode = get_mode("CVM").excluding("fusion")  # see "Speed" in the module docstring
    spec = _design()
    t = spec.terms[0]
    names = [f"beta[{c}]" for c in spec.fixef_names] + ["sd_g", "sigma"] + [f"b_g[{t.levels[i]}]" for i in B_LEVELS]
    truths, kept, ess, div = [], [], [], []
    start = time.perf_counter()
    model = build_model(spec, param="marginal", beta_prior_var=TAU, sd_scale=S, lkj_eta=2.0, mutable_response=True)
    for r in range(R):
        truth, y = _simulate(spec, r)
        set_response(model, spec, y)
        idata = sample(
            spec.with_response(y),
            param="marginal",
            draws=DRAWS,
            tune=TUNE,
            chains=1,
            seed=r,
            sampler="pymc",
            mode=mode,
            posterior_predictive=False,
            model=model,
        )
        post = idata.posterior
        draws = np.column_stack(
            [
                post["beta"].values[0],
                post["sd_g"].values[0, :, 0],
                post["sigma"].values[0],
                post["b_g"].values[0][:, list(B_LEVELS), 0],
            ]
        )
        truths.append(truth)
        kept.append(thin(draws, L))
        e = az.ess(post.to_dataset()[["beta", "sd_g", "sigma"]])
        ess.append(np.r_[e["beta"].values.ravel(), e["sd_g"].values.ravel(), e["sigma"].values.ravel()])
        div.append(int(idata.sample_stats["diverging"].sum()))
    return {
        "names": names,
        "truth": np.array(truths),
        "draws": np.array(kept),
        "ess": np.array(ess),
        "divergences": np.array(div),
        "seconds": time.perf_counter() - start,
    }


@pytest.fixture(scope="module")
def sbc() -> dict[str, Any]:
    return run_sbc()


def _pvalues(truth: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per parameter: the uniformity p-value of the ranks, and the ranks ``(R, k)``."""
    ranks = rank(truth, draws.swapaxes(0, 1))
    return np.array([uniformity_pvalue(ranks[:, j], L, BINS) for j in range(ranks.shape[1])]), ranks


def _report(sbc: dict[str, Any], p: np.ndarray, ranks: np.ndarray, what: str) -> str:
    rows = [f"{what} (R={R}, L={L}, sampling {sbc['seconds']:.0f} s):"]
    for j, name in enumerate(sbc["names"]):
        rows.append(f"  {name:18s} p={p[j]:.3g}  bins={rank_chi2(ranks[:, j], L, BINS)[1].tolist()}")
    return "\n".join(rows)


# ---------------------------------------------------------------- the machinery, on an exact posterior


def test_sbc_machinery_on_an_exact_conjugate_posterior() -> None:
    """``mu ~ N(0, 1)``, five ``y_i ~ N(mu, 1)``: exact posterior draws give uniform ranks; wrong ones do not."""
    rng = np.random.default_rng(1)
    n, reps = 5, 3000
    mu = rng.normal(size=reps)
    ybar = mu + rng.normal(size=reps) / np.sqrt(n)
    m, s = n * ybar / (n + 1), 1 / np.sqrt(n + 1)
    z = rng.normal(size=(L, reps))
    ok = rank(mu, m + s * z)
    assert ok.min() >= 0 and ok.max() <= L
    assert uniformity_pvalue(ok, L, BINS) > ALPHA
    assert rank_ks(ok, L) == rank_ks(ok, L)  # deterministic jitter
    # too narrow, too wide, biased, and the posterior of a prior N(0, 1/4) instead of N(0, 1)
    for wrong in (m + 0.5 * s * z, m + 2 * s * z, m + 0.3 * s + s * z, n * ybar / (n + 4) + z / np.sqrt(n + 4)):
        assert uniformity_pvalue(rank(mu, wrong), L, BINS) < ALPHA
    with pytest.raises(ValueError, match="multiple"):
        rank_chi2(ok, L, 7)
    np.testing.assert_array_equal(thin(np.arange(240), 4), [0, 80, 159, 239])


# ---------------------------------------------------------------- the marginal sampler


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")
def test_marginal_sampler_is_calibrated(sbc: dict[str, Any]) -> None:
    p, ranks = _pvalues(sbc["truth"], sbc["draws"])
    print("\n" + _report(sbc, p, ranks, "SBC of the marginal sampler"))
    assert np.all(p > ALPHA / len(p)), _report(sbc, p, ranks, "non-uniform ranks")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")
def test_draws_are_nearly_independent_and_without_divergences(sbc: dict[str, Any]) -> None:
    """The ranks are uniform only for independent draws: the chain's ESS should cover the ``L`` kept draws."""
    ess = sbc["ess"]
    print(
        f"\nESS of {DRAWS} draws: min {ess.min():.0f}, 5% {np.quantile(ess, 0.05):.0f}, "
        f"median {np.median(ess):.0f} (L={L}); divergences {sbc['divergences'].sum()} "
        f"in {np.count_nonzero(sbc['divergences'])} replicates"
    )
    assert np.median(ess) > 2 * L
    assert np.mean(ess < L) < 0.05
    assert sbc["divergences"].sum() <= 0.002 * R * DRAWS


def _shift(truth: np.ndarray, d: np.ndarray) -> np.ndarray:  # a biased sampler: one posterior sd up
    return d + d.std(axis=1, keepdims=True)


def _shrink(truth: np.ndarray, d: np.ndarray) -> np.ndarray:  # an overconfident sampler: a third of the spread
    m = d.mean(axis=1, keepdims=True)
    return m + (d - m) / 3


def _variance_for_sd(truth: np.ndarray, d: np.ndarray) -> np.ndarray:  # varcorr's sigma^2 reported as sigma
    d = d.copy()
    d[:, :, 3] **= 2
    return d


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")
@pytest.mark.parametrize(
    ("wrong", "params"), [(_shift, slice(None)), (_shrink, slice(None)), (_variance_for_sd, slice(3, 4))]
)
def test_a_miscalibrated_sampler_is_rejected(sbc: dict[str, Any], wrong: Any, params: slice) -> None:
    """The same test, on the same replicates, rejects draws made wrong on purpose (so it can fail)."""
    p, ranks = _pvalues(sbc["truth"], wrong(sbc["truth"], sbc["draws"]))
    print("\n" + _report(sbc, p, ranks, wrong.__name__))
    assert np.all(p[params] < ALPHA / len(p)), _report(sbc, p, ranks, f"{wrong.__name__} not rejected")
