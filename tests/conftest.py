"""Shared fixtures: bundled data and small random designs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayeslmm


@pytest.fixture(scope="session")
def pig() -> pd.DataFrame:
    return bayeslmm.datasets.load("pig_weights")


@pytest.fixture(scope="session")
def sleep() -> pd.DataFrame:
    return bayeslmm.datasets.load("sleepstudy")


def random_frame(seed: int, n: int = 120) -> pd.DataFrame:
    """A small unbalanced design with crossed and nested groupings and a categorical predictor."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 9, n)
    b = rng.integers(0, 5, n)
    c = rng.integers(0, 3, n)
    x = rng.normal(size=n)
    f = rng.choice(["lo", "mid", "hi"], n)
    y = (2.0 + 0.7 * x + (f == "hi") * 0.5 + rng.normal(size=9)[a] * 1.3 + rng.normal(size=5)[b] * 0.8
         + 0.4 * rng.normal(size=9)[a] * x + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "f": f, "a": a, "b": b, "c": c})


@pytest.fixture
def frame() -> pd.DataFrame:
    return random_frame(0)
