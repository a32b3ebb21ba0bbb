"""Bad input to the residual structures: each a bayeslmm error that names the problem and what to do, and
one line with exit status 2 on the command line.

Structures by visit (too few observations at a visit, a repeated visit, visits never seen together, too
few subjects for ``us``), strata that change within a subject, coordinates with missing values, random
effects that the structure already holds, unknown structures, options and variance functions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError, FormulaError, StructureError

ORTHO = Path(__file__).resolve().parent / "data" / "orthodont.csv"
FORM = "distance ~ age * Sex"


@pytest.fixture(scope="module")
def ortho() -> pd.DataFrame:
    return pd.read_csv(ORTHO)


@pytest.fixture(scope="module")
def field() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"x": rng.uniform(size=40), "y": rng.uniform(size=40), "z": rng.normal(size=40), "g": np.repeat(range(8), 5)}
    )


def fails(err: type, data: pd.DataFrame, *words: str, formula: str = FORM, **kw: str) -> str:
    """``bayeslmm.lmm(formula, data, **kw)`` raises ``err`` with every one of ``words`` in its message."""
    with pytest.raises(err) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bayeslmm.lmm(formula, data, **kw)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "\n" not in msg
    return msg


def test_a_visit_with_one_observation_has_no_variance_for_us(ortho: pd.DataFrame) -> None:
    d = ortho.assign(v=ortho.age.astype(str))
    d.loc[d.index[0], "v"] = "99"
    fails(DataError, d, "'99'", "fewer than 2 observations", "cs, toep", residual="us(v | Subject)")
    bayeslmm.lmm(FORM, d, residual="cs(v | Subject)")  # one variance: fine


def test_a_repeated_visit_of_a_subject(ortho: pd.DataFrame) -> None:
    d = pd.concat([ortho, ortho.iloc[:2]], ignore_index=True)
    for k in ("us", "csh", "toep"):
        fails(DataError, d, "2 observation(s) repeat a visit", "average the repeats", residual=f"{k}(age | Subject)")


def test_visits_never_observed_together(ortho: pd.DataFrame) -> None:
    odd = ortho.Subject.str[1:].astype(int) % 2 == 1
    d = ortho.assign(v=np.where(odd & (ortho.age >= 12), ortho.age + 100, ortho.age))
    d = d[~odd | (d.v > 100) | (d.age == 8)]
    fails(DataError, d, "no subject has both visit", "toeph, ar1h, csh", residual="us(v | Subject)")


def test_too_many_parameters_for_the_data(ortho: pd.DataFrame) -> None:
    three = ortho[ortho.Subject.isin(["M01", "M02", "F01"])]
    fails(
        DataError,
        three,
        "needs at least 6 subjects",
        "there are 3",
        "fewer parameters",
        formula="distance ~ Sex",
        residual="us(age | Subject)",
    )
    two = ortho[ortho.Subject.isin(["M01", "F01"])]
    fails(DataError, two, "more parameters than the data can identify", residual="us(age | Subject)")
    d = ortho[ortho.Subject.isin(["M01", "M02", "M03", "M04", "F01", "F02", "F03", "F04", "F05", "F06"])]
    fails(DataError, d, "in Sex = 'Male'", "needs at least 5 subjects", "there are 4", residual="us(age | Sex/Subject)")


def test_a_stratum_that_changes_within_a_subject(ortho: pd.DataFrame) -> None:
    d = ortho.copy()
    d.loc[d.index[0], "Sex"] = "Female" if d.loc[d.index[0], "Sex"] == "Male" else "Male"
    fails(
        DataError,
        d,
        "'Sex' must be constant within each level of 'Subject'",
        "M01",
        formula="distance ~ age",
        residual="us(age | Sex/Subject)",
    )
    fails(
        DataError,
        ortho.assign(Sex=ortho.Sex.where(ortho.index != 4)),
        "'Sex'",
        "missing in 1 row",
        formula="distance ~ age",
        residual="us(age | Sex/Subject)",
    )


def test_coordinates_with_missing_values(field: pd.DataFrame) -> None:
    d = field.copy()
    d.loc[3, "x"] = np.nan
    fails(DataError, d, "column 'x'", "missing in 1 row(s)", "fill it in", formula="z ~ 1", residual="exp(x + y | g)")


@pytest.mark.parametrize("kind", ["us", "cs", "toep"])
def test_a_random_intercept_that_the_structure_holds(ortho: pd.DataFrame, kind: str) -> None:
    fails(
        StructureError,
        ortho,
        "random intercept (1 | Subject)",
        "not identifiable",
        "csh, ar1h, toeph",
        formula=FORM + " + (1 | Subject)",
        residual=f"{kind}(age | Subject)",
    )


@pytest.mark.parametrize("kind", ["csh", "ar1h", "toeph", "diag"])
def test_a_random_intercept_next_to_heterogeneous_structures_is_allowed(kind: str) -> None:
    from bayeslmm.cov import STRUCTURES

    assert STRUCTURES[kind].confounded_with_intercept is False
    assert STRUCTURES["toep"].confounded_with_intercept and STRUCTURES["us"].confounded_with_intercept


def test_random_effects_of_the_visit_next_to_us(ortho: pd.DataFrame) -> None:
    fails(
        StructureError,
        ortho,
        "(0 + age | Subject)",
        "one value per visit",
        "not identifiable",
        formula=FORM + " + (0 + age | Subject)",
        residual="us(age | Subject)",
    )


def test_a_variance_per_visit_twice(ortho: pd.DataFrame) -> None:
    fails(
        StructureError,
        ortho,
        "already has a variance per visit",
        "ident(age)",
        residual="us(age | Subject)",
        variance="ident(age)",
    )


def test_unknown_structures_options_and_variance_functions(ortho: pd.DataFrame, field: pd.DataFrame) -> None:
    fails(
        FormulaError,
        ortho,
        "'unst(age | Subject)' is not understood",
        "us(visit | group)",
        "toeph",
        residual="unst(age | Subject)",
    )
    fails(FormulaError, field, "nugget must be true or false", formula="z ~ 1", residual="exp(x + y | g, nugget=maybe)")
    fails(FormulaError, field, "unknown option 'nuget'", formula="z ~ 1", residual="exp(x + y | g, nuget=true)")
    fails(FormulaError, ortho, "unknown option 'nugget' (options: none)", residual="us(age | Subject, nugget=true)")
    fails(FormulaError, ortho, "'linear(age)' is not understood", "varIdent", variance="linear(age)")
    fails(
        DataError,
        ortho,
        "variance function ident(visit)",
        "column 'visit' not found",
        variance="ident(visit)",
        formula=FORM + " + (1 | Subject)",
    )
    fails(
        DataError,
        ortho,
        "variance function power(weight)",
        "'weight' not found",
        residual="cs(age | Subject)",
        variance="power(weight)",
    )
    fails(DataError, ortho, "residual structure us(week | Subject)", "'week' not found", residual="us(week | Subject)")
    fails(DataError, ortho.assign(z=0.0), "power(z)", "use exp(z)", variance="power(z)")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--residual", "us(age | Subject)", "--variance", "ident(nope)"], ["column 'nope' not found"]),
        (["--residual", "exp(age | Subject, nugget=maybe)"], ["nugget must be true or false"]),
        (["--residual", "unst(age | Subject)"], ["not understood"]),
        (["--residual", "us(age | Subject)", "-f", FORM + " + (1 | Subject)"], ["not identifiable"]),
        (["--variance", "linear(age)"], ["not understood"]),
    ],
)
def test_the_command_line_prints_one_line_and_exits_2(cli, args: list[str], words: list[str]) -> None:
    base = ["fit", ORTHO, "-f", FORM]
    if "-f" in args:
        base = ["fit", ORTHO]
    r = cli(*base, *args)
    assert r.returncode == 2 and r.stderr.startswith("bayeslmm: error: ") and r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr


def test_command_line_structures_and_lrt_errors(cli) -> None:
    r = cli("structures", ORTHO, "-f", FORM, "--structures", "us,cs")
    assert r.returncode == 2 and "bare name" in r.stderr and "--visit" in r.stderr
    r = cli(
        "lrt",
        ORTHO,
        "--null",
        FORM,
        "--alt",
        FORM,
        "--null-residual",
        "us(age | Subject)",
        "--alt-residual",
        "cs(age | Subject)",
    )
    assert r.returncode == 2 and "not a special case of cs" in r.stderr
    r = cli(
        "lrt",
        ORTHO,
        "--null",
        "distance ~ age",
        "--alt",
        FORM,
        "--null-residual",
        "cs(age | Subject)",
        "--alt-residual",
        "us(age | Subject)",
    )
    assert r.returncode == 2 and "same fixed effects" in r.stderr
