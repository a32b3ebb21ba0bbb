"""Serial-process fits do not depend on a large constant in the response or in a covariate.

The serial engine works in shifted coordinates (``bayeslmm.linalg._basis``): every non-intercept
column of ``X`` is centred and ``y`` shifted before the filter whitens them. Adding ``c`` to ``y``
must then move the intercept by exactly ``c`` and leave the log-likelihood, the variance and
process parameters and the standard errors as they were; adding ``c`` to a covariate moves the
intercept by ``-slope * c``. The data are rounded to a multiple of ``2^-g`` and ``c`` is a multiple
of ``2^-g`` as well, with ``g`` chosen so that ``y + c`` is exact in floating point (``g = 20``,
or fewer bits when ``|y| + c`` needs more than ``52 - 20`` bits): the shifted data are exactly
the data plus ``c``, and any difference in the fits comes from the engine.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm

HERE = Path(__file__).resolve().parent
KS = (0.0, 1e2, 1e4, 1e6, 1e8)
REL = 1e-8

#: name -> (csv, dtypes, response, covariate, formula with {x} for the covariate, residual)
CASES = {
    "bodyweight_ar1": (
        "bodyweight",
        {"Rat": str, "Diet": str},
        "weight",
        "Time",
        "weight ~ {x} + Diet + (Time | Rat)",
        "ar1(Time | Rat)",
    ),
    "sim_ou": ("sim_ou", {"id": str}, "y", "t", "y ~ {x} + (1 | id)", "ou(t | id)"),
}


def exact_shifts(v: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """``v`` rounded to a multiple of ``2^-g`` and the shifts ``c = k sd(v)`` (multiples of ``2^-g``)."""
    sd = float(np.std(v, ddof=1))
    g = min(20, 52 - math.ceil(math.log2(float(np.max(np.abs(v))) + max(KS) * sd)))
    scale = 2.0**g
    v = np.round(v * scale) / scale
    cs = [float(np.round(k * sd * scale) / scale) for k in KS]
    for c in cs:
        assert np.array_equal((v + c) - c, v), "the shifted data are not exact"
    return v, cs


@pytest.fixture(
    scope="module",
    params=[(case, what) for case in CASES for what in ("y", "x")],
    ids=[f"{case}-{what}" for case in CASES for what in ("y", "x")],
)
def shifted_fits(request) -> tuple[str, list[tuple[float, bayeslmm.freq.LMMFit]]]:
    """Fits of one case with ``y`` (``what = "y"``) or the covariate (``"x"``) shifted by each ``c``."""
    case, what = request.param
    csv, dtypes, yname, xname, formula, residual = CASES[case]
    df = pd.read_csv(HERE / "data" / f"{csv}.csv", dtype=dtypes)
    df["xs"] = df[xname].astype(float)  # the covariate in the formula; the process keeps its own time column
    col = yname if what == "y" else "xs"
    base, cs = exact_shifts(df[col].to_numpy(dtype=float))
    fits = []
    for c in cs:
        d = df.copy()
        d[col] = base + c
        fits.append((c, bayeslmm.lmm(formula.format(x="xs"), d, residual=residual)))
    return what, fits


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def test_likelihood_and_variance_parameters_do_not_move(shifted_fits) -> None:
    _, fits = shifted_fits
    (_, f0), rest = fits[0], fits[1:]
    assert f0.converged
    rp0 = f0.residual_params()
    for c, fit in rest:
        assert fit.converged, c
        assert fit.loglik == pytest.approx(f0.loglik, rel=REL, abs=0), c
        assert _rel(fit.varcorr().vcov, f0.varcorr().vcov) <= REL, c
        rp = fit.residual_params()
        assert _rel([rp[k] for k in rp0 if k != "kind"], [rp0[k] for k in rp0 if k != "kind"]) <= REL, c


def test_fixed_effects_move_exactly_by_the_shift(shifted_fits) -> None:
    what, fits = shifted_fits
    (_, f0), rest = fits[0], fits[1:]
    b0, se0 = f0.fixef.to_numpy(), f0.se.to_numpy()
    assert f0.fixef.index[0] == "(Intercept)"
    for c, fit in rest:
        b, se = fit.fixef.to_numpy(), fit.se.to_numpy()
        if what == "y":  # intercept + c; everything else, SEs included, unchanged
            assert abs((b[0] - b0[0]) - c) <= 1e-12 * c, c
            assert _rel(se, se0) <= REL, c
        else:  # intercept - slope c; the intercept's SE is that at x = -c, the others unchanged
            slope = b0[list(f0.fixef.index).index("xs")]
            assert abs((b[0] - b0[0]) + slope * c) <= 1e-12 * abs(slope * c), c
            assert _rel(se[1:], se0[1:]) <= REL, c
        assert np.all(np.abs(b[1:] - b0[1:]) <= REL * np.abs(b0[1:]) + 1e-10 * se0[1:]), c


def test_blups_and_normalized_residuals_do_not_move(shifted_fits) -> None:
    _, fits = shifted_fits
    (_, f0), rest = fits[0], fits[1:]
    b0 = f0.ranef().condval.to_numpy()
    r0 = f0.residuals(scaled=True)
    for _, fit in rest:
        np.testing.assert_allclose(fit.ranef().condval.to_numpy(), b0, rtol=1e-6, atol=1e-9 * np.sqrt(f0.scale2))
        np.testing.assert_allclose(fit.residuals(scaled=True), r0, rtol=0, atol=1e-7)


def test_the_original_coordinates_agree_with_the_working_ones() -> None:
    """``objective.filter`` (original ``[X y]``) and the working Gram give the same cross-products."""
    df = pd.read_csv(HERE / "data" / "bodyweight.csv", dtype={"Rat": str, "Diet": str})
    fit = bayeslmm.lmm("weight ~ Time * Diet + (1 | Rat)", df, residual="ar1(Time | Rat)")
    obj = fit.objective
    fr = obj.filter(fit.psi, working=False)
    g = obj.gram(fit.psi)
    M = obj._to_original()
    np.testing.assert_allclose(fr.white.T @ fr.white, M.T @ g.C @ M, rtol=1e-9)
    assert fr.logdet == pytest.approx(g.logdet, rel=1e-12)
    X, y = fit.spec.X, fit.spec.y
    np.testing.assert_allclose(np.c_[X, y] @ np.linalg.inv(M), obj.Y, rtol=0, atol=1e-9 * np.abs(y).max())


def test_variance_component_standard_errors_do_not_move(shifted_fits) -> None:
    """The expected information of a serial fit is formed from the working columns too."""
    _, fits = shifted_fits
    ref = fits[0][1].vc_se()
    for c, fit in fits[1:]:
        se = fit.vc_se()
        np.testing.assert_allclose(
            se["se_vcov"].to_numpy(dtype=float), ref["se_vcov"].to_numpy(dtype=float), rtol=1e-6, err_msg=f"c = {c}"
        )
