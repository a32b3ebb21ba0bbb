"""Large constants in the data cost no digits: shifts of y and of a covariate with a random slope.

The data are made so that ``y + c`` and ``x + c`` are exact in floating point (values on a grid of
2**-20, shifts on the same grid and below 2**32): every difference below is the engine's, not the
data's. Invariances checked (relative 1e-8 unless said):

* ``y + c``: log-likelihood, slopes, SEs and variance components unchanged; the intercept moves by c.
* ``x + c`` with ``(x | g)``: log-likelihood, slope, its SE, slope and residual variances unchanged;
  the intercept becomes ``b0 - c b1``, and the intercept's variance and covariance transform exactly
  as ``D' = M D M'``, ``M = [[1, -c], [0, 1]]`` (the same model in another parameterisation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.suff import lmm_from_stats, suff_stats

GRID = 2.0**20
FORMULA = "y ~ x + (x | g)"
KS = (0.0, 1e2, 1e4, 1e6, 1e8)


def _grid(v: np.ndarray) -> np.ndarray:
    return np.round(v * GRID) / GRID


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(2024)
    G, m = 30, 8
    g = np.repeat(np.arange(G), m)
    x = rng.uniform(0, 9, G * m)
    b = rng.multivariate_normal([0, 0], [[16.0, 1.0], [1.0, 1.5]], size=G)
    y = 40 + 3.0 * x + b[g, 0] + b[g, 1] * x + rng.normal(0, 2.5, G * m)
    return pd.DataFrame({"y": _grid(y), "x": _grid(x), "g": [f"s{i:02d}" for i in g]})


def _shift(sd: float, k: float) -> float:
    return float(_grid(np.array([k * sd]))[0])


def _D(fit) -> np.ndarray:
    return fit.cov_matrices()["g"]


@pytest.fixture(scope="module")
def base(data):
    return bayeslmm.lmm(FORMULA, data)


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.mark.parametrize("k", KS)
def test_shift_of_y(data, base, k) -> None:
    c = _shift(data.y.std(), k)
    d = data.assign(y=data.y + c)
    assert np.all(d.y - c == data.y)  # exact
    fit = bayeslmm.lmm(FORMULA, d)
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-8)
    assert fit.fixef["(Intercept)"] - c == pytest.approx(base.fixef["(Intercept)"], rel=1e-8)
    assert fit.fixef["x"] == pytest.approx(base.fixef["x"], rel=1e-8)
    assert _rel(fit.se, base.se) < 1e-8
    assert _rel(fit.varcorr().vcov, base.varcorr().vcov) < 1e-8
    assert _rel(fit.ranef().condval, base.ranef().condval) < 1e-7
    # residuals of a response near c are known to its precision (a few ulp of c), as the data are
    np.testing.assert_allclose(fit.residuals(), base.residuals(), rtol=0, atol=1e-9 + 8 * np.spacing(c))
    assert fit.converged and not fit.singular


@pytest.mark.parametrize("k", KS)
def test_shift_of_a_covariate_with_a_random_slope(data, base, k) -> None:
    c = _shift(data.x.std(), k)
    d = data.assign(x=data.x + c)
    assert np.all(d.x - c == data.x)
    fit = bayeslmm.lmm(FORMULA, d)
    b0, b1 = base.fixef
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-8)
    assert fit.fixef["x"] == pytest.approx(b1, rel=1e-8)
    # the intercept at x = 0 of the shifted covariate: b0 - c b1, checked where it is not all c b1
    assert fit.fixef["(Intercept)"] + c * fit.fixef["x"] == pytest.approx(b0, rel=1e-8, abs=1e-8 * c * abs(b1))
    assert fit.se["x"] == pytest.approx(base.se["x"], rel=1e-8)
    M = np.array([[1.0, -c], [0.0, 1.0]])
    D0, D = _D(base), _D(fit)
    assert D[1, 1] == pytest.approx(D0[1, 1], rel=1e-8)
    assert fit.sigma2 == pytest.approx(base.sigma2, rel=1e-8)
    np.testing.assert_allclose(D, M @ D0 @ M.T, rtol=1e-7)
    V = M @ base.vcov.to_numpy() @ M.T
    np.testing.assert_allclose(fit.vcov.to_numpy(), V, rtol=1e-7)
    assert fit.converged


@pytest.mark.parametrize("k", (0.0, 1e4, 1e8))
def test_shift_from_sufficient_statistics(data, base, k) -> None:
    """Chunks of 50 rows: the centres come from the first chunk, not from all the rows."""
    c = _shift(data.y.std(), k)
    cx = _shift(data.x.std(), k)
    d = data.assign(y=data.y + c, x=data.x + cx)
    ref = bayeslmm.lmm(FORMULA, d)
    fit = lmm_from_stats(suff_stats(FORMULA, d, chunk_rows=50))
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-8)
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-9)
    assert fit.fixef["x"] == pytest.approx(base.fixef["x"], rel=1e-7)
    assert fit.se["x"] == pytest.approx(base.se["x"], rel=1e-7)
    assert fit.sigma2 == pytest.approx(base.sigma2, rel=1e-7)
    assert _D(fit)[1, 1] == pytest.approx(_D(base)[1, 1], rel=1e-7)


def test_shift_with_dask(data, base) -> None:
    dd = pytest.importorskip("dask.dataframe")
    from bayeslmm.suff import lmm_dask

    c, cx = _shift(data.y.std(), 1e8), _shift(data.x.std(), 1e6)
    d = data.assign(y=data.y + c, x=data.x + cx)
    fit = lmm_dask(FORMULA, dd.from_pandas(d, npartitions=3))
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-8)
    assert fit.fixef["x"] == pytest.approx(base.fixef["x"], rel=1e-7)
    assert fit.se["x"] == pytest.approx(base.se["x"], rel=1e-7)


@pytest.mark.parametrize("k", (0.0, 1e4, 1e8))
def test_ml_fit_and_expected_information(data, k) -> None:
    base = bayeslmm.lmm("y ~ x + (1 | g)", data, method="ML")
    c = _shift(data.y.std(), k)
    fit = bayeslmm.lmm("y ~ x + (1 | g)", data.assign(y=data.y + c), method="ML")
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-9)
    assert (
        _rel(
            fit.vc_se()["se"] if "se" in fit.vc_se() else fit.vc_se().iloc[:, -1],
            base.vc_se()["se"] if "se" in base.vc_se() else base.vc_se().iloc[:, -1],
        )
        < 1e-6
    )


def test_rank_check_judges_a_shifted_covariate_by_its_variation(data) -> None:
    """R's qr would drop x + 1e8 sd(x) as collinear with the intercept; the centred check keeps it."""
    c = _shift(data.x.std(), 1e8)
    spec = bayeslmm.model_spec("y ~ x + (1 | g)", data.assign(x=data.x + c))
    assert spec.fixef_names == ("(Intercept)", "x")


@pytest.mark.parametrize("k", (0.0, 1e4, 1e8))
def test_pymc_marginal_density_is_invariant(data, base, k) -> None:
    """``log N(y; X beta, V)`` of the PyMC marginal model at corresponding points of the two data sets."""
    from bayeslmm.bayes._structure import structure_for

    c = _shift(data.y.std(), k)
    cx = _shift(data.x.std(), k)
    d = data.assign(y=data.y + c, x=data.x + cx)
    beta0 = base.fixef.to_numpy() + np.array([0.7, -0.2])
    D0 = _D(base) * np.array([[1.3, 0.9], [0.9, 0.8]])
    M = np.array([[1.0, -cx], [0.0, 1.0]])
    beta1 = np.array([beta0[0] + c - cx * beta0[1], beta0[1]])
    L0 = np.linalg.cholesky(D0)
    L1 = M @ L0  # L1 L1' = M D0 M' (D1 itself is too ill-conditioned for a Cholesky at 1e8)
    s2 = base.sigma2 * 1.1

    def logp(df, beta, L):
        spec = bayeslmm.model_spec(FORMULA, df)
        st = structure_for(spec)
        return float(st.pt_marginal([L], {"sigma2": s2}, beta, spec.n).eval())

    ref = logp(data, beta0, L0)
    assert logp(d, beta1, L1) == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("k", (0.0, 1e2, 1e4))
def test_pymc_restricted_density_equals_the_dense_formula_when_shifted(data, k) -> None:
    """``log N(y; 0, V + tau XX')`` (beta integrated out) against the dense normal density."""
    import scipy.stats

    from bayeslmm.bayes._structure import structure_for

    c = _shift(data.y.std(), k)
    d = data.assign(y=data.y + c)
    spec = bayeslmm.model_spec("y ~ x + (1 | g)", d)
    s2, tau, sd2 = 6.0, 1e3 * data.y.var(), 14.0
    st = structure_for(spec)
    val = float(st.pt_restricted([np.array([[np.sqrt(sd2)]])], {"sigma2": s2}, tau, spec.n).eval())
    Z = (spec.terms[0].codes[:, None] == np.arange(spec.terms[0].nlevels)[None, :]).astype(float)
    V = sd2 * Z @ Z.T + s2 * np.eye(spec.n) + tau * spec.X @ spec.X.T
    assert val == pytest.approx(scipy.stats.multivariate_normal(np.zeros(spec.n), V).logpdf(spec.y), rel=1e-8)


def test_prediction_se_at_a_shifted_covariate(data, base) -> None:
    c = _shift(data.x.std(), 1e8)
    fit = bayeslmm.lmm(FORMULA, data.assign(x=data.x + c))
    new = data.iloc[:5]
    a = base.predict(new, re_form=False, se_fit=True)
    b = fit.predict(new.assign(x=new.x + c), re_form=False, se_fit=True)
    np.testing.assert_allclose(b["se_fixed"], a["se_fixed"], rtol=1e-7)
    np.testing.assert_allclose(b["fit"], a["fit"], rtol=1e-7)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_linear_model_is_invariant(data, method) -> None:
    base = bayeslmm.lm("y ~ x", data, method=method)
    c, cx = _shift(data.y.std(), 1e8), _shift(data.x.std(), 1e8)
    fit = bayeslmm.lm("y ~ x", data.assign(y=data.y + c, x=data.x + cx), method=method)
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-9)
    assert fit.fixef["x"] == pytest.approx(base.fixef["x"], rel=1e-9)
    assert np.sqrt(fit.vcov.loc["x", "x"]) == pytest.approx(np.sqrt(base.vcov.loc["x", "x"]), rel=1e-9)
