"""Reading data on the command line as R's read.csv does; the dropped-rows note; a closed output pipe."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.cli import EXIT_BROKEN_PIPE, EXIT_USER_ERROR, build_parser, main, read_data

#: level names pandas reads as missing by default; R's read.csv keeps them
LEVELS = ["None", "null", "nan", "NaN", "N/A", "a"]
FORMULA = "y ~ x + (1 | g)"


def _rows(seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = [lev for lev in LEVELS for _ in range(8)]
    x = rng.normal(size=len(g)).round(3)
    y = (1.0 + 0.5 * x + np.repeat(rng.normal(size=len(LEVELS)), 8) + rng.normal(size=len(g))).round(3)
    return g, x, y


def _write(path: Path, header: str, lines: list[str]) -> str:
    path.write_text("\n".join([header, *lines]) + "\n")
    return str(path)


def _csv(
    tmp_path: Path, x_text: dict[int, str] | None = None, name: str = "d.csv", sep: str = ",", decimal: str = "."
) -> str:
    """g (levels LEVELS), x (row i replaced by x_text[i]), y: 48 rows."""
    g, x, y = _rows()
    xs = [f"{v:g}".replace(".", decimal) for v in x]
    for i, t in (x_text or {}).items():
        xs[i] = t
    lines = [sep.join([a, b, f"{c:g}".replace(".", decimal)]) for a, b, c in zip(g, xs, y)]
    return _write(tmp_path / name, sep.join(["g", "x", "y"]), lines)


def _fit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | None, str]:
    code = main(["fit", *args, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_text_levels_none_null_nan_are_kept_and_numeric_na_is_missing(tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path, {3: "NA", 20: "NA"})
    df = read_data(path)
    assert sorted(df["g"].unique()) == sorted(LEVELS) and df["g"].notna().all()
    assert df["x"].dtype == float and int(df["x"].isna().sum()) == 2
    code, d, err = _fit(capsys, path, "-f", FORMULA)
    assert code == 0 and d["nobs"] == 46 and d["n_dropped"] == 2 and d["ngroups"] == {"g": 6}
    assert err == "bayeslmm: note: dropped 2 of 48 rows with missing values: 2 in 'x' (read as missing: 'NA')\n"


def test_no_note_when_nothing_is_dropped(tmp_path: Path, capsys) -> None:
    code, d, err = _fit(capsys, _csv(tmp_path), "-f", FORMULA)
    assert code == 0 and d["nobs"] == 48 and d["n_dropped"] == 0 and err == ""


def test_markers_in_a_numeric_column_are_missing_and_named(tmp_path: Path, capsys) -> None:
    # R reads NaN as a number (missing for lme4); None/null/N/A among numbers are pandas' markers
    path = _csv(tmp_path, {0: "NaN", 1: "nan", 2: "None", 3: "null", 4: "", 5: "NA", 6: "N/A"})
    df = read_data(path)
    assert df["x"].dtype == float and int(df["x"].isna().sum()) == 7
    code, d, err = _fit(capsys, path, "-f", FORMULA)
    assert code == 0 and d["nobs"] == 41 and d["n_dropped"] == 7
    assert err.startswith("bayeslmm: note: dropped 7 of 48 rows with missing values: 7 in 'x' (read as missing: ")
    for token in ("'NaN' 1", "'nan' 1", "'None' 1", "'null' 1", "empty field 1", "'NA' 1", "'N/A' 1"):
        assert token in err


def test_a_text_entry_among_numbers_keeps_the_column_text_as_r(tmp_path: Path) -> None:
    df = read_data(_csv(tmp_path, {0: "low"}))
    assert df["x"].dtype != float and (df["x"] == "low").sum() == 1 and df["x"].notna().all()


def test_alfalfa_date_level_none_is_a_level(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    date = np.tile(["None", "S1", "S20", "O7"], 18)
    block = np.repeat(np.arange(1, 7), 12)
    y = 1.5 + 0.2 * (date == "S1") + rng.normal(0, 0.1, 6)[block - 1] + rng.normal(0, 0.1, 72)
    path = _write(tmp_path / "alfalfa.csv", "Date,Block,Yield", [f"{a},{b},{c:.4f}" for a, b, c in zip(date, block, y)])
    code, d, err = _fit(capsys, path, "-f", "Yield ~ Date + (1 | Block)")
    assert code == 0 and d["nobs"] == 72 and d["n_dropped"] == 0 and err == ""
    assert set(d["fixef"]) == {"(Intercept)", "Date[T.O7]", "Date[T.S1]", "Date[T.S20]"}  # None: the baseline
    code, d, err = _fit(capsys, path, "-f", "Yield ~ Date + (1 | Block)", "--na-values", "None")
    assert code == 0 and d["nobs"] == 54 and d["n_dropped"] == 18
    assert err == (
        "bayeslmm: note: dropped 18 of 72 rows with missing values: 18 in 'Date' (read as missing: 'None')\n"
    )


def test_na_values_adds_markers_in_numeric_and_text_columns(tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path, {0: "-", 9: "-", 30: "NA"})
    assert read_data(path)["x"].dtype != float  # '-' is text to R
    df = read_data(path, ["-", "null"])
    assert df["x"].dtype == float and int(df["x"].isna().sum()) == 3 and int(df["g"].isna().sum()) == 8
    code, d, err = _fit(capsys, path, "-f", FORMULA, "--na-values", " -, null")
    assert code == 0 and d["nobs"] == 38 and d["n_dropped"] == 10 and d["ngroups"] == {"g": 5}  # row 9 is in both
    assert err == (
        "bayeslmm: note: dropped 10 of 48 rows with missing values: 8 in 'g' (read as missing: 'null'), "
        "3 in 'x' (read as missing: '-' 2, 'NA' 1)\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["fit", "-f", FORMULA],
        ["lrt", "--null", "y ~ x", "--alt", FORMULA],
        ["limit", "-f", FORMULA],
        ["sample", "-f", FORMULA],
        ["compare", "-f", FORMULA],
    ],
)
def test_every_command_that_reads_data_takes_na_values(command: list[str]) -> None:
    args = build_parser().parse_args([command[0], "d.csv", *command[1:], "--na-values", "None,-"])
    assert args.na_values == "None,-"


def test_lrt_reads_na_values_and_notes_the_drop_once(tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path, {0: "-"})
    code = main(["lrt", path, "--null", "y ~ x", "--alt", FORMULA, "--na-values", "-", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["alt"]["method"] in ("REML", "ML")
    assert err.count("dropped 1 of 48 rows") == 1 and "(read as missing: '-')" in err


def test_semicolon_file_with_decimal_commas_is_read_correctly(tmp_path: Path, capsys) -> None:
    code, ref, _ = _fit(capsys, _csv(tmp_path), "-f", FORMULA)
    path = _csv(tmp_path, {5: "NA"}, name="semi.csv", sep=";", decimal=",")
    assert "," in Path(path).read_text().splitlines()[1]
    df = read_data(path)
    assert list(df.columns) == ["g", "x", "y"] and df["x"].dtype == float and df["y"].dtype == float
    capsys.readouterr()
    code, d, err = _fit(capsys, path, "-f", FORMULA)
    assert code == 0 and d["nobs"] == 47
    assert "'semi.csv' is separated by ';', not commas; read 'x', 'y' with decimal commas" in err
    assert "dropped 1 of 48 rows with missing values: 1 in 'x' (read as missing: 'NA')" in err
    path = _csv(tmp_path, name="semi2.csv", sep=";", decimal=",")
    code, d, _ = _fit(capsys, path, "-f", FORMULA)
    assert d["fixef"] == pytest.approx(ref["fixef"], rel=1e-12)


def test_tab_and_pipe_separated_files(tmp_path: Path, capsys) -> None:
    code, ref, _ = _fit(capsys, _csv(tmp_path), "-f", FORMULA)
    code, d, err = _fit(capsys, _csv(tmp_path, name="d.tsv", sep="\t"), "-f", FORMULA)
    assert code == 0 and err == "" and d["fixef"] == pytest.approx(ref["fixef"], rel=1e-12)
    code, d, err = _fit(capsys, _csv(tmp_path, name="p.csv", sep="|"), "-f", FORMULA)
    assert code == 0 and "separated by '|', not commas" in err and d["nobs"] == 48


def test_a_compressed_semicolon_file_says_so(tmp_path: Path, capsys) -> None:
    src = Path(_csv(tmp_path, name="s.csv", sep=";"))
    gz = tmp_path / "s.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    code = main(["fit", str(gz), "-f", FORMULA])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and err.count("\n") == 1
    assert "has one column, 'g;x;y': it seems to be separated by ';'" in err


def test_parquet_text_keeps_none_and_na_values_applies(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyarrow")
    g, x, y = _rows()
    df = pd.DataFrame({"g": pd.Categorical(g), "x": x, "y": y})
    df.loc[[0, 1], "x"] = np.nan
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    code, d, err = _fit(capsys, str(path), "-f", FORMULA)
    assert code == 0 and d["nobs"] == 46 and d["ngroups"] == {"g": 6}
    assert err == ("bayeslmm: note: dropped 2 of 48 rows with missing values: 2 in 'x' (null in the Parquet file)\n")
    code, d, err = _fit(capsys, str(path), "-f", FORMULA, "--na-values", "None")
    assert code == 0 and d["nobs"] == 40 and d["ngroups"] == {"g": 5}  # rows 0, 1 are in level None
    assert "8 in 'g' (read as missing: 'None')" in err


def test_bundled_dataset_with_na_values(capsys) -> None:
    code, d, err = _fit(capsys, "dyestuff", "-f", "Yield ~ 1 + (1 | Batch)", "--na-values", "A")
    assert code == 0 and d["nobs"] == 25 and d["ngroups"] == {"Batch": 5}
    assert err == "bayeslmm: note: dropped 5 of 30 rows with missing values: 5 in 'Batch' (read as missing: 'A')\n"


def test_na_values_out_of_core_is_an_option_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "a.parquet").write_bytes(b"")
    code = main(["fit", str(tmp_path / "pq"), "-f", FORMULA, "--na-values", "None"])
    assert code == EXIT_USER_ERROR and "--na-values applies to data read into memory" in capsys.readouterr().err


def test_the_api_warns_with_counts_per_column(tmp_path: Path) -> None:
    df = read_data(_csv(tmp_path, {3: "NA", 4: "NaN"}))
    with pytest.warns(bayeslmm.MissingValuesWarning, match=r"dropped 2 of 48 rows with missing values: 2 in 'x'$") as w:
        fit = bayeslmm.lmm(FORMULA, df)
    assert fit.spec.n_dropped == 2 and w[0].message.counts == {"x": 2} and w[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bayeslmm.lmm(FORMULA, df.dropna()).spec.n_dropped == 0


def _command() -> list[str]:
    exe = Path(sys.executable).parent / "bayeslmm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bayeslmm"]


def test_a_closed_pipe_ends_quietly_with_141() -> None:
    # the reader leaves before the first line is written, as `| head -1` once it has its line
    proc = subprocess.Popen(
        [*_command(), "fit", "pig_weights", "-f", "weight ~ num_weeks + (1 | id_num)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE and err == b""


@pytest.mark.skipif(os.name != "posix", reason="a POSIX shell pipeline")
def test_piped_to_head_prints_the_first_line_and_no_error() -> None:
    cmd = " ".join([*_command(), "fit", "pig_weights", "-f", "'weight ~ num_weeks + (1 | id_num)'"])
    r = subprocess.run(
        ["bash", "-c", f"{cmd} | head -1; exit ${{PIPESTATUS[0]}}"], capture_output=True, text=True, timeout=60
    )
    assert r.stdout == "Linear mixed model fit by REML ['lmerMod']\n" and r.stderr == ""
    assert r.returncode in (0, EXIT_BROKEN_PIPE)


def test_out_of_core_categorical_parquet_and_the_dropped_rows_note(tmp_path: Path, capsys) -> None:
    pytest.importorskip("dask.dataframe")
    g, x, y = _rows()
    df = pd.DataFrame({"g": pd.Categorical(g), "x": x, "y": y})
    df.loc[[0, 30], "x"] = np.nan
    (tmp_path / "pq").mkdir()
    df.iloc[:20].to_parquet(tmp_path / "pq" / "a.parquet")  # Dask reads g as 'unknown categories'
    df.iloc[20:].to_parquet(tmp_path / "pq" / "b.parquet")
    df.to_parquet(tmp_path / "all.parquet")
    code, mem, _ = _fit(capsys, str(tmp_path / "all.parquet"), "-f", FORMULA)
    code, ooc, err = _fit(capsys, str(tmp_path / "pq"), "-f", FORMULA)
    assert code == 0, err
    assert ooc["nobs"] == mem["nobs"] == 46 and ooc["ngroups"] == {"g": 6} and ooc["n_dropped"] == 2
    assert ooc["fixef"] == pytest.approx(mem["fixef"], rel=1e-6)
    assert err == (
        "bayeslmm: note: dropped 2 of 48 rows with missing values in the columns the formula uses "
        "(out of core: not counted per column)\n"
    )
