"""Damaged Parquet input out of core: the error names the file and what is wrong, status 2.

A truncated file, a file without a column of the formula, or a grouping column of another type
in one file, anywhere in a directory: before the fix the first file gave a proper message and any
later one ``internal error: ArrowInvalid: Parquet magic bytes not found`` or ``KeyError: "['x'] not
in index"`` (no file named), and ``lmm_dask`` raised the raw exception; a categorical column in one
file was reported as "holds numbers in some chunks".
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError, cli

pytest.importorskip("dask.dataframe")
pytest.importorskip("pyarrow")

SLEEP = "Reaction ~ Days + (Days | Subject)"


def _parts(tmp_path: Path, damage: str, where: int) -> Path:
    """sleepstudy in four Parquet files, the file ``where`` damaged."""
    df = bayeslmm.datasets.load("sleepstudy")
    d = tmp_path / f"{damage}{where}"
    d.mkdir()
    for i in range(4):
        part = df.iloc[i * 45 : (i + 1) * 45]
        if i == where and damage == "nocolumn":
            part = part.drop(columns=["Days"])
        if i == where and damage == "categorical":
            part = part.assign(Subject=part["Subject"].astype("category"))
        if i == where and damage == "numbers":
            part = part.assign(Subject=pd.to_numeric(part["Subject"]))
        part.to_parquet(d / f"part.{i}.parquet")
    if damage == "truncated":
        path = d / f"part.{where}.parquet"
        path.write_bytes(path.read_bytes()[:100])
    return d


CASES = [
    ("truncated", r"cannot read the Parquet file '.*part\.{w}\.parquet'.*(magic bytes|truncated)"),
    ("nocolumn", r"the Parquet file '.*part\.{w}\.parquet' has no column 'Days'"),
    ("categorical", r"column 'Subject' is categorical .* in '.*part\.{w}\.parquet' but text"),
    ("numbers", r"column 'Subject' is numbers .* in '.*part\.{w}\.parquet' but text"),
]


@pytest.mark.parametrize("damage, pattern", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("where", [0, 2])
def test_the_cli_names_the_damaged_file(tmp_path: Path, capfd, damage: str, pattern: str, where: int) -> None:
    d = _parts(tmp_path, damage, where)
    code = cli.main(["fit", str(d), "-f", SLEEP])
    out, err = capfd.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayeslmm: error: "), err
    assert re.search(pattern.format(w=where), lines[0]), err


@pytest.mark.parametrize("damage, pattern", CASES, ids=[c[0] for c in CASES])
def test_lmm_dask_raises_a_data_error_naming_the_file(tmp_path: Path, damage: str, pattern: str) -> None:
    from bayeslmm.suff import lmm_dask

    d = _parts(tmp_path, damage, 2)
    with pytest.raises(DataError, match=pattern.format(w=2)):
        lmm_dask(SLEEP, str(d))
    files = sorted(str(p) for p in d.glob("*.parquet"))  # a list of files too
    with pytest.raises(DataError, match=pattern.format(w=2)):
        lmm_dask(SLEEP, files)


def test_undamaged_data_and_a_typo_are_unchanged(tmp_path: Path, capfd) -> None:
    d = _parts(tmp_path, "none", -1)
    assert cli.main(["fit", str(d), "-f", SLEEP, "--json"]) == 0
    capfd.readouterr()
    assert cli.main(["fit", str(d), "-f", "Reaction ~ Dayz + (Days | Subject)"]) == 2
    assert "column 'Dayz' not found" in capfd.readouterr().err


def test_in_memory_chunks_of_categories_and_text_are_described_as_such() -> None:
    dd = pytest.importorskip("dask.dataframe")
    from bayeslmm.suff import lmm_dask

    df = bayeslmm.datasets.load("sleepstudy")
    a, b = df.iloc[:90], df.iloc[90:].assign(Subject=lambda x: x["Subject"].astype("category"))
    ddf = dd.from_delayed(
        [__import__("dask").delayed(a), __import__("dask").delayed(b)], meta=a.iloc[:0], verify_meta=False
    )
    with pytest.raises(DataError, match="categorical in some chunks and text in others"):
        lmm_dask(SLEEP, ddf)
