"""User errors in data and formulas: a bayeslmm error class and a message that says what to do.

Also the cases that must work: the constants pi and e, Unicode names everywhere, and that a
column named like a constant still means the column.
"""

from __future__ import annotations

import datetime
import decimal
import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError, FormulaError


def small(seed: int = 0, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(list("abcdef"), n // 6)
    t = np.tile(np.arange(n // 6), 6) / (n // 6)
    u = rng.normal(size=6)[np.searchsorted(list("abcdef"), g)]
    x = rng.normal(size=n)
    y = 1.0 + 0.5 * x + np.sin(2 * np.pi * t) + u + 0.3 * rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": g, "t": t})


def raises(err: type, formula: str, data, *words: str, **kw) -> str:
    with pytest.raises(err) as info:
        bayeslmm.model_spec(formula, data, **kw)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ---------------------------------------------------------------- duplicated columns
def test_duplicated_column_used_by_the_formula_is_named() -> None:
    df = small()
    dup = pd.concat([df, df[["x"]]], axis=1)
    raises(DataError, "y ~ x + (1 | g)", dup, "more than one column named 'x'", "rename")


def test_duplicated_column_not_used_is_ignored() -> None:
    df = small()
    dup = pd.concat([df, df[["x"]]], axis=1)
    a = bayeslmm.model_spec("y ~ t + (1 | g)", dup)
    b = bayeslmm.model_spec("y ~ t + (1 | g)", df)
    np.testing.assert_array_equal(a.X, b.X)


def test_names_equal_as_text_count_as_duplicates_and_non_text_names_work() -> None:
    df = small().rename(columns={"x": 0})
    spec = bayeslmm.model_spec("y ~ `0` + (1 | g)", df)
    assert spec.fixef_names == ("(Intercept)", "0")
    both = pd.concat([df, df[[0]].rename(columns={0: "0"})], axis=1)
    raises(DataError, "y ~ `0` + (1 | g)", both, "more than one column named '0'")


# ---------------------------------------------------------------- Unicode names
def test_unicode_grouping_column_fits_as_its_ascii_copy() -> None:
    df = small()
    uni = df.rename(columns={"g": "gruppé", "x": "xé"})
    a = bayeslmm.lmm("y ~ xé + (1 + xé | gruppé)", uni)
    b = bayeslmm.lmm("y ~ x + (1 + x | g)", df)
    assert a.loglik == b.loglik
    np.testing.assert_array_equal(a.fixef.to_numpy(), b.fixef.to_numpy())
    assert a.spec.terms[0].group == "gruppé"
    spec = bayeslmm.model_spec("y ~ 1 + (1 | gruppé/g)", uni.assign(g=df.g))
    assert sorted(t.group for t in spec.terms) == ["gruppé", "gruppé:g"]


def test_unicode_names_in_a_residual_process() -> None:
    df = small()
    uni = df.rename(columns={"g": "gé", "t": "tempö"})
    a = bayeslmm.lmm("y ~ x + (1 | gé)", uni, residual="ar1(tempö | gé)")
    b = bayeslmm.lmm("y ~ x + (1 | g)", df, residual="ar1(t | g)")
    assert a.loglik == b.loglik


def test_names_that_are_not_names_are_still_rejected() -> None:
    df = small()
    raises(FormulaError, "y ~ x + (1 | g + t)", df, "grouping factor")
    raises(FormulaError, "y ~ x + (1 | 2g)", df, "grouping factor")
    with pytest.raises(FormulaError, match="not understood"):
        bayeslmm.model_spec("y ~ x + (1 | g)", df, residual="ou(t + 1 | g)")


# ---------------------------------------------------------------- one-level factors
@pytest.mark.parametrize(
    "formula",
    ["y ~ x + f + (1 | g)", "y ~ x + C(f) + (1 | g)", "y ~ x:f + (1 | g)", "y ~ x + (0 + f | g)", "y ~ x + (f || g)"],
)
def test_one_level_factor_stops(formula: str) -> None:
    raises(DataError, formula, small().assign(f="only"), "f", "only the level 'only'", "remove it")


def test_one_level_factor_after_missing_rows_and_unused_categories() -> None:
    df = small()
    df["f"] = ["a"] * 59 + ["b"]
    df.loc[59, "y"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped row
        raises(DataError, "y ~ x + f + (1 | g)", df, "only the level 'a'")
    cat = df.assign(y=small().y, f=pd.Categorical(["a"] * 60, categories=["a", "b"]))
    raises(DataError, "y ~ x + f + (1 | g)", cat, "only the level 'a'")


def test_unused_categories_are_not_levels() -> None:
    df = small()
    f = np.where(df.x > 0, "hi", "lo")
    cat = df.assign(f=pd.Categorical(f, categories=["hi", "lo", "never"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rank-deficiency warning for the unused level
        a = bayeslmm.model_spec("y ~ f + (1 | g)", cat)
    b = bayeslmm.model_spec("y ~ f + (1 | g)", df.assign(f=f))
    assert a.fixef_names == b.fixef_names == ("(Intercept)", "f[T.lo]")
    np.testing.assert_array_equal(a.X, b.X)


def test_one_level_grouping_factor_stops() -> None:
    raises(DataError, "y ~ x + (1 | h)", small().assign(h="one"), "'h'", "at least 2")


# ---------------------------------------------------------------- dates, durations, odd dtypes
@pytest.mark.parametrize(
    "col, words",
    [
        (pd.date_range("2020-01-01", periods=60), ("dates/times", "pd.Timedelta(days=1)", "C(d)")),
        (pd.date_range("2020-01-01", periods=60, tz="UTC"), ("dates/times",)),
        (pd.to_timedelta(np.arange(60), unit="D"), ("durations", "total_seconds")),
        ([datetime.date(2020, 1, 1 + i % 28) for i in range(60)], ("dates/times",)),
        ([decimal.Decimal(i) for i in range(60)], ("Python objects", "pd.to_numeric")),
        ([1.5, "a", 2.0] * 20, ("mixes numbers and text", "pd.to_numeric", "astype(str)")),
        (np.arange(60) + 1j, ("complex",)),
        ([[i] for i in range(60)], ("type list",)),
    ],
)
def test_predictor_of_an_unusable_dtype_is_explained(col, words) -> None:
    df = small().assign(d=col)
    for formula in ("y ~ d + (1 | g)", "y ~ x + (d | g)"):
        raises(DataError, formula, df, "column 'd'", *words)


def test_dates_in_an_expression_and_as_response_and_time() -> None:
    df = small().assign(d=pd.date_range("2020-01-01", periods=60))
    raises(DataError, "y ~ I(d * 2) + (1 | g)", df, "column 'd'", "dates/times")
    raises(DataError, "d ~ x + (1 | g)", df, "response", "dates/times")
    raises(DataError, "y ~ x + (1 | g)", df, "time column 'd'", "dates/times", residual="ou(d | g)")


def test_dates_and_mixed_values_are_fine_as_factors_and_groups() -> None:
    df = small()
    df["d"] = pd.date_range("2020-01-01", periods=3).repeat(20)
    df["m"] = [1, "a", 2.5] * 20
    spec = bayeslmm.model_spec("y ~ C(d) + (1 | d) + (1 | m)", df)
    assert spec.p == 3 and spec.ngroups == {"d": 3, "m": 3}


@pytest.mark.parametrize(
    "col, err, words",
    [
        ("text", DataError, ("response 'y'", "not numeric", "pd.to_numeric")),
        (True, DataError, ("not numeric",)),
        (np.nan, DataError, ("missing (NA) in every row",)),
    ],
)
def test_response_problems(col, err, words) -> None:
    raises(err, "y ~ x + (1 | g)", small().assign(y=col), *words)


def test_missing_and_infinite_values() -> None:
    df = small()
    raises(DataError, "y ~ x + z + (1 | g)", df.assign(z=np.nan), "column 'z'", "every row")
    raises(DataError, "y ~ x + z + (1 | g)", df.assign(z=None), "column 'z'", "every row")
    half = df.assign(x=[np.nan] * 30 + list(df.x[30:]), z=list(df.x[:30]) + [np.nan] * 30)
    raises(DataError, "y ~ x + z + (1 | g)", half, "no row is complete", "x: 30", "z: 30")
    raises(DataError, "y ~ x + (1 | g)", df.assign(x=np.inf), "infinite")
    raises(DataError, "y ~ x + (1 | g)", df.iloc[:0], "no rows")


def test_polars_input_gets_the_same_messages() -> None:
    pl = pytest.importorskip("polars")
    df = small()
    raises(DataError, "y ~ f + (1 | g)", pl.from_pandas(df.assign(f="one")), "only the level 'one'")
    raises(DataError, "y ~ d + (1 | g)", pl.from_pandas(df.assign(d=pd.date_range("2020", periods=60))), "dates/times")
    raises(DataError, "y ~ z + (1 | g)", pl.from_pandas(df).with_columns(z=pl.lit(None)), "every row")
    uni = pl.from_pandas(df.rename(columns={"g": "gruppé"}))
    a = bayeslmm.model_spec("y ~ x + (1 | gruppé)", uni)
    b = bayeslmm.model_spec("y ~ x + (1 | g)", df)
    np.testing.assert_array_equal(a.terms[0].codes, b.terms[0].codes)


# ---------------------------------------------------------------- formula text
@pytest.mark.parametrize("formula", ["y ~ .", "y ~ . + (1 | g)", "y ~ . - t + (1 | g)", "y ~ x + (. | g)"])
def test_dot_is_explained(formula: str) -> None:
    msg = raises(FormulaError, formula, small(), "'.'", "not support", "list the columns")
    assert "formulaic" not in msg


def test_dots_in_names_and_numbers_are_not_the_dot() -> None:
    df = small().assign(**{"log.t": np.log1p(small().t), "g.h": small().g})
    spec = bayeslmm.model_spec("y ~ log.t + I(x * .5) + I(2. * t) + (1 | g.h)", df)
    assert spec.fixef_names[1] == "log.t" and spec.terms[0].group == "g.h"
    np.testing.assert_allclose(spec.X[:, 2], 0.5 * df.x)


# ---------------------------------------------------------------- constants pi and e
@pytest.mark.parametrize("term", ["sin(2*pi*t)", "np.sin(2*np.pi*t)", "sin(2*numpy.pi*t)"])
def test_pi_in_a_formula_fits_as_a_precomputed_column(term: str) -> None:
    df = small()
    a = bayeslmm.lmm(f"y ~ {term} + (1 | g)", df)
    b = bayeslmm.lmm("y ~ s + (1 | g)", df.assign(s=np.sin(2 * np.pi * df.t)))
    assert abs(a.loglik - b.loglik) < 1e-10
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-10, atol=1e-12)


def test_e_constant_and_columns_named_like_constants() -> None:
    df = small()
    spec = bayeslmm.model_spec("y ~ I(e**t) + I(np.e * x) + (1 | g)", df)
    np.testing.assert_allclose(spec.X[:, 1], np.e**df.t)
    np.testing.assert_allclose(spec.X[:, 2], np.e * df.x)
    # a column named e or pi is the column, not the constant (np.pi stays the constant)
    cols = df.assign(e=df.x, pi=df.t)
    spec = bayeslmm.model_spec("y ~ I(e * 2) + I(pi + np.pi) + (1 | g)", cols)
    assert spec.fixef_names == ("(Intercept)", "I(e * 2)", "I(pi + np.pi)")
    np.testing.assert_allclose(spec.X[:, 1], 2 * df.x)
    np.testing.assert_allclose(spec.X[:, 2], df.t + np.pi)


def test_constant_as_a_term_of_its_own_is_explained() -> None:
    raises(FormulaError, "y ~ x + pi + (1 | g)", small(), "constant 'pi'", "I(")


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ I(np.pi.real) + (1 | g)",
        "y ~ I(np.load) + (1 | g)",
        "y ~ I(x.e) + (1 | g)",
        "y ~ I(pi.__class__) + (1 | g)",
    ],
)
def test_constants_open_no_attribute_access(formula: str) -> None:
    raises(FormulaError, formula, small(), "not allowed")
