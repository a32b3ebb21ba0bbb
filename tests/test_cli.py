"""The command line: JSON output, the demo, and one-line errors with status 2 for bad input.

What a command computes and prints is tested in this process (the ``cli`` fixture runs
:func:`bayeslmm.cli.main`); the one-line errors and their exit status, which are about the process
a user runs, through the installed ``bayeslmm`` command in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import assert_drawn

PIG = "weight ~ num_weeks + (1 | id_num)"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "bayeslmm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bayeslmm"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def test_fit_json_on_a_bundled_dataset(cli) -> None:
    r = cli("fit", "pig_weights", "--formula", PIG, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["method"] == "REML" and d["nobs"] == 432 and d["ngroups"] == {"id_num": 48}
    assert d["reml_criterion"] == pytest.approx(2033.797, abs=1e-3)
    assert d["fixef"]["num_weeks"] == pytest.approx(6.20990, abs=1e-5)
    assert 0 < d["fit_seconds"] < 10


def test_fit_ml_from_a_csv_file_prints_the_summary(cli, tmp_path: Path, pig: pd.DataFrame) -> None:
    path = tmp_path / "pig.csv"
    pig.to_csv(path, index=False)
    r = cli("fit", str(path), "--formula", PIG, "--method", "ml")
    assert r.returncode == 0, r.stderr
    assert "fit by maximum likelihood" in r.stdout and "Fixed effects:" in r.stdout


def test_fit_reads_parquet(cli, tmp_path: Path, pig: pd.DataFrame) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "pig.parquet"
    pig.to_parquet(path)
    r = cli("fit", str(path), "--formula", PIG, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nobs"] == 432


def test_demo_runs_the_pig_example_both_paths(cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = cli("demo", "--out", str(out), "--draws", "300", "--tune", "300")
    assert r.returncode == 0, r.stderr
    assert "REML criterion at convergence: 2033.8" in r.stdout
    assert "max |factor x mean residual - BLUP|" in r.stdout
    assert "REML estimates against the posterior" in r.stdout and "BLUPs against the posterior" in r.stdout
    assert "MCMC diagnostics" in r.stdout and "REML as a Bayesian limit" in r.stdout
    # the REML column of the side-by-side table is lme4's estimate
    row = next(line for line in r.stdout.splitlines() if line.startswith("variance  Residual"))
    assert float(row.split()[2]) == pytest.approx(4.395, abs=5e-4)
    pngs = {p.name for p in out.glob("*.png")}
    assert {"shrinkage.png", "caterpillar.png", "residuals.png", "qq.png", "trace.png", "ppc.png", "limit.png"} <= pngs
    for p in pngs:
        assert_drawn(out / p)
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == len(pngs) and "REML vs posterior" in report


def test_compare_json_and_html(cli, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    r = cli(
        "compare",
        "sleepstudy",
        "--formula",
        "Reaction ~ Days + (Days | Subject)",
        "--draws",
        "200",
        "--tune",
        "200",
        "--seed",
        "2",
        "--html",
        str(html),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    kinds = [row["kind"] for row in d["compare"]]
    assert kinds.count("fixef") == 2 and "correlation" in kinds
    assert len(d["ranef"]) == 36 and d["files"] == [str(html)] and html.stat().st_size > 50_000
    reml = {row["name"]: row["estimate"] for row in d["compare"]}
    assert reml["Days"] == pytest.approx(10.46729, abs=1e-4)
    r = cli("compare", "sleepstudy", "--formula", "Reaction ~ Days + (Days | Subject)", "--limit", "1e3,x")
    assert r.returncode == 2 and "--limit" in r.stderr


def _write(tmp_path: Path, name: str, df: pd.DataFrame) -> str:
    p = tmp_path / name
    df.to_csv(p, index=False)
    return str(p)


@pytest.mark.parametrize(
    "case, formula, extra, message",
    [
        ("missing_file", PIG, [], "not found"),
        ("pig", "weight ~ nope + (1 | id_num)", [], "column 'nope' not found"),
        ("text_response", "name ~ num_weeks + (1 | id_num)", [], "not numeric"),
        ("one_level", "weight ~ num_weeks + (1 | one)", [], "has 1 level"),
        ("header_only", PIG, [], "no rows|empty"),
        ("all_missing", PIG, [], "missing"),
        ("infinite", PIG, [], "infinite"),
        ("pig", "weight ~ num_weeks + (1 | id_num", [], "unbalanced"),
        ("pig", "weight num_weeks + (1 | id_num)", [], "exactly one '~'"),
        ("pig", PIG, ["--method", "GLS"], "unknown method"),
        ("pig", "weight ~ num_weeks + (1 | row)", [], "levels for 432 observations"),
        (
            "pig",
            "weight ~ num_weeks + (1 + num_weeks + I(num_weeks**2) | id_num)",
            ["--first-weeks"],
            "144 random effects for 96 observations",
        ),
        ("pig", "weight ~ I(__import__('os').system('echo pwned')) + (1 | id_num)", [], "not allowed"),
        ("empty_file", PIG, [], "empty"),
        ("directory", PIG, [], "directory"),
    ],
)
def test_bad_input_gets_one_line_and_status_2(tmp_path: Path, pig: pd.DataFrame, case, formula, extra, message):
    df = pig.assign(name="p" + pig.id_num.astype(str), one="x", row=np.arange(len(pig)))
    if "--first-weeks" in extra:
        df = df[df.num_weeks <= 2]
        extra = []
    if case == "missing_file":
        path = str(tmp_path / "nope.csv")
    elif case == "header_only":
        path = _write(tmp_path, "h.csv", df.iloc[:0])
    elif case == "all_missing":
        path = _write(tmp_path, "m.csv", df.assign(weight=np.nan))
    elif case == "infinite":
        path = _write(tmp_path, "i.csv", df.assign(num_weeks=df.num_weeks.where(df.index != 3, np.inf)))
    elif case == "empty_file":
        path = str(tmp_path / "e.csv")
        Path(path).write_text("")
    elif case == "directory":
        path = str(tmp_path)
    else:
        path = _write(tmp_path, "d.csv", df)
    r = run("fit", path, "--formula", formula, *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "pwned" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayeslmm: error:")
    import re

    assert re.search(message, lines[0]), lines[0]


def test_usage_errors_are_one_line_with_status_2() -> None:
    r = run("fit", "pig_weights")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = run("frobnicate")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
