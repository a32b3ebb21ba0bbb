"""Plots of a fit and its posterior side by side, and frequentist diagnostics.

Plain matplotlib: ArviZ (``arviz_plots``) draws posterior-only plots (traces, forests,
posterior predictive checks) and has none of these, which set the fit's estimates, BLUPs
and residuals against the data or the posterior. Each function builds a
:class:`matplotlib.figure.Figure` without pyplot (no global state, no ``plt.show``), and
returns it: ``fig.savefig(path)`` writes it, a notebook displays it.

* :func:`plot_shrinkage` -- the raw group mean residual, the BLUP and the posterior mean of a
  random intercept, with the closed-form shrinkage factor;
* :func:`plot_limit` -- the posterior mode of each variance component as ``beta_prior_var``
  grows, against REML (:func:`bayeslmm.bayes.reml_limit`);
* :func:`plot_residuals`, :func:`plot_qq`, :func:`plot_caterpillar` -- scaled residuals against
  fitted values, normal QQ plots of residuals and BLUPs, sorted BLUPs with conditional intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import DataError, OptionError
from ._table import _check_fit, _draws, compare_ranef

BLUE, ORANGE, GREEN, GREY, RED = "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f", "#d62728"


def _figure(nplots: int, ncols: int, width: float = 4.2, height: float = 3.4) -> tuple[Any, list[Any]]:
    """A constrained-layout Figure with ``nplots`` axes on a grid of ``ncols`` columns (spares hidden)."""
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, nplots))
    nrows = -(-nplots // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[nplots:]:
        ax.set_visible(False)
    return fig, list(axes[:nplots])


def _blom(n: int) -> np.ndarray:
    """Normal quantiles at Blom's plotting positions ``(i - 3/8) / (n + 1/4)``, ``(n,)``."""
    import scipy.stats

    return scipy.stats.norm.ppf((np.arange(1, n + 1) - 0.375) / (n + 0.25))


def _vc_title(grp: Any, var1: Any, var2: Any) -> str:
    if grp == "Residual":
        return "residual variance"
    if not isinstance(var1, str):
        return str(grp)
    return f"var {var1} | {grp}" if not isinstance(var2, str) else f"cov {var1}, {var2} | {grp}"


# ------------------------------------------------------------------ shrinkage
def plot_shrinkage(fit: Any, idata: Any = None) -> Any:
    """Shrinkage of a random intercept: raw group means, BLUPs and posterior means.

    Left: BLUP ``b_hat_i`` (and, with ``idata``, the posterior mean of ``b_i``) against the raw
    group mean residual ``mean_j(y_ij - x_ij'beta_hat)``, with the identity (no shrinkage) and
    lines of slope ``factor_i = n_i s_u^2 / (s^2 + n_i s_u^2)`` (one per group size), on which
    the BLUPs lie. Right: the factor as a function of the group size ``n``, with the groups'
    sizes marked and, with ``idata``, the posterior mean and 94% equal-tailed band of the factor
    computed draw by draw from the variance components.

    Parameters
    ----------
    fit
        A fit of a model whose only random-effect term is an intercept ``(1 | g)``, independent errors.
    idata
        Optional InferenceData of ``bayeslmm.bayes.sample(fit.spec, ...)``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_fit(fit)
    try:
        fit.shrinkage()
    except DataError as e:
        raise DataError(f"{e}; plot_caterpillar shows the BLUPs of any model") from None
    tab = compare_ranef(fit, idata).table
    t = fit.spec.terms[0]
    fig, (ax, ax2) = _figure(2, 2, width=5.0, height=4.2)
    x = tab.mean_resid.to_numpy()
    ax.axhline(0, color=GREY, lw=0.6)
    ax.axvline(0, color=GREY, lw=0.6)
    lim = np.array([x.min(), x.max()]) * 1.08
    ax.plot(lim, lim, color=GREY, ls="--", lw=1, label="no shrinkage (slope 1)")
    factors = np.unique(np.round(tab.factor.to_numpy(), 12))
    shown = factors if factors.size <= 4 else factors[[0, -1]]
    for f in shown:
        ax.plot(lim, f * lim, color=RED, lw=1, alpha=0.8, label=f"slope = factor {f:.3f}")
    ax.scatter(x, tab.blup, s=22, color=BLUE, zorder=3, label="BLUP")
    if "mean" in tab:
        ax.scatter(x, tab["mean"], s=22, marker="x", color=ORANGE, zorder=3, label="posterior mean")
    ax.set_xlabel("raw group mean of y - X beta_hat")
    ax.set_ylabel("random intercept")
    ax.set_title(f"shrinkage of (1 | {t.group})")
    ax.legend(fontsize=8)

    vc = fit.varcorr()
    s_u2, s2 = float(vc.vcov.iloc[0]), float(vc.vcov.iloc[-1])
    n_i = tab.n.to_numpy()
    grid = np.linspace(1, max(2.0, 1.5 * n_i.max()), 200)
    ax2.plot(grid, grid * s_u2 / (s2 + grid * s_u2), color=BLUE, lw=1.5, label=f"{fit.method} variances")
    if idata is not None:
        from ._table import check_posterior

        draws = _draws(check_posterior(fit, idata), "varcorr")  # (S, 2): s_u^2, s^2
        fd = grid * draws[:, :1] / (draws[:, 1:] + grid * draws[:, :1])  # (S, len(grid))
        lo, hi = np.quantile(fd, [0.03, 0.97], axis=0)
        ax2.fill_between(grid, lo, hi, color=ORANGE, alpha=0.25, lw=0, label="posterior 94% band")
        ax2.plot(grid, fd.mean(axis=0), color=ORANGE, ls="--", lw=1.2, label="posterior mean")
    sizes, counts = np.unique(n_i, return_counts=True)
    ax2.scatter(
        sizes, sizes * s_u2 / (s2 + sizes * s_u2), s=12 + 6 * np.sqrt(counts), color=RED, zorder=3, label="group sizes"
    )
    ax2.set_ylim(0, 1.02)
    ax2.set_xlabel("group size n")
    ax2.set_ylabel("factor  n s_u^2 / (s^2 + n s_u^2)")
    ax2.set_title("shrinkage factor")
    ax2.legend(fontsize=8, loc="lower right")
    return fig


# ------------------------------------------------------------------ REML limit
def plot_limit(path: Any) -> Any:
    """Posterior mode of each variance component against ``beta_prior_var``, with REML as asymptote.

    One panel per component of ``path.reml`` (variances, covariances, residual variance):
    the mode of ``p(psi | y, beta_prior_var)`` (flat prior on ``psi``, beta integrated out)
    for each ``beta_prior_var`` on a log axis, the REML estimate as a dashed line; a last panel
    shows the largest relative distance to REML (log-log).

    Parameters
    ----------
    path
        A :class:`bayeslmm.bayes.LimitPath` from ``bayeslmm.bayes.reml_limit(fit, beta_prior_vars)``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not all(hasattr(path, a) for a in ("reml", "modes", "beta_prior_vars", "max_rel_diff")):
        raise OptionError("plot_limit takes the LimitPath returned by bayeslmm.bayes.reml_limit(fit, beta_prior_vars)")
    t = np.asarray(path.beta_prior_vars, dtype=float)
    reml = path.reml
    fig, axes = _figure(len(reml) + 1, 3)
    for k, (ax, r) in enumerate(zip(axes, reml.itertuples(index=False))):
        modes = [float(m.vcov.iloc[k]) for m in path.modes]
        ax.axhline(float(r.vcov), color=RED, ls="--", lw=1.2, label=f"REML {float(r.vcov):.4g}")
        ax.plot(t, modes, "o-", color=BLUE, lw=1.2, ms=4, label="posterior mode")
        ax.set_xscale("log")
        vals = np.array([*modes, float(r.vcov)])
        if np.all(vals > 0) and vals.max() > 20 * vals.min():  # modes far from REML at small beta_prior_var
            ax.set_yscale("log")
        else:  # no offset notation; a range of at least 2% of the REML value
            half = max(np.ptp(vals) * 0.55, 0.01 * abs(float(r.vcov)), 1e-12)
            mid = 0.5 * (vals.max() + vals.min())
            ax.set_ylim(mid - half, mid + half)
            ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel("beta_prior_var")
        ax.set_title(_vc_title(r.grp, r.var1, r.var2), fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[-1]
    ax.plot(t, np.maximum(np.asarray(path.max_rel_diff, dtype=float), 1e-16), "o-", color=GREEN, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("beta_prior_var")
    ax.set_title("largest relative distance to REML", fontsize=10)
    fig.suptitle("posterior mode (flat prior, beta integrated out) -> REML as beta_prior_var grows")
    return fig


# ------------------------------------------------------------------ diagnostics
def plot_residuals(fit: Any) -> Any:
    """Scaled residuals ``(y - X beta_hat - Z b_hat) / sigma`` against the fitted values.

    With the reference lines 0 and +-2 and a running median (20 bins of fitted values).
    For serial-process fits the residuals are the normalized ones (standardised innovations,
    see ``fit.residuals(scaled=True)``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_fit(fit)
    x, r = np.asarray(fit.fitted, dtype=float), np.asarray(fit.residuals(scaled=True), dtype=float)
    fig, (ax,) = _figure(1, 1, width=6.0, height=4.2)
    ax.axhline(0, color=GREY, lw=1)
    for s in (-2, 2):
        ax.axhline(s, color=GREY, ls="--", lw=0.8)
    ax.scatter(x, r, s=10, color=BLUE, alpha=0.6, label="residual")
    edges = np.quantile(x, np.linspace(0, 1, min(21, x.size // 5 + 2)))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    keep = [b for b in range(edges.size - 1) if np.any(idx == b)]
    ax.plot(
        [np.median(x[idx == b]) for b in keep],
        [np.median(r[idx == b]) for b in keep],
        color=ORANGE,
        lw=2,
        label="running median",
    )
    ax.set_xlabel("fitted value")
    ax.set_ylabel("normalized residual" if fit.spec.residual is not None else "scaled residual")
    ax.set_title(f"residuals against fitted values ({fit.spec.formula})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _qq(ax: Any, v: np.ndarray, title: str) -> None:
    """Sorted ``v`` against normal quantiles, with the line through the quartiles (R's ``qqline``)."""
    v = np.sort(np.asarray(v, dtype=float))
    q = _blom(v.size)
    ax.scatter(q, v, s=12, color=BLUE, zorder=3)
    q1, q3 = np.quantile(v, [0.25, 0.75])
    z1, z3 = -0.6744897501960817, 0.6744897501960817
    slope = (q3 - q1) / (z3 - z1)
    ax.plot(q[[0, -1]], q1 + slope * (q[[0, -1]] - z1), color=RED, lw=1.2)
    ax.set_xlabel("normal quantile")
    ax.set_title(title, fontsize=10)


def plot_qq(fit: Any) -> Any:
    """Normal QQ plots of the scaled residuals and of the BLUPs of each term and coefficient.

    Returns
    -------
    matplotlib.figure.Figure
        One panel for the residuals, then one per random-effect coefficient.
    """
    _check_fit(fit)
    blups = fit.ranef_dict()
    panels = [(fit.residuals(scaled=True), "scaled residuals")]
    panels += [(df[c].to_numpy(), f"BLUPs {c} | {name}") for name, df in blups.items() for c in df.columns]
    fig, axes = _figure(len(panels), 3)
    for ax, (v, title) in zip(axes, panels):
        _qq(ax, v, title)
    axes[0].set_ylabel("sample quantile")
    return fig


def plot_caterpillar(fit: Any, level: float = 0.95) -> Any:
    """BLUPs sorted within each term and coefficient, with ``+- z condsd`` conditional intervals.

    ``condsd`` is the conditional sd of ``b`` given ``y`` at ``(beta_hat, theta_hat)``
    (``fit.ranef()``); ``z`` the normal quantile of ``level`` (1.96 for 0.95). Level names
    label the rows of terms with at most 60 levels.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per random-effect coefficient.
    """
    import scipy.stats

    _check_fit(fit)
    if not 0 < level < 1:
        raise OptionError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    z = float(scipy.stats.norm.ppf(0.5 + level / 2))
    re = fit.ranef(cond_var=True)
    keys = list(dict.fromkeys(zip(re.grpvar, re.term)))
    nmax = max(int(((re.grpvar == g) & (re.term == c)).sum()) for g, c in keys)
    fig, axes = _figure(len(keys), min(len(keys), 3), width=4.2, height=min(12.0, max(3.4, 0.16 * nmax + 1.2)))
    for ax, (g, c) in zip(axes, keys):
        d = re[(re.grpvar == g) & (re.term == c)].sort_values("condval")
        pos = np.arange(len(d))
        ax.axvline(0, color=GREY, lw=1)
        ax.errorbar(d.condval, pos, xerr=z * d.condsd.to_numpy(), fmt="none", ecolor=ORANGE, elinewidth=1.2)
        ax.scatter(d.condval, pos, s=14, color=BLUE, zorder=3)
        if len(d) <= 60:
            ax.set_yticks(pos, [str(v) for v in d.grp], fontsize=7)
        else:
            ax.set_yticks([])
        ax.set_ylim(-1, len(d))
        ax.set_xlabel(f"BLUP +- {z:.2f} cond sd")
        ax.set_title(f"{c} | {g}", fontsize=10)
    return fig
