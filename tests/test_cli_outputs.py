"""Output paths are checked before the work, results are printed before files are written, and
non-finite numbers are JSON ``null``.

Every output option (``sample --out FILE``, ``compare --out DIR``, ``compare --html FILE``,
``demo --out DIR``) is given a missing folder, a directory where a file is expected, a file where
a folder is expected and an unwritable folder: one line, status 2, within seconds (nothing is
sampled), and nothing created. ``sample`` runs in this process with the sampler replaced by a
stub (no PyMC compilation), so these tests are fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bayeslmm import cli

PIG = "weight ~ num_weeks + (1 | id_num)"


def run(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str, float]:
    t = time.perf_counter()
    code = cli.main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err, time.perf_counter() - t


@pytest.fixture
def no_sampling(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """``bayeslmm.bayes.sample`` replaced by a stub: one chain of 50 draws (so r_hat is NaN)."""
    import arviz as az

    import bayeslmm.bayes as sample_module

    calls: list[dict] = []

    def fake(spec, **kw):
        calls.append(kw)
        rng = np.random.default_rng(0)
        k = len(spec.terms) + 1
        return az.from_dict(
            {
                "posterior": {"beta": rng.normal(size=(1, 50, spec.p)), "varcorr": rng.random((1, 50, k))},
                "sample_stats": {"diverging": np.zeros((1, 50), bool)},
            }
        )

    monkeypatch.setattr(sample_module, "sample", fake)
    return calls


def _unwritable_dir(tmp_path: Path) -> str | None:
    """A folder in which no file can be created, even by root: /proc on Linux, else a read-only folder."""
    if os.path.isdir("/proc/self") and sys.platform.startswith("linux"):
        return "/proc"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return None
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return str(d)


def _bad_file_paths(tmp_path: Path) -> list[tuple[str, str]]:
    """``(path, words in the message)`` for a file output."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (str(tmp_path / "missing" / "x.out"), "does not exist"),
        (str(tmp_path / "adir"), "is a directory"),
        (str(tmp_path / "adir") + "/", "not a folder"),
        (str(tmp_path / "afile" / "x.out"), "not a directory"),
    ]
    ro = _unwritable_dir(tmp_path)
    if ro is not None:
        cases.append((os.path.join(ro, "x.out"), "cannot write"))
    return cases


def _bad_dir_paths(tmp_path: Path) -> list[tuple[str, str]]:
    """``(path, words in the message)`` for a folder output."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "withdir").mkdir()
    (tmp_path / "withdir" / "report.html").mkdir()
    cases = [
        (str(tmp_path / "afile"), "is a file"),
        (str(tmp_path / "afile" / "sub" / "deeper"), "not a directory"),
        (str(tmp_path / "withdir"), "is a directory"),
    ]
    ro = _unwritable_dir(tmp_path)
    if ro is not None:
        cases.append((os.path.join(ro, "newdir"), "cannot be created"))
    return cases


def _assert_one_line_error(code: int, out: str, err: str, secs: float, option: str, words: str) -> None:
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayeslmm: error: ") and option in lines[0], err
    assert words in lines[0], err
    assert secs < 10


def test_sample_out_is_checked_before_sampling(tmp_path: Path, capfd, no_sampling) -> None:
    for path, words in _bad_file_paths(tmp_path):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        code, out, err, secs = run(capfd, "sample", "pig_weights", "-f", PIG, "--out", path, "--json")
        _assert_one_line_error(code, out, err, secs, "--out", words)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created
    assert no_sampling == []  # never reached the sampler


def test_compare_out_and_html_are_checked_before_sampling(tmp_path: Path, capfd, no_sampling) -> None:
    for path, words in _bad_dir_paths(tmp_path):
        code, out, err, secs = run(capfd, "compare", "pig_weights", "-f", PIG, "--out", path)
        _assert_one_line_error(code, out, err, secs, "--out", words)
    (tmp_path / "h").mkdir()
    for path, words in _bad_file_paths(tmp_path / "h"):
        code, out, err, secs = run(capfd, "compare", "pig_weights", "-f", PIG, "--html", path)
        _assert_one_line_error(code, out, err, secs, "--html", words)
    assert no_sampling == []


def test_demo_out_is_checked_before_anything_runs(tmp_path: Path, capfd, no_sampling) -> None:
    for path, words in _bad_dir_paths(tmp_path):
        code, out, err, secs = run(capfd, "demo", "--out", path, "--draws", "10", "--tune", "10")
        _assert_one_line_error(code, out, err, secs, "--out", words)
    assert no_sampling == []


def test_sample_prints_the_results_then_writes_the_file(tmp_path: Path, capfd, no_sampling) -> None:
    path = tmp_path / "post.nc"
    code, out, err, _ = run(capfd, "sample", "pig_weights", "-f", PIG, "--out", path, "--json", "--seed", "4")
    assert code == 0, err
    d = json.loads(out)
    assert d["out"] == str(path)
    import xarray as xr

    with xr.open_datatree(path) as saved:  # the stub's posterior: one chain of 50 draws
        beta = saved["posterior"]["beta"].values
    np.testing.assert_array_equal(beta, np.random.default_rng(0).normal(size=(1, 50, 2)))
    assert no_sampling[0]["seed"] == 4
    # one chain: r_hat is NaN, written as null (this was an internal error)
    assert [r["r_hat"] for r in d["params"]] == [None] * 4
    code, out, err, _ = run(capfd, "sample", "pig_weights", "-f", PIG, "--out", path)
    assert code == 0, err
    assert "r_hat" in out and out.strip().endswith(f"wrote {path}")


def test_a_failed_write_after_the_results_is_one_line_and_loses_nothing(
    tmp_path: Path, capfd, no_sampling, monkeypatch
) -> None:
    import bayeslmm._paths

    monkeypatch.setattr(bayeslmm._paths, "check_file", lambda *a, **k: None)  # the folder goes away meanwhile
    path = tmp_path / "gone" / "post.nc"
    code, out, err, _ = run(capfd, "sample", "pig_weights", "-f", PIG, "--out", path, "--json")
    assert code == 2
    assert len(json.loads(out)["params"]) == 4  # the results were printed first
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "the results are above, but --out" in lines[0] and "could not be written" in lines[0]


def test_json_writes_nan_and_infinity_as_null() -> None:
    obj = {
        "a": float("nan"),
        "b": np.float64("inf"),
        "c": [np.float32(1.5), -math.inf],
        "d": np.array([1.0, np.nan]),
        "e": np.int64(3),
        "f": np.bool_(True),
        "g": (np.nan, "x"),
        "h": {"i": np.array([[np.inf]])},
    }
    assert json.loads(cli.to_json(obj)) == {
        "a": None,
        "b": None,
        "c": [1.5, None],
        "d": [1.0, None],
        "e": 3,
        "f": True,
        "g": [None, "x"],
        "h": {"i": [[None]]},
    }
    assert "NaN" not in cli.to_json(obj) and "Infinity" not in cli.to_json(obj)


def test_side_by_side_checks_its_paths_first(tmp_path: Path) -> None:
    from bayeslmm import OptionError
    from bayeslmm.compare._report import side_by_side

    (tmp_path / "f").write_text("x")
    with pytest.raises(OptionError, match="out_dir .* is a file"):
        side_by_side(None, None, out_dir=tmp_path / "f")  # before fit or idata are looked at
    with pytest.raises(OptionError, match="html_path .* does not exist"):
        side_by_side(None, None, html_path=tmp_path / "no" / "r.html")
