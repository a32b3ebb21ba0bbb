"""Golden tests: structured residual covariances (issue 14) against nlme and glmmTMB.

Reference: ``reference/nlme_mmrm.json``, made by ``reference/make_nlme_mmrm_reference.R`` (its header
says how each structure is fitted in R).  39 cases on Orthodont (``us``, ``cs``, ``csh``, ``ar1h``,
``diag``, independent errors, and lme with a random intercept plus ``ar1`` with and without
``ident(age)``), the simulated MMRM trial ``sim_mmrm`` (gls ``us``, ``cs``, ``ar1h``; glmmTMB ``us``,
``toeph`` and ``us`` per arm), BodyWeight (lme with ``power``, ``exp``, ``power`` + ``ar1``; gls with
``power``) and Wheat2 (``exp``, ``gau``, ``sph`` with a nugget over the whole field).

Each case is fitted once per module with the case's ``formula`` (plus ``random``), ``structure`` and
``variance`` as written.  What is compared:

* the (restricted) log-likelihood: ours never below the reference's by more than 1e-4, and equal to it
  within 1e-4 where the reference converged to the maximum (not at a local maximum below ours);
* fixed effects and standard errors (the GLS ones, ``se``, not glmmTMB's ``se_engine``) to 1e-4
  relative;
* the structure's parameters to 1e-3 relative, nlme's mapped to ours: ``sigma^2`` is our ``sigma2``
  (the variance of the first visit, or of the sill for the spatial structures), varIdent's sd ratios
  give ``var(<visit>) = sigma^2 ratio^2`` (``ratio(<level>)`` for ``ident(v)``), corSymm's correlations
  times the sds our ``cov(<a>,<b>)``, ``Rho``/``Phi`` our ``rho``/``phi``, varPower's ``power`` and
  varExp's ``expon`` our ``delta``, corExp/corGaus/corSpher's ``range`` and ``nugget`` ours;
* the marginal covariance ``V_i = Z_i D Z_i' + R_i`` of a complete subject, built here from the
  structure's matrix on that subject's rows, against the reference's ``marginal_cov``.

glmmTMB cases use the ``exact`` block (the script's exact re-maximisation of glmmTMB's fit: glmmTMB's
own REML log-likelihood is good to ~4e-4 only, and its residual variance is fixed at ~1.5e-8 rather
than 0); ``wheat2_exp_gls_reml`` has no finite REML maximum (the likelihood rises as the range goes to
infinity), so only its log-likelihood is checked, as a lower bound.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import bayeslmm

HERE = Path(__file__).resolve().parent
REFERENCE = json.loads((HERE / "reference" / "nlme_mmrm.json").read_text())
CASES: dict[str, dict[str, Any]] = {c["name"]: c for c in REFERENCE["cases"]}

#: (subject column, visit column) of the longitudinal data sets
KEYS = {"orthodont": ("Subject", "age"), "sim_mmrm": ("id", "visit"), "bodyweight": ("Rat", "Time")}

#: structures and variance functions the reference must cover (issue 14's golden list)
STRUCTURES = {"us", "cs", "csh", "ar1h", "toeph", "exp", "gau", "sph"}
VARIANCES = {"power", "exp", "ident"}

#: references at a local maximum below ours: nlme's Wheat2 spherical REML fit (range 27.46, nugget 0.209,
#: logLik -533.9315) is a local maximum; like exp, the REML likelihood rises to about -533.4185 as the range
#: goes to infinity (a linear variogram), and our optimiser goes there from its default start (logLik
#: -533.4185, 0.51 higher) and says it did not converge (the Hessian is not positive definite in the
#: unbounded direction). Only the lower bound applies; started at nlme's estimate we reach nlme's fit
#: (test_local_maximum_of_the_reference_is_ours_from_its_start).
LOCAL_MAXIMUM = {"wheat2_sph_gls_reml"}
#: (test, case) -> reason: a strict xfail where our fit, not the reference, is the problem (none)
KNOWN: dict[tuple[str, str], str] = {}


def _kind(text: str | None) -> str | None:
    return None if text is None else text.split("(")[0].strip()


def _params(test: str, select: Any = None) -> list[Any]:
    """The case names for ``test`` (those ``select`` keeps), with their marks."""
    out = []
    for name, case in sorted(CASES.items()):
        if select is not None and not select(case):
            continue
        marks = []
        if (test, name) in KNOWN:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[(test, name)]))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def _converged(case: dict[str, Any]) -> bool:
    """A reference at its (global) maximum: values to compare, not only a bound."""
    return bool(case["converged"]) and case["name"] not in LOCAL_MAXIMUM


def _ref(case: dict[str, Any]) -> dict[str, Any]:
    """The reference values: glmmTMB's exact re-maximisation, nlme's own fit."""
    return case["exact"] if case["engine"] == "glmmTMB" else case


class Fits:
    """Each case's data and fit, made on first use and kept for the module."""

    def __init__(self) -> None:
        self._fits: dict[str, tuple[pd.DataFrame, Any]] = {}

    def __call__(self, name: str) -> tuple[dict[str, Any], pd.DataFrame, Any]:
        case = CASES[name]
        if name not in self._fits:
            factors = case["factors"] if isinstance(case["factors"], list) else [case["factors"]]
            df = pd.read_csv(HERE / "data" / f"{case['data']}.csv", dtype={f: str for f in factors})
            formula = case["formula"] + (f" + {case['random']}" if case["random"] else "")
            if case["structure"] is None and case["variance"] is None and not case["random"]:
                fit = bayeslmm.lm(formula, df, method=case["method"])
            else:
                fit = bayeslmm.lmm(
                    formula, df, method=case["method"], residual=case["structure"], variance=case["variance"]
                )
            self._fits[name] = (df, fit)
        return (case, *self._fits[name])


@pytest.fixture(scope="module")
def fits() -> Fits:
    return Fits()


# -- the parameter mapping --------------------------------------------------------------------------
def _vf_weights(case: dict[str, Any]) -> np.ndarray:
    """nlme's variance-function multipliers of the sd at the visits of a complete subject (1 without one)."""
    kind, vp = _kind(case["variance"]), case["var_params"]
    rows = case["marginal_rows"]
    # gls's varIdent by visit (us, csh, ar1h, diag) carries no "variance" field: the same ratios
    if kind == "ident" or (kind is None and vp):
        assert case["var_ref"] == str(case["marginal_rows"][0])
        return np.array([1.0, *(vp[str(v)] for v in case["marginal_rows"][1:])])
    if kind == "power":
        return np.abs(np.asarray(rows, dtype=float)) ** vp["power"]
    if kind == "exp":
        return np.exp(vp["expon"] * np.asarray(rows, dtype=float))
    return np.ones(len(rows))


def _nlme_correlation(case: dict[str, Any]) -> np.ndarray:
    """nlme's correlation matrix over the visits of a complete subject."""
    m = len(case["marginal_rows"])
    cp = case["corr_params"] or {}
    j, k = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    if "Rho" in cp:
        return np.where(j == k, 1.0, cp["Rho"])
    if "Phi" in cp:
        return cp["Phi"] ** np.abs(j - k).astype(float)
    C = np.eye(m)
    for key, v in cp.items():  # corSymm: cor(a,b), 1-based visit indices
        a, b = (int(x) - 1 for x in re.fullmatch(r"cor\((\d+),(\d+)\)", key).groups())
        C[a, b] = C[b, a] = v
    return C


def _nlme_cov(case: dict[str, Any]) -> np.ndarray:
    """``sigma^2 W C W + D J``: the marginal covariance of a complete subject from nlme's parameters."""
    w = _vf_weights(case)
    V = case["sigma"] ** 2 * np.outer(w, w) * _nlme_correlation(case)
    if case["random"]:
        V = V + case["ranef_cov"][0]
    return V


def _visit_keys(visits: list[str], S: np.ndarray, corr: str | None) -> dict[str, float]:
    """Our natural parameters of a structure by visit with covariance ``S`` (``corr``: how its
    correlation is parameterised: ``us``, ``rho``, ``lags`` or None)."""
    out = {"sigma2": S[0, 0]} | {f"var({v})": S[j, j] for j, v in enumerate(visits) if j}
    sd = np.sqrt(np.diag(S))
    if corr == "us":
        out |= {f"cov({visits[a]},{visits[b]})": S[a, b] for b in range(len(visits)) for a in range(b)}
    elif corr == "rho":
        out["rho"] = S[0, 1] / (sd[0] * sd[1])
    elif corr == "lags":
        out |= {f"rho(lag {k})": S[0, k] / (sd[0] * sd[k]) for k in range(1, len(visits))}
    return out


def _expected(case: dict[str, Any]) -> dict[str, float]:
    """The reference's estimates in the keys of our ``residual_params()`` (without ``kind``)."""
    kind, ref = _kind(case["structure"]), _ref(case)
    visits = [str(v) for v in case.get("marginal_rows") or []]
    if case["engine"] == "glmmTMB":
        corr = "lags" if kind == "toeph" else "us"
        mc = ref["marginal_cov"]
        if isinstance(mc, list):
            return _visit_keys(visits, np.array(mc), corr)
        out: dict[str, float] = {}
        for i, (arm, M) in enumerate(sorted(mc.items())):
            for k, v in _visit_keys(visits, np.array(M), corr).items():
                out[k if (k == "sigma2" and i == 0) else f"{k} [{arm}]"] = v
        return out
    if kind in ("exp", "gau", "sph"):
        return {"range": case["range"], "nugget": case["nugget"], "sill": case["sigma"] ** 2}
    if kind in ("us", "cs", "csh", "ar1h", "diag"):
        R = case["sigma"] ** 2 * np.outer(_vf_weights(case), _vf_weights(case)) * _nlme_correlation(case)
        corr = {"us": "us", "csh": "rho", "ar1h": "rho", "diag": None, "cs": "rho"}[kind]
        out = _visit_keys(visits, R, corr)
        return {k: v for k, v in out.items() if kind != "cs" or not k.startswith("var(")}
    out = {"sigma2": case["sigma"] ** 2}  # ar1 (lme), or independent errors with a variance function
    if kind == "ar1":
        out["phi"] = case["corr_params"]["Phi"]
    vk, vp = _kind(case["variance"]), case["var_params"]
    if vk == "ident":
        out |= {f"ratio({v})": vp[v] for v in visits[1:]}
    elif vk in ("power", "exp"):
        out["delta"] = vp["power" if vk == "power" else "expon"]
    return out


def _our_cov(fit: Any, df: pd.DataFrame, data: str, subject: str) -> np.ndarray:
    """``V_i = Z_i D Z_i' + R_i`` of ``subject``'s rows in visit order, from the structure's matrix at our
    natural parameters (independent errors: ``sigma^2 I``)."""
    spec = fit.spec
    group, visit = KEYS[data]
    frame = df.loc[spec.row_index]
    rows = np.flatnonzero(frame[group].astype(str).to_numpy() == subject)
    rows = rows[np.argsort(frame[visit].to_numpy()[rows], kind="stable")]
    res = spec.residual
    if res is None:
        V = fit.sigma2 * np.eye(rows.size)
    else:
        s = res.structure
        nat = {k: v for k, v in fit.residual_params().items() if k != "kind"}
        nat["sigma2"] = nat.pop(s.residual_key)
        V = np.asarray(s.matrix({k: v[rows] for k, v in res.feats.items()}, nat), dtype=float)
    if spec.terms:
        Z = np.hstack([t.Zraw[rows] for t in spec.terms])
        q = Z.shape[1]
        D = np.zeros((q, q))
        i = 0
        for M in fit.cov_matrices().values():
            D[i : i + M.shape[0], i : i + M.shape[0]] = M
            i += M.shape[0]
        V = V + Z @ D @ Z.T
    return V


def _complete_subjects(df: pd.DataFrame, data: str, arm: str | None = None) -> list[str]:
    group, visit = KEYS[data]
    d = df if arm is None else df[df["arm"] == arm]
    n = d.groupby(group)[visit].nunique()
    return sorted(n.index[n == df[visit].nunique()].astype(str))


# -- tests ----------------------------------------------------------------------------------------
def test_reference_covers_the_issue() -> None:
    """Every structure and variance function of issue 14's golden list has cases, by REML and ML, from
    nlme and glmmTMB; the file cannot silently lose cases."""
    assert len(REFERENCE["cases"]) == len(CASES) >= 39
    structures = {_kind(c["structure"]) for c in CASES.values()}
    variances = {_kind(c["variance"]) for c in CASES.values()}
    assert STRUCTURES <= structures, STRUCTURES - structures
    assert VARIANCES <= variances, VARIANCES - variances
    assert any(c["structure"] == "us(visit | arm/id)" for c in CASES.values())
    assert {c["engine"] for c in CASES.values()} == {"nlme", "glmmTMB"}
    assert {c["method"] for c in CASES.values()} == {"REML", "ML"}
    assert {c["data"] for c in CASES.values()} == {"orthodont", "sim_mmrm", "wheat2", "bodyweight"}
    for kind in STRUCTURES:
        assert any(_kind(c["structure"]) == kind and c["converged"] for c in CASES.values()), kind
    # the structures by visit that the reference fits by both methods keep both
    for c in CASES.values():
        if c["data"] != "wheat2" and c["name"] != "bodyweight_power_gls_reml":
            other = c["name"][: -len(c["method"])] + ("ml" if c["method"] == "REML" else "reml")
            assert other in CASES, other


@pytest.mark.parametrize("case", _params("mapping", lambda c: c["engine"] == "nlme" and c.get("marginal_cov")))
def test_parameter_mapping_reproduces_the_reference_covariance(case: str) -> None:
    """nlme's parameters (sigma, correlation, variance function, random intercept) mapped as in
    ``_nlme_cov`` give the reference's marginal covariance: the mapping the other tests use is right."""
    c = CASES[case]
    M = np.array(c["marginal_cov"])
    np.testing.assert_allclose(_nlme_cov(c), M, rtol=1e-8, atol=1e-10 * np.abs(M).max())


@pytest.mark.parametrize("case", _params("loglik_not_below"))
def test_loglik_not_below_reference(fits: Fits, case: str) -> None:
    """Ours is at least the reference's (where the reference stopped short, ours may be higher)."""
    c, _, fit = fits(case)
    ref = _ref(c)["loglik"]
    # 1e-4: the tolerance of the log-likelihood throughout; wheat2_exp_gls_reml, whose likelihood has no
    # finite maximum, is the closest case (ours 2.4e-5 below nlme's unconverged value, far out on a ridge
    # where V is nearly singular)
    assert fit.loglik >= ref - 1e-4, (fit.loglik, ref)


@pytest.mark.parametrize("case", _params("loglik_matches", _converged))
def test_loglik_matches_reference(fits: Fits, case: str) -> None:
    c, _, fit = fits(case)
    assert fit.nobs == c["nobs"]
    assert fit.npar == c["df"]
    assert fit.loglik == pytest.approx(_ref(c)["loglik"], abs=1e-4)
    assert fit.converged


@pytest.mark.parametrize("case", _params("fixef_se", _converged))
def test_fixed_effects_and_standard_errors(fits: Fits, case: str) -> None:
    c, _, fit = fits(case)
    ref = _ref(c)
    assert list(fit.fixef.index) == list(ref["fixef"])
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))  # bayeslmm.lm's fit has no .se
    if hasattr(fit, "se"):
        assert list(fit.se.index) == list(ref["se"])
        np.testing.assert_allclose(fit.se.to_numpy(), se, rtol=1e-12)
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-4)
    np.testing.assert_allclose(se, list(ref["se"].values()), rtol=1e-4)


@pytest.mark.parametrize("case", _params("parameters", _converged))
def test_structure_parameters(fits: Fits, case: str) -> None:
    """Our natural parameters against nlme's (or glmmTMB's covariance) mapped to them, and the random
    intercept's variance."""
    c, _, fit = fits(case)
    want = _expected(c)
    if c["structure"] is None and c["variance"] is None:  # independent errors, bayeslmm.lm
        got = {"sigma2": fit.sigma2}
    else:
        got = {k: v for k, v in fit.residual_params().items() if k != "kind"}
        assert fit.residual_params()["kind"] == (_kind(c["structure"]) or "iid")
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-3), k
    if c["random"]:
        (D,) = fit.cov_matrices().values()
        np.testing.assert_allclose(D.ravel(), c["ranef_cov"], rtol=1e-3)


def _cov_cases(c: dict[str, Any]) -> bool:
    return c["converged"] and c["data"] != "wheat2"


@pytest.mark.parametrize("case", _params("marginal_cov", _cov_cases))
def test_marginal_covariance_of_a_complete_subject(fits: Fits, case: str) -> None:
    """``Z_i D Z_i' + R_i`` of a subject with every visit (per arm for ``us(visit | arm/id)``)."""
    c, df, fit = fits(case)
    mc = _ref(c)["marginal_cov"]
    if isinstance(mc, dict):  # a matrix per arm: a complete subject of each arm
        pairs = [(_complete_subjects(df, c["data"], arm)[0], np.array(M)) for arm, M in mc.items()]
    else:
        subject = c.get("marginal_subject") or _complete_subjects(df, c["data"])[0]
        pairs = [(str(subject), np.array(mc))]
    for subject, M in pairs:
        V = _our_cov(fit, df, c["data"], subject)
        assert V.shape == M.shape
        np.testing.assert_allclose(V, M, rtol=1e-3, atol=1e-6 * np.abs(M).max())
        np.testing.assert_allclose(V, V.T, atol=1e-12 * np.abs(M).max())


@pytest.mark.parametrize("case", _params("loglik_at_reference", lambda c: c["data"] == "wheat2"))
def test_spatial_loglik_at_the_reference_estimates(fits: Fits, case: str) -> None:
    """Our likelihood at nlme's range, nugget and sigma (beta profiled) is nlme's log-likelihood; so
    where the optima differ (no finite maximum, or a local one) the likelihoods still agree."""
    c, _, fit = fits(case)
    d0 = fit.spec.residual.structure.d0
    varpar = np.array([np.log(c["range"] / d0), c["nugget"], c["sigma"]])
    assert -0.5 * fit.deviance_varpar(varpar) == pytest.approx(c["loglik"], abs=1e-6)


@pytest.mark.parametrize("case", sorted(LOCAL_MAXIMUM))
def test_local_maximum_of_the_reference_is_ours_from_its_start(fits: Fits, case: str) -> None:
    """Started at nlme's estimate, our optimiser stays at nlme's local maximum: same log-likelihood and range."""
    c, _, fit = fits(case)
    eng = fit.objective
    s = eng.structure
    start = np.r_[np.log(c["range"] / s.d0), c["nugget"]]
    other = bayeslmm.freq.fit_spec(fit.spec, method=c["method"], start=start)
    assert other.loglik == pytest.approx(c["loglik"], abs=1e-4)
    assert other.residual_params()["range"] == pytest.approx(c["range"], rel=1e-3)
    assert fit.loglik > other.loglik + 0.4  # ours from the default start: the higher ridge
