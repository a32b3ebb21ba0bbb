"""The empirical semivariogram (``bayeslmm.variogram``) against nlme's ``Variogram``.

Reference: ``reference/make_variogram_reference.R`` -> ``reference/nlme_variogram.json``:

* BodyWeight, ``lme(weight ~ Time * Diet, random = ~ 1 | Rat, corExp(form = ~ Time, nugget = TRUE))``
  (ours: ``ou(Time | Rat)`` and ``(1 | Rat)``), ``Variogram(fit, form = ~ Time, ...)`` with the
  default bins (one per distinct lag), Pearson / response / normalized residuals, ``robust``,
  ``maxDist``, quantile, fixed and given breaks, no binning;
* Wheat2, ``gls(yield ~ variety - 1, corSpher(form = ~ latitude + longitude, nugget = TRUE))``
  (ours: ``sph(latitude + longitude | 1)``), ``Variogram(fit, form = ~ latitude + longitude,
  maxDist = 32)``: 20 quantile bins of ~25,000 pairs.

Three layers: the binned semivariogram of nlme's own residuals (to rounding: the bins, medians and
counts are nlme's exactly); the whole pipeline at nlme's estimates (Wheat2: our REML criterion at
nlme's parameters, where our residuals are nlme's); the whole pipeline on our own fit (BodyWeight,
which agrees with nlme's to ~1e-7 in the log-likelihood), to a looser tolerance. The model's
semivariogram is checked against nlme's ``modelVariog`` (correlation scale) and, where nlme has
none (structures by visit), against the covariance matrix the fit reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import OptionError
from bayeslmm.freq import LMMFit, OptimizerRecord, make_engine
from bayeslmm.freq._variogram import bin_pairs, model_curve, sample_variogram

HERE = Path(__file__).resolve().parent
REF = {c["name"]: c for c in json.loads((HERE / "reference" / "nlme_variogram.json").read_text())["cases"]}
CALLS = [(name, v["name"]) for name, c in REF.items() for v in c["variograms"]]


def _case_data(case: dict[str, Any]) -> pd.DataFrame:
    return pd.read_csv(HERE / "data" / f"{case['data']}.csv", dtype={f: str for f in case["factors"]})


def _args(v: dict[str, Any]) -> dict[str, Any]:
    """nlme's arguments of a call as our keywords (an empty R list arrives as [])."""
    a = v["args"] if isinstance(v["args"], dict) else {}
    return {
        "resid_type": a.get("resType", "pearson"),
        "robust": bool(a.get("robust", False)),
        "max_dist": a.get("maxDist"),
        "collapse": a.get("collapse", "quantiles"),
        "nint": int(a.get("nint", 20)),
        "breaks": a.get("breaks"),
    }


def _call(case: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in case["variograms"] if v["name"] == name)


def _nlme_nat(case: dict[str, Any]) -> tuple[Any, dict[str, float], int]:
    """Our structure with nlme's estimates: (structure, natural parameters, number of coordinates)."""
    s2, rng, nug = case["sigma"] ** 2, case["range"], case["nugget"]
    if case["residual"].startswith("ou("):
        from bayeslmm.cov import OrnsteinUhlenbeck

        nat = {"process_var": s2 * (1 - nug), "rho": float(np.exp(-1 / rng)), "sigma2": s2 * nug}
        return OrnsteinUhlenbeck(), nat, 1
    from bayeslmm.cov import Spherical

    return Spherical(), {"range": rng, "nugget": nug, "sigma2": s2}, 2


def _compare(tab: pd.DataFrame, ref: dict[str, Any], rtol: float) -> None:
    assert len(tab) == len(ref["variog"])
    np.testing.assert_allclose(tab["variog"], ref["variog"], rtol=rtol)
    np.testing.assert_allclose(tab["dist"], ref["dist"], rtol=1e-12)
    np.testing.assert_array_equal(tab["n.pairs"], ref["n.pairs"])


def _fit_at(spec: Any, psi: np.ndarray) -> LMMFit:
    """The REML fit of ``spec`` at the covariance parameters ``psi`` (beta and the scale profiled), unoptimised."""
    psi = np.asarray(psi, dtype=float)
    record = OptimizerRecord("given", psi, psi, 0.0, 0, "given", True, False, np.zeros(0), np.zeros((0, 0)))
    return LMMFit(spec, "REML", make_engine(spec, "REML"), record, 0.0)


# ------------------------------------------------------------ the computation, on nlme's residuals
@pytest.mark.parametrize(("case", "call"), CALLS, ids=[f"{a}-{b}" for a, b in CALLS])
def test_sample_variogram_of_nlme_residuals_is_nlmes(case: str, call: str) -> None:
    c = REF[case]
    v = _call(c, call)
    kw = _args(v)
    rows = c["rows"]
    codes = pd.factorize(pd.Series(rows["group"]))[0]
    resid = np.asarray(rows[kw.pop("resid_type")], dtype=float)
    tab = sample_variogram(resid, codes, np.asarray(rows["coords"], dtype=float), **kw)
    ref = v["table"]
    if kw["collapse"] == "none":  # one row per pair, in another order
        order = np.lexsort((ref["variog"], ref["dist"]))
        np.testing.assert_allclose(tab["dist"], np.asarray(ref["dist"])[order], rtol=1e-12)
        np.testing.assert_allclose(tab["variog"], np.asarray(ref["variog"])[order], rtol=1e-10, atol=1e-14)
        return
    _compare(tab, ref, rtol=1e-10)


@pytest.mark.parametrize("case", sorted(REF))
def test_model_curve_at_nlmes_estimates_is_nlmes_model_variogram(case: str) -> None:
    """nlme's modelVariog: sig2 (nugget + (1 - nugget)(1 - c(d))), sig2 = 1 (pearson) or sigma^2 (response)."""
    c = REF[case]
    s, nat, ndim = _nlme_nat(c)
    for v in c["variograms"]:
        if v["model"] is None:
            continue
        rt = _args(v)["resid_type"]
        got = model_curve(s, nat, np.asarray(v["model"]["dist"]), rt, ndim)
        np.testing.assert_allclose(got, v["model"]["variog"], rtol=1e-12)


# ------------------------------------------------------------ the pipeline at nlme's estimates
@pytest.fixture(scope="module")
def wheat_at_nlme() -> tuple[dict[str, Any], LMMFit, pd.DataFrame]:
    """Our model of Wheat2 at nlme's (local) REML estimate: range, nugget; beta and the sill profiled."""
    c = REF["wheat2_sph_gls"]
    df = _case_data(c)
    spec = bayeslmm.model_spec(c["formula"], df, residual=c["residual"])
    psi = np.array([np.log(c["range"] / spec.residual.structure.d0), c["nugget"]])
    return c, _fit_at(spec, psi), df


def test_wheat2_pipeline_at_nlmes_estimates(wheat_at_nlme) -> None:
    c, fit, _ = wheat_at_nlme
    assert fit.loglik == pytest.approx(c["loglik"], abs=1e-8)
    assert fit.sigma == pytest.approx(c["sigma"], rel=1e-9)
    np.testing.assert_allclose(fit.residuals(scaled=True), c["rows"]["normalized"], rtol=1e-8, atol=1e-10)
    for name in ("default", "response", "robust", "fixed", "all"):
        v = _call(c, name)
        kw = _args(v)
        vg = bayeslmm.variogram(fit, **kw)
        _compare(vg.table, v["table"], rtol=1e-8)
        # the curve is nlme's model semivariogram, on its own grid of distances
        s, nat, _ = _nlme_nat(c)
        np.testing.assert_allclose(
            vg.curve["model"], model_curve(s, nat, vg.curve["dist"].to_numpy(), kw["resid_type"], 2), rtol=1e-8
        )
    vg = bayeslmm.variogram(fit, resid_type="normalized", max_dist=32)
    assert (vg.table["model"] == 1.0).all()
    assert vg.lag == "distance in latitude + longitude" and vg.group == "1"


def test_model_column_averages_the_pairs(wheat_at_nlme) -> None:
    """``model``: the mean over the bin's pairs of the semivariogram at each pair's distance."""
    c, fit, _ = wheat_at_nlme
    s, nat, _ = _nlme_nat(c)
    x = np.asarray(c["rows"]["coords"])
    i, j = np.triu_indices(x.shape[0], 1)
    d = np.sqrt(((x[i] - x[j]) ** 2).sum(axis=1))
    d = d[d <= 32]
    code, nbins = bin_pairs(d)
    assert nbins == 20
    semi = model_curve(s, nat, d, "pearson", 2)
    want = [semi[code == b].mean() for b in range(nbins)]
    vg = bayeslmm.variogram(fit, resid_type="pearson", max_dist=32)
    np.testing.assert_allclose(vg.table["model"], want, rtol=1e-10)
    np.testing.assert_array_equal(vg.table["n.pairs"], np.bincount(code[code >= 0]))


# ------------------------------------------------------------ the pipeline on our own fit
@pytest.fixture(scope="module")
def bodyweight() -> tuple[dict[str, Any], LMMFit, pd.DataFrame]:
    c = REF["bodyweight_ou_lme"]
    df = _case_data(c)
    return c, bayeslmm.lmm(c["formula"], df, residual=c["residual"], method=c["method"]), df


@pytest.mark.parametrize("call", ["default", "response", "robust", "maxdist", "quantiles10", "fixed10", "breaks"])
def test_bodyweight_variogram_of_our_fit_is_nlmes(bodyweight, call: str) -> None:
    c, fit, _ = bodyweight
    assert fit.loglik == pytest.approx(c["loglik"], abs=1e-5)
    v = _call(c, call)
    kw = _args(v)
    vg = bayeslmm.variogram(fit, **kw)
    _compare(vg.table, v["table"], rtol=2e-4)
    if v["model"] is not None:  # our curve at nlme's distances, with our estimates
        s = fit.spec.residual.structure
        nat = s.natural(fit.objective.split(fit.psi)[1], fit.scale2)
        got = model_curve(s, nat, np.asarray(v["model"]["dist"]), kw["resid_type"])
        np.testing.assert_allclose(got, v["model"]["variog"], rtol=2e-4)


def test_ou_model_column_is_the_curve_at_each_lag(bodyweight) -> None:
    """One lag per bin: the pairs' mean is nugget + process_var (1 - rho^u) at the bin's lag."""
    _, fit, _ = bodyweight
    rp = fit.residual_params()
    for rt in ("response", "pearson"):
        vg = bayeslmm.variogram(fit, resid_type=rt)
        u = vg.table["dist"].to_numpy()
        want = rp["nugget"] + rp["process_var"] * (1 - rp["rho"] ** u)
        if rt == "pearson":
            want = want / (rp["nugget"] + rp["process_var"])
        np.testing.assert_allclose(vg.table["model"], want, rtol=1e-10)
        np.testing.assert_allclose(vg.curve["model"].iloc[0], want[0], rtol=1e-10)  # the grid starts at lag 1
    assert vg.lag == "|Time_j - Time_k|" and vg.group == "Rat" and vg.structure == "ou(Time | Rat)"


def test_permuting_rows_and_relabelling_groups_changes_nothing(bodyweight) -> None:
    c, fit, df = bodyweight
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(df))
    relabel = {r: f"rat{(int(r) * 7) % 17:02d}" for r in df["Rat"].unique()}
    df2 = df.iloc[perm].assign(Rat=lambda d: d["Rat"].map(relabel)).reset_index(drop=True)
    fit2 = _fit_at(bayeslmm.model_spec(c["formula"], df2, residual=c["residual"]), fit.psi)  # no optimiser noise
    assert fit2.loglik == pytest.approx(fit.loglik, abs=1e-9)
    for kw in ({}, {"resid_type": "pearson", "nint": 10}, {"robust": True, "collapse": "fixed", "nint": 7}):
        a, b = bayeslmm.variogram(fit, **kw), bayeslmm.variogram(fit2, **kw)
        pd.testing.assert_frame_equal(a.table, b.table, rtol=1e-9)
        pd.testing.assert_frame_equal(a.curve, b.curve, rtol=1e-12)
    # the computation alone, exactly
    rows = c["rows"]
    r, x = np.asarray(rows["pearson"]), np.asarray(rows["coords"], dtype=float)
    codes = pd.factorize(pd.Series(rows["group"]))[0]
    for kw in ({"nint": 10}, {"collapse": "fixed", "nint": 6, "robust": True}, {"breaks": [5, 20, 50]}):
        a = sample_variogram(r, codes, x, **kw)
        b = sample_variogram(r[perm], (codes[perm] * 5 + 3) % 16, x[perm], **kw)
        pd.testing.assert_frame_equal(a, b, rtol=1e-13)


def test_include_lowest_keeps_the_pairs_at_the_smallest_lag(bodyweight) -> None:
    """nlme cuts bins (b_k, b_k+1], so quantile bins drop the pairs at the smallest lag; include_lowest keeps them."""
    _, fit, _ = bodyweight
    a = bayeslmm.variogram(fit, nint=10)
    b = bayeslmm.variogram(fit, nint=10, include_lowest=True)
    assert b.table["n.pairs"].sum() - a.table["n.pairs"].sum() == 16  # the 16 pairs at lag 1 (days 43, 44)
    assert b.table["n.pairs"].sum() == 16 * 55


# ------------------------------------------------------------ structures by visit, time lags, no structure
def test_structure_by_visit_model_is_the_pairs_semivariance() -> None:
    """toeph over Orthodont's ages: by visit-index lag (default) and by age lag; the model's column is the
    mean of (S_jj + S_kk) / 2 - S_jk (or 1 - corr_jk) over the pairs of visits at that lag."""
    df = pd.read_csv(HERE / "data" / "orthodont.csv", dtype={"Subject": str, "Sex": str})
    fit = bayeslmm.lmm("distance ~ age * Sex", df, residual="toeph(age | Subject)")
    s = fit.spec.residual.structure
    S = s.sigma(s.natural(fit.objective.split(fit.psi)[1], fit.scale2))
    sd = np.sqrt(np.diag(S))
    vg = bayeslmm.variogram(fit)
    vp = bayeslmm.variogram(fit, resid_type="pearson", lag="age")
    assert vg.curve is None and vp.curve is None
    np.testing.assert_array_equal(vg.table["dist"], [1, 2, 3])
    np.testing.assert_array_equal(vp.table["dist"], [2, 4, 6])  # ages 8, 10, 12, 14
    np.testing.assert_array_equal(vg.table["n.pairs"], [81, 54, 27])  # 27 complete subjects
    for lag in (1, 2, 3):
        jk = [(j, j + lag) for j in range(4 - lag)]
        semi = np.mean([(S[j, j] + S[k, k]) / 2 - S[j, k] for j, k in jk])
        corr = np.mean([1 - S[j, k] / (sd[j] * sd[k]) for j, k in jk])
        assert vg.table["model"].iloc[lag - 1] == pytest.approx(semi, rel=1e-10)
        assert vp.table["model"].iloc[lag - 1] == pytest.approx(corr, rel=1e-10)
    # pearson residuals: divided by the visit's sd
    r = fit.residuals() / sd[fit.spec.residual.feats["visit"].astype(int)]
    manual = sample_variogram(r, fit.spec.residual.codes, fit.spec.residual.t)
    np.testing.assert_allclose(vp.table["variog"], manual["variog"], rtol=1e-12)


def test_fit_without_residual_structure_needs_a_lag() -> None:
    df = pd.read_csv(HERE / "data" / "bodyweight.csv", dtype={"Rat": str, "Diet": str})
    fit = bayeslmm.lmm("weight ~ Time * Diet + (1 | Rat)", df)
    with pytest.raises(OptionError, match="lag"):
        bayeslmm.variogram(fit)
    with pytest.raises(OptionError, match="data="):
        bayeslmm.variogram(fit, lag="Time")
    vg = bayeslmm.variogram(fit, lag="Time", data=df)
    assert vg.group == "Rat" and vg.structure == "iid"
    np.testing.assert_allclose(vg.table["model"], fit.sigma2, rtol=1e-12)
    np.testing.assert_allclose(vg.curve["model"], fit.sigma2, rtol=1e-12)
    # serial correlation left in the residuals: the semivariogram grows with the lag
    assert vg.table["variog"].iloc[-3:].mean() > 2 * vg.table["variog"].iloc[:3].mean()
    by_order = bayeslmm.variogram(fit, lag="order")
    np.testing.assert_array_equal(by_order.table["dist"], np.arange(1, 11))
    np.testing.assert_array_equal(by_order.table["n.pairs"], 16 * np.arange(10, 0, -1))


def test_options_are_checked(bodyweight) -> None:
    _, fit, _ = bodyweight
    with pytest.raises(OptionError, match="resid_type"):
        bayeslmm.variogram(fit, resid_type="raw")
    with pytest.raises(OptionError, match="collapse"):
        bayeslmm.variogram(fit, collapse="bins")
    with pytest.raises(OptionError, match="max_dist"):
        bayeslmm.variogram(fit, max_dist=-1)


def test_plot_draws_sample_and_model(bodyweight) -> None:
    _, fit, _ = bodyweight
    vg = bayeslmm.variogram(fit, resid_type="pearson")
    fig = vg.plot()
    (ax,) = fig.axes
    assert len(ax.collections) == 1 and len(ax.lines) == 1
    np.testing.assert_allclose(ax.lines[0].get_xydata()[:, 1], vg.curve["model"])
    assert "semivariogram" in ax.get_ylabel() and "Time" in ax.get_xlabel()
    assert "pairs within Rat" in str(vg)


def test_stratified_structure_by_visit_with_dropout() -> None:
    """ar1h(visit | arm/id) on a trial with dropout: a matrix per arm; the model's column is the mean over
    the pairs of visits of one subject (its arm's matrix), computed here by a self-join of the rows."""
    df = pd.read_csv(HERE / "data" / "sim_mmrm.csv")
    fit = bayeslmm.lmm("y ~ arm * visit", df, residual="ar1h(visit | arm/id)")
    vg = bayeslmm.variogram(fit)
    assert vg.lag == "|index of visit_j - index of visit_k|" and vg.group == "id"
    s = fit.spec.residual.structure
    nat = s.natural(fit.objective.split(fit.psi)[1], fit.scale2)
    arms = sorted(df["arm"].unique())
    S = {a: s.bases[k].sigma(s.stratum_natural(nat, k)) for k, a in enumerate(arms)}
    rows = df.assign(v=df["visit"].map({v: k for k, v in enumerate(sorted(df["visit"].unique()))}))
    pairs = rows.merge(rows, on=["id", "arm"])
    pairs = pairs[pairs["v_x"] < pairs["v_y"]]
    semi = [(S[a][j, j] + S[a][k, k]) / 2 - S[a][j, k] for a, j, k in zip(pairs["arm"], pairs["v_x"], pairs["v_y"])]
    want = pd.Series(semi).groupby((pairs["v_y"] - pairs["v_x"]).to_numpy()).agg(["mean", "size"])
    np.testing.assert_array_equal(vg.table["dist"], want.index)
    np.testing.assert_array_equal(vg.table["n.pairs"], want["size"])
    np.testing.assert_allclose(vg.table["model"], want["mean"], rtol=1e-10)
