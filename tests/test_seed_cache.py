"""The same seed gives the same posterior whether the compile caches are empty or warm.

Before the fix, every run on a cold PyTensor/Numba cache was identical to every other cold run
and every warm run to every other warm run, but cold and warm differed (sleepstudy: Days
variance 48.14 against 44.13): PyTensor compiles Numba code with fast-math, and LLVM rounded the
log density differently when it compiled the model's operations together (cold) than when it
linked them from the cache (warm); one bit, and NUTS takes another path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PIG = "weight ~ num_weeks + (1 | id_num)"


def _cmd() -> list[str]:
    exe = Path(sys.executable).parent / "bayeslmm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bayeslmm"]


def _sample(cache: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={cache}", "NUMBA_CACHE_DIR": str(cache / "numba-own")}
    r = subprocess.run(
        [*_cmd(), "sample", "pig_weights", "-f", PIG, "--draws", "50", "--tune", "50", "--seed", "3", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
def test_same_seed_same_posterior_on_a_cold_and_a_warm_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = _sample(cache)  # compiles everything into the empty cache
    assert any((cache / "numba").iterdir())
    warm = _sample(cache)  # loads it
    keys = ("mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "r_hat")
    assert [[row[k] for k in keys] for row in cold["params"]] == [[row[k] for k in keys] for row in warm["params"]]
    other = _sample(cache, "--seed", "4")  # and the seed matters
    assert [row["mean"] for row in other["params"]] != [row["mean"] for row in cold["params"]]


def test_every_stream_derives_from_the_seed() -> None:
    from bayeslmm.bayes._sample import _seed_of, _streams

    a, b = _streams(3), _streams(3)
    assert a == b and len(set(a.values())) == len(a)  # reproducible, and independent streams
    assert _streams(4) != a and set(_streams(None).values()) == {None}
    assert _seed_of(None, 5) == 5 and _seed_of(5, None) == 5 and _seed_of(np.int64(5), None) == 5
    g1, g2 = np.random.default_rng(1), np.random.default_rng(1)
    assert _seed_of(g1, None) == _seed_of(None, g2)
    from bayeslmm import OptionError

    with pytest.raises(OptionError, match="not both"):
        _seed_of(1, 2)
    with pytest.raises(OptionError, match="non-negative integer"):
        _seed_of(-1, None)


def test_random_seed_is_an_alias_of_seed_in_sample() -> None:
    import inspect

    from bayeslmm.bayes import sample

    params = inspect.signature(sample).parameters
    assert params["random_seed"].default is None and params["seed"].default is None
    assert params["allow_partial"].default is False


def test_sampling_compiles_without_fast_math() -> None:
    pytensor = pytest.importorskip("pytensor")
    from bayeslmm.bayes._sample import _exact_float

    before = os.environ.get("PYTENSOR_FLAGS")
    with _exact_float():
        assert pytensor.config.numba__fastmath is False
        assert "numba__fastmath=False" in os.environ["PYTENSOR_FLAGS"]
    assert os.environ.get("PYTENSOR_FLAGS") == before
