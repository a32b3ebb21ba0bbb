"""The optimiser's record is decided at the point it returns (after the Newton polish)."""

from __future__ import annotations

import numpy as np

from bayeslmm.freq._optimize import minimize_bobyqa


def test_singular_is_decided_after_the_polish_moves_onto_a_bound() -> None:
    """BOBYQA stopped inside (5 evaluations); the Newton step lands on the bound x1 = 0."""

    def f(x: np.ndarray) -> float:
        return (x[0] - 1) ** 2 + 10 * (x[1] + 0.05) ** 2

    rec = minimize_bobyqa(f, np.array([0.0, 0.0]), np.array([0.5, 0.6]), maxeval=5)
    before = rec.history[np.argmin(rec.history[:, -1])]
    assert before[1] > 1e-2  # the best point BOBYQA saw was off the bound
    assert rec.polished
    np.testing.assert_allclose(rec.x, [1.0, 0.0], atol=1e-6)
    assert rec.singular
    assert any("boundary (singular) fit: theta[1]" in m for m in rec.messages)
    assert rec.gradient.shape == (1,)  # derivatives re-taken over the coordinates still free
    assert abs(rec.gradient[0]) < 1e-3


def test_interior_optimum_is_not_singular() -> None:
    rec = minimize_bobyqa(
        lambda x: (x[0] - 1) ** 2 + 10 * (x[1] - 0.3) ** 2, np.array([0.0, 0.0]), np.array([0.5, 0.6])
    )
    np.testing.assert_allclose(rec.x, [1.0, 0.3], atol=1e-4)
    assert rec.converged and not rec.singular
