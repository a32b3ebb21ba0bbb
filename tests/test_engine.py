"""The blocked engine against the dense N x N formulas, and its kernels."""

from __future__ import annotations

import numpy as np
import pytest

import bayeslmm
from bayeslmm.freq import BlockedEngine
from bayeslmm.linalg import CrossProducts, chol_batched, solve_lower_batched, solve_upper_batched

from .conftest import random_frame
from .dense import dense_fit

STRUCTURES = [
    "y ~ x + (1 | a)",
    "y ~ x + f + (1 + x | a)",
    "y ~ x + (1 | a) + (1 | b)",
    "y ~ x * f + (1 | a/b)",
    "y ~ x + (x || a) + (1 | b) + (1 | c)",
    "y ~ 0 + x + (1 + x | a) + (1 | b:c)",
]


@pytest.mark.parametrize("formula", STRUCTURES)
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("reml", [True, False])
def test_blocked_criterion_equals_dense_formula(formula: str, seed: int, reml: bool) -> None:
    spec = bayeslmm.model_spec(formula, random_frame(seed))
    obj = BlockedEngine(CrossProducts.from_spec(spec), reml=reml, spec=spec)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        theta = rng.uniform(0.05, 2.0, spec.ntheta) * np.where(np.isfinite(spec.theta_lower()), 1, rng.choice([-1, 1]))
        assert obj(theta) == pytest.approx(dense_fit(spec, theta, reml)["criterion"], abs=1e-8, rel=1e-11)


@pytest.mark.parametrize("formula", STRUCTURES)
def test_fit_quantities_equal_dense_formulas_at_optimum(formula: str) -> None:
    fit = bayeslmm.lmm(formula, random_frame(3))
    ref = dense_fit(fit.spec, fit.theta, reml=True)
    assert fit.criterion == pytest.approx(ref["criterion"], abs=1e-8)
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["beta"], rtol=1e-9, atol=1e-10)
    assert fit.sigma2 == pytest.approx(ref["sigma2"], rel=1e-10)
    np.testing.assert_allclose(fit.vcov.to_numpy(), ref["vcov"], rtol=1e-8, atol=1e-12)
    b = np.concatenate([blk.reshape(-1) for blk in fit._b])
    np.testing.assert_allclose(b, ref["b"], atol=1e-8 * max(1.0, np.abs(ref["b"]).max()))
    # conditional sds of every random effect against the diagonal of the dense formula
    sds = np.concatenate([np.sqrt(np.diagonal(c, axis1=1, axis2=2)).reshape(-1) for c in fit._condcov])
    np.testing.assert_allclose(sds, np.sqrt(np.clip(np.diag(ref["cond"]), 0, None)), rtol=1e-7, atol=1e-9)


def test_optimum_is_a_stationary_point(frame) -> None:
    fit = bayeslmm.lmm("y ~ x + (1 + x | a) + (1 | b)", frame)
    assert fit.converged and not fit.singular
    # the criterion is not lower at nearby points
    rng = np.random.default_rng(0)
    for _ in range(20):
        th = fit.theta + 1e-3 * rng.normal(size=fit.theta.size)
        th = np.maximum(th, fit.spec.theta_lower())
        assert fit.objective(th) >= fit.criterion - 1e-9


@pytest.mark.parametrize("q", [1, 2, 3, 6])
def test_batched_kernels_match_numpy(q: int) -> None:
    rng = np.random.default_rng(q)
    G = rng.normal(size=(50, q, q))
    A = G @ np.swapaxes(G, 1, 2) + 0.5 * np.eye(q)
    L = chol_batched(A)
    np.testing.assert_allclose(L, np.linalg.cholesky(A), rtol=1e-10, atol=1e-12)
    B = rng.normal(size=(50, q, 4))
    np.testing.assert_allclose(L @ solve_lower_batched(L, B), B, atol=1e-10)
    np.testing.assert_allclose(np.swapaxes(L, 1, 2) @ solve_upper_batched(L, B), B, atol=1e-10)


def test_batched_cholesky_rejects_indefinite() -> None:
    A = np.array([[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(np.linalg.LinAlgError):
        chol_batched(A)


def test_blocks_add_over_row_chunks(frame) -> None:
    """Blocks of disjoint row sets add up (the basis of fitting from sufficient statistics)."""
    spec = bayeslmm.model_spec("y ~ x + (1 + x | a) + (1 | b)", frame)
    full = CrossProducts.from_spec(spec)
    w1 = np.arange(spec.n) < 50
    from dataclasses import replace

    parts = []
    for w in (w1, ~w1):  # the two halves of the rows, every level kept
        terms = tuple(replace(t, Zraw=t.Zraw[w], codes=t.codes[w]) for t in spec.terms)
        half = replace(spec, y=spec.y[w], X=spec.X[w], terms=terms, row_index=spec.row_index[w])
        # one set of working columns for both parts (as the chunks of the sufficient-statistics path)
        parts.append(CrossProducts.from_spec(half, full.basis, full.zbases))
    np.testing.assert_allclose(parts[0].A11 + parts[1].A11, full.A11, atol=1e-12)
    np.testing.assert_allclose(parts[0].B1 + parts[1].B1, full.B1, atol=1e-12)
    np.testing.assert_allclose(parts[0].F + parts[1].F, full.F, atol=1e-10)
    np.testing.assert_allclose((parts[0].C + parts[1].C).toarray(), full.C.toarray(), atol=1e-12)
    np.testing.assert_allclose(parts[0].E + parts[1].E, full.E, atol=1e-10)


def test_refit_with_new_response_matches_fresh_fit(frame) -> None:
    fit = bayeslmm.lmm("y ~ x + (1 | a) + (1 | b)", frame)
    y2 = fit.simulate(1, seed=4)[:, 0]
    frame2 = frame.assign(y=y2)
    a = fit.refit(y2)
    b = bayeslmm.lmm("y ~ x + (1 | a) + (1 | b)", frame2)
    assert a.criterion == pytest.approx(b.criterion, abs=1e-7)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-6)
