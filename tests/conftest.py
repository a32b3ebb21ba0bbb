"""Shared fixtures: bundled data, small random designs, the reference models (fitted and sampled once per
session) and the command line run in this process."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import bayeslmm

DATA = Path(__file__).resolve().parent / "data"
PIG = "weight ~ num_weeks + (1 | id_num)"
SLEEP = "Reaction ~ Days + (Days | Subject)"


class ModelCache:
    """Reference models fitted (or sampled) once per test session, as MixedModels.jl's ``test/modelcache.jl``.

    Data are named: a bundled dataset (``"pig_weights"``) or a file of ``tests/data`` (``"penicillin.csv"``).
    A fit is keyed by ``(formula, data, method, residual)``, the formula string as written (so that a fit
    reports the formula it was given); a posterior by the same and the keyword arguments of
    :func:`bayeslmm.bayes.sample`. Everything returned is shared: a test must not modify it.
    """

    def __init__(self) -> None:
        self._data: dict[str, pd.DataFrame] = {}
        self._fits: dict[tuple, Any] = {}
        self._posteriors: dict[tuple, Any] = {}

    def data(self, name: str) -> pd.DataFrame:
        if name not in self._data:
            self._data[name] = pd.read_csv(DATA / name) if name.endswith(".csv") else bayeslmm.datasets.load(name)
        return self._data[name]

    def fit(self, formula: str, data: str, method: str = "REML", residual: str | None = None) -> Any:
        """``bayeslmm.lmm`` for a formula with random-effect terms or a residual process, ``bayeslmm.lm`` otherwise."""
        key = (formula, data, method.upper(), residual)
        if key not in self._fits:
            if "|" in formula or residual is not None:
                self._fits[key] = bayeslmm.lmm(formula, self.data(data), method=method, residual=residual)
            else:
                self._fits[key] = bayeslmm.lm(formula, self.data(data), method=method)
        return self._fits[key]

    def sample(self, formula: str, data: str, residual: str | None = None, **kwargs: Any) -> Any:
        """``bayeslmm.bayes.sample`` of the model's spec (the spec of its REML fit)."""
        key = (formula, data, residual, tuple(sorted(kwargs.items())))
        if key not in self._posteriors:
            from bayeslmm.bayes import sample

            spec = self.fit(formula, data, residual=residual).spec
            self._posteriors[key] = sample(spec, **kwargs)
        return self._posteriors[key]


@pytest.fixture(scope="session")
def models() -> ModelCache:
    return ModelCache()


@pytest.fixture(scope="session")
def pig(models: ModelCache) -> pd.DataFrame:
    return models.data("pig_weights")


@pytest.fixture(scope="session")
def sleep(models: ModelCache) -> pd.DataFrame:
    return models.data("sleepstudy")


@pytest.fixture(scope="session")
def pig_fit(models: ModelCache) -> bayeslmm.LMMFit:
    """The pig-weights random-intercept model by REML (lme4's published example)."""
    return models.fit(PIG, "pig_weights")


@pytest.fixture(scope="session")
def sleep_fit(models: ModelCache) -> bayeslmm.LMMFit:
    """sleepstudy with correlated random intercepts and slopes by REML."""
    return models.fit(SLEEP, "sleepstudy")


def random_frame(seed: int, n: int = 120) -> pd.DataFrame:
    """A small unbalanced design with crossed and nested groupings and a categorical predictor."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 9, n)
    b = rng.integers(0, 5, n)
    c = rng.integers(0, 3, n)
    x = rng.normal(size=n)
    f = rng.choice(["lo", "mid", "hi"], n)
    y = (
        2.0
        + 0.7 * x
        + (f == "hi") * 0.5
        + rng.normal(size=9)[a] * 1.3
        + rng.normal(size=5)[b] * 0.8
        + 0.4 * rng.normal(size=9)[a] * x
        + rng.normal(size=n)
    )
    return pd.DataFrame({"y": y, "x": x, "f": f, "a": a, "b": b, "c": c})


@pytest.fixture
def frame() -> pd.DataFrame:
    return random_frame(0)


def assert_drawn(path: Path | str, what: str = "") -> None:
    """A figure file holds a drawing: over 200 pixels each way, and between 0.5% and 60% of them inked
    (neither white nor near white): not a blank canvas, nor one flooded with colour."""
    import matplotlib.image

    img = matplotlib.image.imread(path)[..., :3]
    inked = float((img.min(axis=2) < 0.8).mean())
    assert min(img.shape[:2]) > 200 and 0.005 < inked < 0.6, f"{what or path} looks empty ({inked:.3%} drawn)"


@dataclasses.dataclass
class CliResult:
    """What a run of the command line returned, as the fields of ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cli(*args)``: the ``bayeslmm`` command run in this process (:func:`bayeslmm.cli.main`), its output captured.

    For tests of what a command computes and prints, where the process boundary is not what is tested (the
    exit status of the process, Ctrl-C, the import of PyMC, a closed pipe: those run ``bayeslmm`` in a
    subprocess). A usage error ends argparse with ``SystemExit``: its code is the return code.
    """
    from bayeslmm.cli import main

    monkeypatch.setenv("MPLBACKEND", "Agg")  # what the command sets for itself, undone after the test

    def run(*args: Any) -> CliResult:
        capfd.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return run
