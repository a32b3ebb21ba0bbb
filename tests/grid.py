"""Exact posterior moments of a random-intercept model by numerical integration (a test utility).

beta is integrated out analytically (:func:`bayeslmm.bayes.log_marginal`); the two standard
deviations on a fine 2-D grid with HalfNormal priors (midpoint rule on each axis).
"""

from __future__ import annotations

import numpy as np


def grid_posterior_means(
    fit, beta_prior_var: float, prior_sd: float, su_max: float, s_range: tuple[float, float], n: int = 160
) -> dict[str, float]:
    """Posterior means of ``sigma_u^2`` and ``sigma^2`` for a fit with one scalar random-effect term."""
    from bayeslmm.bayes import log_marginal

    su = (np.arange(n) + 0.5) * su_max / n
    lo, hi = s_range
    s = lo + (np.arange(n) + 0.5) * (hi - lo) / n
    logp = np.empty((n, n))
    for i, a in enumerate(su):
        for j, b in enumerate(s):
            logp[i, j] = (
                log_marginal(fit, np.array([a / b, b]), beta_prior_var)
                - 0.5 * (a / prior_sd) ** 2
                - 0.5 * (b / prior_sd) ** 2
            )
    w = np.exp(logp - logp.max())
    w /= w.sum()
    assert w[-1, :].sum() < 1e-6 and w[:, 0].sum() < 1e-6 and w[:, -1].sum() < 1e-6, "grid too small"
    return {"su2": float(np.sum(w * su[:, None] ** 2)), "s2": float(np.sum(w * s[None, :] ** 2))}
