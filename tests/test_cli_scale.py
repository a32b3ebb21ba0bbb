"""``bayeslmm fit`` out of core: Parquet directories, globs and ``--scheduler``, through Dask.

The CLI runs in this process (``bayeslmm.cli.main``). Every out-of-core fit is compared with the
in-memory ``bayeslmm fit --json`` of the same rows: the estimates agree to 1e-6 relative (BLUPs,
which can be near 0, relative to their largest magnitude). The two paths run their own BOBYQA
on criteria that differ by rounding, so they agree to the optimiser's precision, not bit for bit.
Also: text columns that Dask and pandas read from Parquet as ``string[pyarrow]`` behave as object
text, in memory and out of core; and the user errors of the out-of-core path are one line, status 2.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import cli

dd = pytest.importorskip("dask.dataframe")
pytest.importorskip("pyarrow")

SLEEP = "Reaction ~ Days + (Days | Subject)"
TEXT = "y ~ x + f + (1 + x | g) + (1 | h)"
RTOL = 1e-6


def run(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def fit_json(capfd: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run(capfd, "fit", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if a.size else 0.0


def assert_same_estimates(d: dict, ref: dict) -> None:
    """``d`` (out of core) against ``ref`` (in memory): same fields and rows, estimates to RTOL."""
    assert set(d) - {"out_of_core"} == set(ref)
    for k in ("formula", "method", "nobs", "n_dropped", "ngroups", "npar", "converged", "singular", "dropped_columns"):
        assert d[k] == ref[k], k
    for k in ("fixef", "se", "df"):
        assert list(d[k]) == list(ref[k]), k
        # Satterthwaite's df come from finite differences of the criterion (~1e-6 relative)
        assert _rel(list(d[k].values()), list(ref[k].values())) < (10 * RTOL if k == "df" else RTOL), k
    for k in ("sigma", "loglik", "aic", "bic", "reml_criterion"):
        assert _rel(d[k], ref[k]) < RTOL, k
    # the optimiser works on centred columns whose centres come from the first partition out of core
    # and from all rows in memory: the criteria agree to 1e-13, and the estimates to the precision
    # with which a criterion known to ~1e-13 fixes its argmin along a flat direction
    for k in ("vcov", "theta"):
        assert _rel(d[k], ref[k]) < 10 * RTOL, k
    for rows, ref_rows, keys, values in (
        (d["varcorr"], ref["varcorr"], ("grp", "var1", "var2"), ("vcov", "sdcor")),
        (d["ranef"], ref["ranef"], ("grpvar", "term", "grp"), ("condsd",)),
    ):
        assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in ref_rows]
        for v in values:
            assert _rel([r[v] for r in rows], [r[v] for r in ref_rows]) < 10 * RTOL, v
    cv, cr = np.array([r["condval"] for r in d["ranef"]]), np.array([r["condval"] for r in ref["ranef"]])
    assert np.max(np.abs(cv - cr)) < RTOL * np.abs(cr).max()
    assert d["residual"]["kind"] == "iid" and _rel(d["residual"]["sigma2"], ref["residual"]["sigma2"]) < RTOL


def _text_frame(seed: int = 3, n: int = 400) -> pd.DataFrame:
    """Random slopes in 25 text-labelled groups, a crossed 6-level text factor and a 3-level text fixed effect."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 25, n)
    h = rng.integers(0, 6, n)
    x = rng.normal(size=n)
    f = rng.choice(["lo", "mid", "hi"], n)
    y = (
        1.0
        + 0.5 * x
        + 0.8 * (f == "hi")
        - 0.3 * (f == "lo")
        + rng.normal(size=25)[g]
        + 0.4 * rng.normal(size=25)[g] * x
        + 0.6 * rng.normal(size=6)[h]
        + rng.normal(size=n)
    )
    df = pd.DataFrame({"y": y, "x": x, "f": f, "g": [f"s{v:02d}" for v in g], "h": np.array(list("uvwxyz"))[h]})
    df.loc[[5, 77], "f"] = None  # a missing text value: the row is dropped on both paths
    return df.astype({"f": object, "g": object, "h": object})


@pytest.fixture(scope="module")
def sleep_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sleepstudy in 4 Parquet files (pandas-written: the text column reads back as ``str``)."""
    d = tmp_path_factory.mktemp("sleep")
    df = bayeslmm.datasets.load("sleepstudy")
    for i, rows in enumerate(np.array_split(np.arange(len(df)), 4)):
        df.iloc[rows].to_parquet(d / f"part.{i}.parquet")
    return d


@pytest.fixture(scope="module")
def sleep_ref(sleep_fit) -> dict:
    """``bayeslmm fit sleepstudy -f SLEEP --json`` in memory: the session's REML fit (tests/conftest.py)."""
    return json.loads(cli.to_json(sleep_fit.to_dict()))


def test_in_memory_reference_is_the_cli_output(capfd, sleep_ref) -> None:
    d = fit_json(capfd, "sleepstudy", "-f", SLEEP)
    d.pop("fit_seconds"), d["optimizer"].pop("seconds", None)
    ref = {k: v for k, v in sleep_ref.items() if k != "fit_seconds"}
    ref["optimizer"] = {k: v for k, v in ref["optimizer"].items() if k != "seconds"}
    assert d == ref


def test_directory_is_fitted_out_of_core(capfd, sleep_parts, sleep_ref) -> None:
    d = fit_json(capfd, sleep_parts, "-f", SLEEP)
    assert_same_estimates(d, sleep_ref)
    ooc = d["out_of_core"]
    assert ooc["engine"] == "dask" and ooc["npartitions"] == 4 and ooc["scheduler"] == "threads"
    assert "fitted_dask" in ooc["note"] and ooc["pass_s"] >= 0 and ooc["fit_s"] >= 0


def test_glob_quoted_or_expanded_by_the_shell(capfd, sleep_parts, sleep_ref) -> None:
    d = fit_json(capfd, f"{sleep_parts}/part.*.parquet", "-f", SLEEP)
    assert_same_estimates(d, sleep_ref)
    assert d["out_of_core"]["npartitions"] == 4
    three = sorted(str(p) for p in sleep_parts.glob("part.[123].parquet"))  # the shell's expansion
    d = fit_json(capfd, *three, "-f", SLEEP, "--method", "ML")
    assert d["nobs"] == 135 and d["method"] == "ML" and d["out_of_core"]["npartitions"] == 3


def test_summary_says_what_was_not_computed(capfd, sleep_parts) -> None:
    code, out, err = run(capfd, "fit", sleep_parts, "-f", SLEEP, "--scheduler", "synchronous")
    assert code == 0, err
    assert "REML criterion at convergence: 1743.6" in out and "Fixed effects:" in out
    assert "Scaled residuals: not computed" in out
    assert "Out of core with Dask (synchronous scheduler, 4 partitions)" in out
    assert "Fitted values and residuals were not computed" in out


def test_scheduler_address_of_a_distributed_cluster(capfd, sleep_parts, sleep_ref) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", scheduler_port=0, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        d = fit_json(capfd, sleep_parts, "-f", SLEEP, "--scheduler", address)
        # a single Parquet file with --scheduler goes out of core too
        one = fit_json(capfd, sleep_parts / "part.0.parquet", "-f", SLEEP, "--scheduler", address)
    assert_same_estimates(d, sleep_ref)
    assert d["out_of_core"]["scheduler"] == address and d["out_of_core"]["npartitions"] == 4
    assert one["nobs"] == 45 and one["out_of_core"]["npartitions"] == 1


@pytest.fixture(scope="module")
def text_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    """_text_frame written by Dask: its text columns read back as ``string[pyarrow]``."""
    df = _text_frame()
    d = tmp_path_factory.mktemp("text")
    dd.from_pandas(df, npartitions=3).to_parquet(d / "parts")
    return df, d / "parts"


def test_parquet_text_columns_read_as_pyarrow_strings(text_parts) -> None:
    """The premise of the next tests: Dask and pandas read these columns with a pd.NA string dtype."""
    _, path = text_parts
    for dtypes in (dict(dd.read_parquet(path).dtypes), dict(pd.read_parquet(path).dtypes)):
        for c in ("f", "g", "h"):
            assert isinstance(dtypes[c], pd.StringDtype) and dtypes[c].na_value is pd.NA, (c, dtypes[c])


@pytest.mark.parametrize("dtype", ["string[pyarrow]", "string[python]", "str"])
def test_string_dtype_text_columns_in_memory(dtype) -> None:
    df = _text_frame()
    ref = bayeslmm.lmm(TEXT, df)
    s = df.astype({"f": dtype, "g": dtype, "h": dtype})
    fit = bayeslmm.lmm(TEXT, s)
    assert fit.nobs == ref.nobs == len(df) - 2
    pd.testing.assert_series_equal(fit.fixef, ref.fixef, rtol=0, atol=0)
    pd.testing.assert_frame_equal(fit.ranef(), ref.ranef())
    assert fit.criterion == ref.criterion
    new = s.dropna().iloc[:20]
    np.testing.assert_array_equal(fit.predict(new), ref.predict(df.dropna().iloc[:20]))


def test_string_dtype_text_columns_through_dask(capfd, text_parts) -> None:
    df, path = text_parts
    ref = json.loads(cli.to_json(bayeslmm.lmm(TEXT, df).to_dict()))
    assert_same_estimates(fit_json(capfd, path, "-f", TEXT), ref)
    one = sorted(path.glob("*.parquet"))[0]  # a single Dask-written file: the in-memory path reads it
    d = fit_json(capfd, one, "-f", TEXT)
    assert "out_of_core" not in d
    part = pd.read_parquet(one)
    ref_one = json.loads(cli.to_json(bayeslmm.lmm(TEXT, part.astype({c: object for c in "fgh"})).to_dict()))
    for k in ("nobs", "n_dropped", "ngroups", "fixef", "se", "theta", "varcorr", "ranef"):
        assert d[k] == ref_one[k], k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_match", r"no file matches '.*nothing\.\*\.parquet'"),
        ("bad_address", r"cannot reach the Dask scheduler at 'tcp://127\.0\.0\.1:\d+' within 1 s"),
        ("bad_scheduler", r"--scheduler must be threads, processes, synchronous or a Dask scheduler address"),
        ("serial_residual", r"--residual 'ar1\(Days \| Subject\)': a serial residual process needs the rows"),
        ("csv_scheduler", r"--scheduler fits Parquet data out of core .* drop --scheduler"),
        ("empty_directory", r"is a directory without Parquet files"),
        ("mixed_files", r"several DATA paths .* is not a Parquet file"),
        ("no_dask", r"needs Dask, which is not installed .*pip install 'bayeslmm\[dask\]'"),
        ("unknown_column", r"column .Patient. not found in the data"),
    ],
)
def test_out_of_core_errors_are_one_line_with_status_2(
    capfd, monkeypatch, tmp_path, sleep_parts, case, message
) -> None:
    args: list = [sleep_parts, "-f", SLEEP]
    if case == "no_match":
        args[0] = f"{sleep_parts}/nothing.*.parquet"
    elif case == "bad_address":
        monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT_S", 1.0)
        args += ["--scheduler", f"tcp://127.0.0.1:{_free_port()}"]
    elif case == "bad_scheduler":
        args += ["--scheduler", "fast"]
    elif case == "serial_residual":
        args += ["--residual", "ar1(Days | Subject)"]
    elif case == "csv_scheduler":
        csv = tmp_path / "sleep.csv"
        bayeslmm.datasets.load("sleepstudy").to_csv(csv, index=False)
        args = [csv, "-f", SLEEP, "--scheduler", "threads"]
    elif case == "empty_directory":
        (tmp_path / "notes.txt").write_text("no parquet here")
        args[0] = tmp_path
    elif case == "mixed_files":
        (tmp_path / "a.csv").write_text("x\n1\n")
        args = [sleep_parts / "part.0.parquet", tmp_path / "a.csv", "-f", SLEEP]
    elif case == "no_dask":
        for mod in ("dask", "dask.dataframe"):
            monkeypatch.setitem(sys.modules, mod, None)
    elif case == "unknown_column":
        args = [sleep_parts, "-f", "Reaction ~ Days + (1 | Patient)"]
    code, out, err = run(capfd, "fit", *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayeslmm: error:"), err
    assert "Traceback" not in err and out == ""
    assert re.search(message, lines[0]), lines[0]


def test_other_commands_point_to_fit_for_directories(capfd, sleep_parts) -> None:
    code, _, err = run(capfd, "limit", sleep_parts, "-f", SLEEP)
    assert code == 2 and "only 'bayeslmm fit' reads a directory of Parquet files" in err


def test_help_documents_the_out_of_core_path(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["fit", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--scheduler ADDRESS" in text and "out of core" in text and "pip install 'bayeslmm[dask]'" in text
    assert "directory of Parquet files" in text and "threads, processes or synchronous" in text
