"""Formula parsing, safety of formula evaluation, and the model specification."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError, FormulaError
from bayeslmm.spec import Bar, parse_formula


@pytest.mark.parametrize(
    "text, fixed, bars",
    [
        ("y ~ x + (1 | g)", "x", [("1", ("g",))]),
        ("y ~ x + (1 + t | g)", "x", [("1 + t", ("g",))]),
        ("y ~ (t | g)", "1", [("t", ("g",))]),
        ("y ~ x + (t || g)", "x", [("1", ("g",)), ("0 + t", ("g",))]),
        ("y ~ 1 + (1 | a/b)", "1", [("1", ("a",)), ("1", ("a", "b"))]),
        ("y ~ 1 + (1 | a:b)", "1", [("1", ("a", "b"))]),
        ("y ~ x*f + (1 | a) + (1 | b)", "x*f", [("1", ("a",)), ("1", ("b",))]),
        ("y ~ 0 + x + (0 + x | g)", "0 + x", [("0 + x", ("g",))]),
        ("y~x+(1|g)", "x", [("1", ("g",))]),
    ],
)
def test_parse_formula(text: str, fixed: str, bars: list) -> None:
    p = parse_formula(text)
    assert p.response == "y"
    assert p.fixed == fixed
    assert list(p.bars) == [Bar(lhs=lhs, factors=f) for lhs, f in bars]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("y x + (1|g)", "exactly one '~'"),
        ("y ~ x ~ z", "exactly one '~'"),
        ("~ x + (1 | g)", "no response"),
        ("y ~ ", "nothing on the right"),
        ("y ~ x + 1 | g", "own parentheses"),
        ("y ~ x + (1 | g", "unbalanced"),
        ("y ~ x + ( | g)", "nothing left of"),
        ("y ~ x + (1 | g + h)", "grouping factor"),
        ("y ~ x ++ (1|g)", "empty term"),
    ],
)
def test_malformed_formulas_are_rejected_with_a_message(text: str, match: str) -> None:
    with pytest.raises(FormulaError, match=match):
        parse_formula(text)


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ I(__import__('os').system('touch /tmp/bayeslmm_pwned')) + (1 | a)",
        "y ~ {__import__('os').system('touch /tmp/bayeslmm_pwned')} + (1 | a)",
        "y ~ x.__class__ + (1 | a)",
        "y ~ I((lambda: 1)()) + (1 | a)",
        "y ~ np.load('x') + (1 | a)",
        "y ~ eval('1') + (1 | a)",
        "y ~ I(x[0]) + (1 | a)",
        "y ~ open('f') + (1 | a)",
        "__import__('os').system('touch /tmp/bayeslmm_pwned') ~ x + (1 | a)",
        "y ~ x + (I(__import__('os').getcwd()) | a)",
        "y ~ getattr(np, 'load')('x') + (1 | a)",
    ],
)
def test_code_in_a_formula_is_rejected_and_not_run(formula: str, frame, tmp_path) -> None:
    import os

    marker = "/tmp/bayeslmm_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(bayeslmm.BayesLMMError, match="not allowed|not found"):
        bayeslmm.model_spec(formula, frame)
    assert not os.path.exists(marker)


def test_allowed_transforms_evaluate_correctly(frame) -> None:
    df = frame.assign(z=np.exp(frame.x))
    spec = bayeslmm.model_spec("np.log(y + 10) ~ I(x**2) + log(z) + np.sqrt(z) + center(c) + (1 | a)", df)
    X = pd.DataFrame(spec.X, columns=spec.fixef_names)
    np.testing.assert_allclose(spec.y, np.log(df.y + 10))
    np.testing.assert_allclose(X["I(x ** 2)"], df.x**2)
    np.testing.assert_allclose(X["log(z)"], df.x, atol=1e-12)
    np.testing.assert_allclose(X["np.sqrt(z)"], np.sqrt(df.z))
    np.testing.assert_allclose(X["center(c)"], df.c - df.c.mean())


def test_categorical_treatment_contrasts_and_interactions(frame) -> None:
    spec = bayeslmm.model_spec("y ~ x * f + (1 | a)", frame)
    assert spec.fixef_names == ("(Intercept)", "x", "f[T.lo]", "f[T.mid]", "x:f[T.lo]", "x:f[T.mid]")
    X = pd.DataFrame(spec.X, columns=spec.fixef_names)
    np.testing.assert_array_equal(X["f[T.lo]"], (frame.f == "lo").astype(float))
    np.testing.assert_allclose(X["x:f[T.mid]"], frame.x * (frame.f == "mid"))


def test_grouping_factor_levels_sorted_as_r_and_numeric_groups_are_factors(frame) -> None:
    spec = bayeslmm.model_spec("y ~ x + (1 | a) + (1 | a:b)", frame)
    ab, a = spec.terms  # more levels first, as lme4
    assert a.group == "a" and a.levels == tuple(str(i) for i in range(9))
    assert ab.group == "a:b"
    assert ab.levels[0] == "0:" + str(sorted(frame.b[frame.a == 0].unique())[0])
    np.testing.assert_array_equal(np.asarray(a.levels)[a.codes], frame.a.astype(str))
    labels = [f"{i}:{j}" for i, j in zip(frame.a, frame.b)]
    np.testing.assert_array_equal(np.asarray(ab.levels)[ab.codes], labels)


def test_float_and_string_grouping_labels() -> None:
    df = pd.DataFrame({"y": np.arange(12.0) % 5, "g": [1.0, 2.0, 10.0] * 4, "h": list("bca") * 4})
    spec = bayeslmm.model_spec("y ~ 1 + (1 | g) + (1 | h)", df)
    assert spec.terms[0].levels == ("1", "2", "10")
    assert spec.terms[1].levels == ("a", "b", "c")


def test_rows_with_missing_values_are_dropped_and_counted(frame) -> None:
    df = frame.copy()
    df.loc[[3, 7], "y"] = np.nan
    df.loc[11, "x"] = np.nan
    df.loc[20, "c"] = np.nan  # unused column: row kept
    spec = bayeslmm.model_spec("y ~ x + (1 | a)", df)
    assert spec.n == len(df) - 3 and spec.n_dropped == 3
    assert 3 not in spec.row_index and 20 in spec.row_index


def test_input_data_is_not_modified(frame) -> None:
    df = frame.copy()
    df.loc[5, "y"] = np.nan
    before = df.copy(deep=True)
    bayeslmm.lmm("y ~ x * f + (1 + x | a) + (1 | b)", df)
    pd.testing.assert_frame_equal(df, before)


def test_spec_is_immutable(frame) -> None:
    spec = bayeslmm.model_spec("y ~ x + (1 | a)", frame)
    with pytest.raises(ValueError):
        spec.X[0, 0] = 1.0
    with pytest.raises(AttributeError):
        spec.formula = "y ~ 1"  # type: ignore[misc]


def test_rank_deficient_columns_are_dropped_with_a_warning(frame) -> None:
    df = frame.assign(x2=2 * frame.x, x3=frame.x + 1)
    with pytest.warns(UserWarning, match="rank deficient so dropping 2"):
        spec = bayeslmm.model_spec("y ~ x + x2 + x3 + (1 | a)", df)
    assert spec.fixef_names == ("(Intercept)", "x")
    assert spec.dropped_columns == ("x2", "x3")


def test_polars_frames_are_accepted(frame) -> None:
    pl = pytest.importorskip("polars")
    a = bayeslmm.lmm("y ~ x + (1 | a)", frame)
    b = bayeslmm.lmm("y ~ x + (1 | a)", pl.from_pandas(frame))
    assert a.loglik == pytest.approx(b.loglik, abs=1e-10)


@pytest.mark.parametrize(
    "formula, df_change, exc, match",
    [
        ("y ~ nope + (1 | a)", None, DataError, "column 'nope' not found"),
        ("y ~ x + (1 | nope)", None, DataError, "column 'nope' not found"),
        ("f ~ x + (1 | a)", None, DataError, "not numeric"),
        ("y ~ x + (1 | one)", "one", DataError, "has 1 level"),
        ("y ~ x + (1 | a)", "allmissing", DataError, "missing .NA. in every row"),
        ("y ~ x + (1 | a)", "inf", DataError, "infinite"),
        ("y ~ x + (1 | row)", "row", DataError, "levels for .* observations"),
        ("y ~ x + (1 + x + f | a)", "small", DataError, "unidentifiable|levels for"),
        ("y ~ x", None, DataError, "no random-effect term"),
    ],
)
def test_bad_data_gets_a_clear_error(frame, formula, df_change, exc, match) -> None:
    df = frame.copy()
    if df_change == "one":
        df["one"] = "only"
    elif df_change == "allmissing":
        df["y"] = np.nan
    elif df_change == "inf":
        df.loc[4, "x"] = np.inf
    elif df_change == "row":
        df["row"] = np.arange(len(df))
    elif df_change == "small":
        df = df.iloc[:20]
    with pytest.raises(exc, match=match):
        bayeslmm.lmm(formula, df)


def test_header_only_data_is_rejected() -> None:
    with pytest.raises(DataError, match="no rows"):
        bayeslmm.lmm("y ~ x + (1 | g)", pd.DataFrame({"y": [], "x": [], "g": []}))


def test_unknown_method_is_rejected(frame) -> None:
    with pytest.raises(bayeslmm.OptionError, match="unknown method"):
        bayeslmm.lmm("y ~ x + (1 | a)", frame, method="GLS")
