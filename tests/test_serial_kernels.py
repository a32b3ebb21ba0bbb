"""The serial engine's kernels: the process-then-Woodbury criterion against the full Kalman filter."""

from __future__ import annotations

import time

import numpy as np
import pytest

import bayeslmm
from bayeslmm.freq import GroupedEngine
from bayeslmm.linalg._kalman import ProcessGram, SerialLayout, kalman_whiten

from .test_serial import irregular_frame, unpack


def _old_layout(codes: np.ndarray, t: np.ndarray, ngroups: int, by_order: bool) -> tuple[list, list]:
    """The step-by-step construction the layout had before (one pass over the rows per step)."""
    n = codes.shape[0]
    sizes = np.bincount(codes, minlength=ngroups)
    group_order = np.argsort(-sizes, kind="stable")
    rank = np.empty(ngroups, dtype=np.int64)
    rank[group_order] = np.arange(ngroups)
    srt = np.lexsort((np.arange(n), t, rank[codes]))
    sorted_sizes = sizes[group_order]
    starts = np.cumsum(sorted_sizes) - sorted_sizes
    pos = np.arange(n) - np.repeat(starts, sorted_sizes)
    rows, gaps, prev = [], [], None
    for k in range(int(sorted_sizes.max())):
        r = srt[pos == k]
        rows.append(r)
        gaps.append(np.zeros(r.size) if prev is None else (np.ones(r.size) if by_order else t[r] - t[prev[: r.size]]))
        prev = r
    return rows, gaps


@pytest.mark.parametrize("by_order", [False, True])
def test_layout_is_the_step_by_step_one(by_order: bool) -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 12, 200)
    codes[codes == 5] = 6  # a level without rows
    t = np.round(rng.uniform(0, 10, 200), 1)  # ties within groups
    lay = SerialLayout.build(codes, t, 12, by_order)
    rows, gaps = _old_layout(codes, t, 12, by_order)
    assert len(lay.rows) == len(rows)
    for a, b, ga, gb in zip(lay.rows, rows, lay.gaps, gaps):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ga, gb)
    np.testing.assert_array_equal(lay.perm, np.concatenate(rows))
    assert lay.starts.size == lay.group_order.size == 11


def test_layout_of_one_long_series_is_fast() -> None:
    n = 200_000
    t0 = time.perf_counter()
    lay = SerialLayout.build(np.zeros(n, dtype=np.int64), np.arange(n, dtype=float)[::-1], 1, True)
    assert time.perf_counter() - t0 < 2.0
    assert len(lay.rows) == n and lay.rows[0][0] == n - 1


def _dense_parts(obj: GroupedEngine, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """``log|V_rel|`` and ``[X_w y_w]'V_rel^-1 [X_w y_w]`` from the full (original-coordinates) filter."""
    fr = obj.filter(theta, working=True)
    return fr.logdet, fr.white.T @ fr.white


@pytest.mark.parametrize("residual", ["ou(t | id)", "ar1(t | id)"])
@pytest.mark.parametrize("formula", ["y ~ t", "y ~ t + x + (1 | id)", "y ~ t + (1 + t | id)", "y ~ x + (0 + t | id)"])
def test_process_then_woodbury_equals_the_full_filter(residual: str, formula: str) -> None:
    spec = bayeslmm.model_spec(formula, irregular_frame(12), residual=residual)
    obj = GroupedEngine(spec, reml=True)
    rng = np.random.default_rng(4)
    lo, _ = obj.bounds()
    for _ in range(3):
        th = np.where(np.isfinite(lo), 0.0, -1.0) + 2 * rng.uniform(0.1, 0.9, lo.size)  # diagonal > 0
        if residual.startswith("ou"):
            th[obj.nre :] = rng.uniform(0.1, 2.0), rng.uniform(0.0, 0.9)
        else:
            th[obj.nre] = rng.uniform(-0.9, 0.95)
        g = obj.gram(th)
        logdet, C = _dense_parts(obj, th)
        assert g.logdet == pytest.approx(logdet, rel=1e-12, abs=1e-10)
        np.testing.assert_allclose(g.C, C, rtol=1e-10, atol=1e-10 * np.abs(C).max())
        if obj.nre:
            a, P = g.blup()
            fr = obj.filter(th, working=True)
            np.testing.assert_allclose(a, fr.a_b, rtol=1e-8, atol=1e-10 * np.abs(fr.a_b).max())
            np.testing.assert_allclose(P, fr.P_b, rtol=1e-8, atol=1e-12)


def test_closed_form_ar1_equals_the_scalar_filter() -> None:
    """AR(1) whitened in closed form and by the step-by-step scalar filter (nugget 0) agree."""
    df = irregular_frame(13)
    spec = bayeslmm.model_spec("y ~ t + (1 + t | id)", df, residual="ar1(t | id)")
    obj = GroupedEngine(spec, reml=False)
    steps = ProcessGram(obj.layout, obj.Y, obj.Zw, closed_form=False)
    T = np.array([[0.8, 0.0], [-0.3, 0.4]])
    for phi in (-0.7, 0.0, 0.5, 0.99):
        a, b = obj._gram(T, phi, 1.0, 0.0), steps(T, phi, 1.0, 0.0)
        assert a.logdet == pytest.approx(b.logdet, rel=1e-12)
        np.testing.assert_allclose(a.C, b.C, rtol=1e-10, atol=1e-12)


def test_a_singular_process_gives_an_infinite_criterion() -> None:
    df = irregular_frame(14)  # has repeated times within a subject
    spec = bayeslmm.model_spec("y ~ t", df, residual="ou(t | id)")
    obj = GroupedEngine(spec, reml=True)
    assert obj(np.array([0.0, 0.0])) == np.inf  # rho = 1 and no nugget: two equal times, V singular
    assert np.isfinite(obj(np.array([0.0, 0.1])))


def test_kalman_whiten_keeps_its_interface() -> None:
    """``kalman_whiten`` on ``[X y]`` as before: the whitened columns in row order."""
    df = irregular_frame(15)
    spec = bayeslmm.model_spec("y ~ t + (1 | id)", df, residual="ou(t | id)")
    obj = GroupedEngine(spec, reml=True)
    th = np.array([0.7, 1.0, 0.3])
    _, D, rho, var_w, kappa = unpack(obj, th)
    fr = kalman_whiten(obj.layout, np.c_[spec.X, spec.y], obj.Z, D, rho, var_w, kappa)
    fo = obj.filter(th, working=False)
    np.testing.assert_allclose(fr.white, fo.white, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fr.a_b, fo.a_b, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("residual", ["ou(t | id)", "ar1(t | id)"])
def test_large_problem_paths_equal_the_small_problem_ones(residual: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group sums column pair by column pair and the batched Woodbury factors (used for many rows and groups)."""
    import bayeslmm.linalg._kalman as kalman

    spec = bayeslmm.model_spec("y ~ t + x + (1 + t | id)", irregular_frame(16), residual=residual)
    obj = GroupedEngine(spec, reml=True)
    th = np.r_[0.9, -0.2, 0.5, (0.8, 0.3) if residual.startswith("ou") else (0.6,)]
    small = obj.gram(th)
    monkeypatch.setattr(kalman, "_SMALL_GRAM", 0)
    monkeypatch.setattr(kalman, "_SMALL_STACK", 0)
    big = obj.gram(th)
    assert big.logdet == pytest.approx(small.logdet, rel=1e-13)
    np.testing.assert_allclose(big.C, small.C, rtol=1e-12, atol=1e-12 * np.abs(small.C).max())
    np.testing.assert_allclose(big.blup()[0], small.blup()[0], rtol=1e-10, atol=1e-12)
