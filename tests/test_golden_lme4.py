"""Golden tests: ML/REML fits of bayeslmm against lme4.

The reference values are lme4 fits stored as JSON beside the R scripts that made them:

* ``reference/public/lme4_public.json`` (the public cases; their data are bundled in
  :mod:`bayeslmm.datasets`),
* ``reference/lme4_extra.json`` (made by ``reference/make_reference.R``; data in ``data/``).

Every case is fitted once through the Python API and compared with lme4 on the fixed effects,
their standard errors, the variance components, the likelihood summaries, the singular flag
and the conditional modes and standard deviations of the random effects. Names are matched
across R and Python conventions as in ``shared/tools/check_lme4.py``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import bayeslmm

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference"

#: Reference files and where the data of their cases come from.
SOURCES = {"public/lme4_public.json": "bundled", "lme4_extra.json": "tests/data"}


def _cases() -> list[Any]:
    """One ``pytest.param(case, source)`` per lme4 case of every reference file."""
    out = []
    for fname, source in SOURCES.items():
        with open(REFERENCE / fname) as fh:
            for cid, case in json.load(fh).items():
                if case.get("engine") == "lme4":
                    out.append(pytest.param((case, source), id=cid))
    return out


def norm(name: Any) -> str:
    """Normalise a coefficient name across R and Python (formulaic) conventions.

    ``"Sex[T.Male]"`` and ``"SexMale"``, ``"I(age ** 2)"`` and ``"I(age^2)"`` compare equal;
    the parts of an interaction are sorted. A missing name (R's NA, Python's None or NaN) is "".
    """
    if not isinstance(name, str) and pd.isna(name):
        return ""
    s = str(name).replace(" ", "")
    s = re.sub(r"C\(([^),]+)[^)]*\)", r"\1", s)
    s = s.replace("[T.", "").replace("[", "").replace("]", "")
    s = s.replace("Intercept", "(Intercept)").replace("((Intercept))", "(Intercept)")
    s = s.replace("**", "^").replace("np.", "")
    return ":".join(sorted(s.split(":")))


def grpnorm(g: Any) -> str:
    """Normalise a grouping-factor name or level label: parts of an interaction sorted."""
    return ":".join(sorted(str(g).split(":")))


def group_key(g: Any) -> str:
    """A grouping factor's name without lme4's ``.1``, ``.2`` suffix for the terms of ``||``.

    lme4 names those terms "g", "g.1" in ``VarCorr`` but "g" in ``ranef``; the term
    name always completes the key, so nothing is merged.
    """
    return re.sub(r"\.\d+$", "", grpnorm(g))


@pytest.fixture(scope="module", params=_cases())
def fitted(request: pytest.FixtureRequest, models: Any) -> tuple[dict[str, Any], bayeslmm.LMMFit]:
    """The reference case and the bayeslmm fit of the same model (fitted once per session: the
    session's model cache, ``tests/conftest.py``)."""
    case, source = request.param
    formula = case.get("py_formula", case["formula"])
    data = case["data"] if source == "bundled" else f"{case['data']}.csv"
    return case, models.fit(formula, data, case["method"])


def residual_variance(case: dict[str, Any]) -> float:
    """lme4's residual variance ``sigma^2`` of a case."""
    return next(r["vcov"] for r in case["varcorr"] if r["grp"] == "Residual")


def keyed(keys: list[Any], values: list[Any], what: str) -> dict[Any, Any]:
    """``dict(zip(keys, values))``, failing when two names normalise to the same key.

    Parameters
    ----------
    keys, values
        Normalised names and the values they label, of equal length.
    what
        What the names are, for the failure message.
    """
    out = dict(zip(keys, values, strict=True))
    assert len(out) == len(keys), f"{what}: names collide after normalisation: {keys}"
    return out


def test_fixef(fitted):
    """Fixed effects to 1e-5 relative, with a floor of 1e-5 * max|beta| near zero."""
    case, fit = fitted
    ref = keyed([norm(k) for k in case["fixef"]], list(case["fixef"].values()), "R fixef")
    got = keyed([norm(k) for k in fit.fixef.index], list(fit.fixef), "fixef")
    assert sorted(got) == sorted(ref)
    scale = max(abs(v) for v in ref.values())
    bad = {k: (got[k], v) for k, v in ref.items() if not abs(got[k] - v) <= 1e-5 * max(abs(v), scale)}
    assert not bad, f"fixef (ours, lme4): {bad}"


def test_se(fitted):
    """Standard errors of the fixed effects to 1e-4 relative."""
    case, fit = fitted
    ref = keyed([norm(k) for k in case["se"]], list(case["se"].values()), "R se")
    got = keyed([norm(k) for k in fit.se.index], list(fit.se), "se")
    assert sorted(got) == sorted(ref)
    bad = {k: (got[k], v) for k, v in ref.items() if not abs(got[k] - v) <= 1e-4 * abs(v)}
    assert not bad, f"se (ours, lme4): {bad}"


def test_varcorr(fitted):
    """Every variance component to 1e-4 relative; correlations to 1e-4 absolute.

    Variances and covariances (``vcov``), and standard deviations (``sdcor`` of the variance
    rows), are compared relative to lme4's value with a floor of 1e-6 * sigma^2 (of its square
    root for a sd) for values near 0. A correlation is compared when both of lme4's sds are > 0.
    """
    case, fit = fitted
    resid = residual_variance(case)

    def key(r: Any) -> tuple[str, str, str]:
        return group_key(r["grp"]), norm(r["var1"]), norm(r["var2"])

    ref = keyed([key(r) for r in case["varcorr"]], case["varcorr"], "R varcorr")
    rows = fit.varcorr().to_dict("records")
    got = keyed([key(r) for r in rows], rows, "varcorr")
    # a covariance may be listed as (var1, var2) or (var2, var1)
    got = {k if k in ref else (k[0], k[2], k[1]): r for k, r in got.items()}
    assert sorted(got) == sorted(ref)
    sd = {(k[0], k[1]): r["sdcor"] for k, r in ref.items() if not k[2]}
    bad = {}
    for k, r in ref.items():
        g = got[k]
        if not abs(g["vcov"] - r["vcov"]) <= max(1e-4 * abs(r["vcov"]), 1e-6 * resid):
            bad[k + ("vcov",)] = (g["vcov"], r["vcov"])
        if not k[2]:
            ok = abs(g["sdcor"] - r["sdcor"]) <= max(1e-4 * r["sdcor"], math.sqrt(1e-6 * resid))
        elif sd[k[:2]] > 0 and sd[(k[0], k[2])] > 0:
            ok = abs(g["sdcor"] - r["sdcor"]) <= 1e-4
        else:
            ok = True
        if not ok:
            bad[k + ("sdcor",)] = (g["sdcor"], r["sdcor"])
    assert not bad, f"varcorr (ours, lme4): {bad}"


def test_likelihood(fitted):
    """Log-likelihood (and criterion) to 1e-6 absolute, AIC and BIC to 1e-5, nobs equal."""
    case, fit = fitted
    assert fit.nobs == case["nobs"]
    assert fit.loglik == pytest.approx(case["loglik"], rel=0, abs=1e-6)
    assert fit.criterion == pytest.approx(case["deviance_or_reml"], rel=0, abs=2e-6)
    assert fit.aic == pytest.approx(case["aic"], rel=0, abs=1e-5)
    assert fit.bic == pytest.approx(case["bic"], rel=0, abs=1e-5)


def test_singular(fitted):
    """The singular-fit flag equals lme4's ``isSingular``."""
    case, fit = fitted
    assert fit.singular == case["singular"]


def blup_table(grpvar: Any, term: Any, grp: Any, condval: Any, condsd: Any, what: str) -> dict[Any, Any]:
    """``{(grouping factor, term, level): (condval, condsd)}`` with normalised names.

    Parameters
    ----------
    grpvar, term, grp, condval, condsd
        The columns of ``as.data.frame(ranef(m, condVar = TRUE))`` or of ``LMMFit.ranef()``.
    what
        Whose BLUPs these are, for the failure message.
    """
    keys = [(group_key(v), norm(t), grpnorm(g)) for v, t, g in zip(grpvar, term, grp, strict=True)]
    return keyed(keys, list(zip(condval, condsd, strict=True)), what)


def test_ranef(fitted):
    """Every conditional mode and conditional sd to 1e-4 * sigma absolute, rows matched by name."""
    case, fit = fitted
    b = case["blups"]
    ref = blup_table(b["grpvar"], b["term"], b["grp"], b["condval"], b["condsd"], "R ranef")
    ours = fit.ranef()
    got = blup_table(ours.grpvar, ours.term, ours.grp, ours.condval, ours.condsd, "ranef")
    assert sorted(got) == sorted(ref)
    tol = 1e-4 * case["sigma"]
    bad = {k: (got[k], v) for k, v in ref.items() if not all(abs(g - r) <= tol for g, r in zip(got[k], v, strict=True))}
    first = dict(list(bad.items())[:5])
    assert not bad, f"{len(bad)} of {len(ref)} BLUPs differ; (condval, condsd) ours vs lme4, first 5: {first}"


def test_satterthwaite_df(fitted):
    """Satterthwaite's denominator df against lmerTest, to 1e-3 relative."""
    case, fit = fitted
    ours = fit.satterthwaite()
    ref = {norm(k): v for k, v in case["satterthwaite_df"].items()}
    got = {norm(k): v for k, v in ours["df"].items()}
    assert sorted(got) == sorted(ref)
    bad = {k: (got[k], v) for k, v in ref.items() if abs(got[k] / v - 1) > 1e-3}
    assert not bad, f"df (ours, lmerTest): {bad}"
    np.testing.assert_allclose(ours["t value"], fit.tvalues, rtol=1e-12)
