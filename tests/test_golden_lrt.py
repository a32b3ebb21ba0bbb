"""Golden tests: likelihood-ratio tests of bayeslmm against lme4, RLRsim and pbkrtest.

The reference values are in ``reference/lrt_reference.json``, made by
``reference/make_lrt_reference.R`` (lme4's ``anova``, ``logLik(lm(...), REML = TRUE)`` for a
null without random effects, ``RLRsim::exactRLRT`` and ``pbkrtest::PBrefdist``; the script's
header says how each number was computed). Every case is fitted through the Python API
(``bayeslmm.lm`` for a null without random effects, ``bayeslmm.lmm`` otherwise) and tested
with ``bayeslmm.lrt``; checked against R:

* the statistic: 1e-4 absolute, or 1e-6 relative for large statistics;
* the degrees of freedom and the numbers of parameters: equal;
* the naive chi-square p value: 1e-4 relative (or 1e-12 absolute when tiny);
* the log-likelihoods of the two fits actually compared: 1e-5 absolute;
* the refit flag: ``res.refit == "ML"`` exactly where lme4 refitted the REML fits by ML.

Boundary-corrected p values have no exact reference: ``p_boundary`` uses the asymptotic
chi-bar-square mixture (Self and Liang 1987; Stram and Lee 1994), while RLRsim simulates the
exact finite-sample null distribution of the restricted LRT, and a parametric bootstrap
simulates the finite-sample null distribution of the ML LRT. They differ by design (e.g.
dyestuff, 6 batches: mixture 0.0058 against RLRsim's 0.0041), so the check is an
order-of-magnitude one: ``p_boundary`` within a factor of 3 of RLRsim's (or the bootstrap's) p
value when that p value is above 1e-4; when it is below 1e-4 (RLRsim reports 0 when none of its
1e5 simulated values reaches the statistic) ``p_boundary`` must be below 1e-4 too. Our own
parametric bootstrap is checked against pbkrtest's reference distribution within Monte Carlo
error (the plain bootstrap p value ``(1 + #(t* >= t)) / (1 + nsim)`` of both).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import bayeslmm

HERE = Path(__file__).resolve().parent
REFERENCE = json.loads((HERE / "reference" / "lrt_reference.json").read_text())
CASES = {c["id"]: c for c in REFERENCE["cases"]}


def data_name(case: dict[str, Any]) -> str:
    """A case's data for the session's model cache: a bundled dataset or ``tests/data/<name>.csv``."""
    return case["data"] if case["data_source"] == "bundled" else f"{case['data']}.csv"


def fits(models: Any, case: dict[str, Any]) -> tuple[Any, Any]:
    """The null and alternative fits of a case (``lmm`` for a formula with random-effect terms, ``lm`` for
    one without), fitted once per session."""
    return tuple(models.fit(case[k], data_name(case), case["method"]) for k in ("null", "alt"))


_RESULTS: dict[str, Any] = {}


def run_case(models: Any, cid: str) -> Any:
    """``bayeslmm.lrt`` of a case (cached: several tests look at one result)."""
    if cid not in _RESULTS:
        _RESULTS[cid] = bayeslmm.lrt(*fits(models, CASES[cid]))
    return _RESULTS[cid]


def stat_tol(ref: float) -> float:
    """1e-4 absolute, or 1e-6 relative for large statistics."""
    return max(1e-4, 1e-6 * abs(ref))


def order_of_magnitude_ok(ours: float, ref: float) -> bool:
    """Within a factor of 3 when ``ref > 1e-4``; otherwise both below 1e-4."""
    if ref > 1e-4:
        return ref / 3 <= ours <= 3 * ref
    return ours < 1e-4


ALL = sorted(CASES)
RLRSIM = [cid for cid in ALL if "rlrsim" in CASES[cid]]
PBKR = [cid for cid in ALL if "pbkr" in CASES[cid]]


def test_reference_cases_present() -> None:
    """The cases the brief asks for are all in the reference file."""
    assert {
        "sleep_slope_reml",
        "sleep_fixed_refit",
        "pig_intercept_reml",
        "dyestuff_intercept_reml",
        "penicillin_sample_reml",
        "orthodont_sex_ml",
    } <= set(CASES)
    assert REFERENCE["versions"]["lme4"]


@pytest.mark.parametrize("cid", ALL)
def test_statistic_df_p(models, cid: str) -> None:
    case, res = CASES[cid], run_case(models, cid)
    assert res.statistic == pytest.approx(case["chisq"], abs=stat_tol(case["chisq"]), rel=0)
    assert res.df == case["df"]
    assert res.null["npar"] == case["null_npar"] and res.alt["npar"] == case["alt_npar"]
    assert res.p == pytest.approx(case["p"], rel=1e-4, abs=1e-12 if case["p"] < 1e-8 else 0)


@pytest.mark.parametrize("cid", ALL)
def test_logliks(models, cid: str) -> None:
    case, res = CASES[cid], run_case(models, cid)
    assert res.null["loglik"] == pytest.approx(case["null_loglik"], abs=1e-5, rel=0)
    assert res.alt["loglik"] == pytest.approx(case["alt_loglik"], abs=1e-5, rel=0)


@pytest.mark.parametrize("cid", ALL)
def test_refit_flag(models, cid: str) -> None:
    case, res = CASES[cid], run_case(models, cid)
    assert res.refit == ("ML" if case["refit"] else None)
    # the method of the fits compared: ML after a refit, else as requested
    expected = "ML" if case["refit"] else case["method"]
    assert res.null["method"] == expected and res.alt["method"] == expected


@pytest.mark.parametrize("cid", [c for c in ALL if "reml_constant" in CASES[c]])
def test_reml_constant_agrees(cid: str) -> None:
    """stats' REML log-likelihood of the lm equals lme4's REML criterion at theta = 0 (R side)."""
    rc = CASES[cid]["reml_constant"]
    assert abs(rc["difference"]) < 1e-8 * abs(rc["stats_minus2_reml_loglik"])


@pytest.mark.parametrize("cid", RLRSIM)
def test_boundary_p_against_rlrsim(models, cid: str) -> None:
    """Order-of-magnitude agreement of the chi-bar-square p value with RLRsim's exact one."""
    case, res = CASES[cid], run_case(models, cid)
    rl = case["rlrsim"]
    assert rl["stat"] == pytest.approx(case["chisq"], abs=1e-8 * max(1.0, case["chisq"]))
    assert res.p_boundary is not None
    assert res.mixture == [(0.5, 0), (0.5, 1)]
    assert order_of_magnitude_ok(res.p_boundary, rl["p"]), (res.p_boundary, rl["p"])


def test_slope_mixture(models) -> None:
    """Adding a correlated random slope to an intercept: 0.5 chi2_1 + 0.5 chi2_2."""
    res = run_case(models, "sleep_slope_reml")
    assert res.mixture == [(0.5, 1), (0.5, 2)]
    s = res.statistic
    # survival functions in closed form: chi2_1: erfc(sqrt(s / 2)); chi2_2: exp(-s / 2)
    expected = 0.5 * math.erfc(math.sqrt(s / 2)) + 0.5 * math.exp(-s / 2)
    assert res.p_boundary == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("cid", PBKR)
def test_boundary_p_against_pbkrtest(models, cid: str) -> None:
    """Order-of-magnitude agreement of the chi-bar-square p value with pbkrtest's bootstrap."""
    case, res = CASES[cid], run_case(models, cid)
    pb = case["pbkr"]
    assert pb["stat"] == pytest.approx(case["chisq"], abs=1e-8 * max(1.0, case["chisq"]))
    assert res.p_boundary is not None
    assert order_of_magnitude_ok(res.p_boundary, pb["p_plain"]), (res.p_boundary, pb["p_plain"])


@pytest.mark.parametrize("cid", PBKR)
def test_bootstrap_against_pbkrtest(models, cid: str) -> None:
    """Our parametric bootstrap p value agrees with pbkrtest's within 4 Monte Carlo standard errors."""
    case = CASES[cid]
    n = 400
    res = bayeslmm.lrt(*fits(models, case), bootstrap=n, seed=20240611, progress=False)
    p_ref, n_ref = case["pbkr"]["p_plain"], case["pbkr"]["nsim"]
    se = math.sqrt(p_ref * (1 - p_ref) * (1 / n + 1 / n_ref))
    assert res.n_bootstrap == n and res.bootstrap_statistics.shape == (n,)
    assert abs(res.p_bootstrap - p_ref) < 4 * se, (res.p_bootstrap, p_ref, se)


def test_cli_lrt_json(cli) -> None:
    """``bayeslmm lrt DATA --null F0 --alt F1 --json`` on the dyestuff case."""
    case = CASES["dyestuff_intercept_reml"]
    proc = cli("lrt", case["data"], "--null", case["null"], "--alt", case["alt"], "--method", case["method"], "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"lrt", "df", "p", "p_boundary", "refit", "null", "alt"} <= set(out)
    assert out["lrt"] == pytest.approx(case["chisq"], abs=stat_tol(case["chisq"]), rel=0)
    assert out["df"] == case["df"]
    assert out["p"] == pytest.approx(case["p"], rel=1e-4)
    assert out["p_boundary"] == pytest.approx(0.5 * case["p"], rel=1e-4)
    assert out["refit"] is None
    assert out["null"]["loglik"] == pytest.approx(case["null_loglik"], abs=1e-5, rel=0)
    assert out["alt"]["loglik"] == pytest.approx(case["alt_loglik"], abs=1e-5, rel=0)
    assert out["null"]["npar"] == case["null_npar"] and out["alt"]["npar"] == case["alt_npar"]


def test_cli_lrt_json_refit(cli) -> None:
    """The CLI reports lme4's ML refit for REML fits with different fixed effects."""
    case = CASES["sleep_fixed_refit"]
    proc = cli("lrt", case["data"], "--null", case["null"], "--alt", case["alt"], "--method", "REML", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["refit"] == "ML"
    assert out["lrt"] == pytest.approx(case["chisq"], abs=stat_tol(case["chisq"]), rel=0)
    assert out["df"] == case["df"] and out["p_boundary"] is None
