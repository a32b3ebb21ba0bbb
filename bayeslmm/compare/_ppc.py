"""Predictive checks: the observed response against replicates from the posterior (or prior) predictive.

``plot_ppc`` and ``plot_prior_predictive`` overlay the density of the observed ``y`` on the
densities of replicated data sets (ArviZ's ``plot_ppc_dist``). ``ppc_group_stats`` compares a
per-group statistic ``T_g(y)`` (the group mean, or the OLS slope on a covariate within the group)
with its predictive distribution ``T_g(y_rep)``: both statistics are linear in ``y``,
``T(y) = y W`` with a fixed ``(n, G)`` weight matrix ``W``, so every replicate costs one
matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._errors import OptionError
from ..spec import ModelSpec
from ._checks import _group

STATS = ("mean", "slope")


def _plot_dist(idata: Any, group: str, num_samples: int, what: str, **kwargs: Any) -> Any:
    import arviz_plots as azp

    _group(
        idata,
        group,
        f"{what} needs it: sample with bayeslmm.bayes.sample("
        f"{'prior=True' if group == 'prior_predictive' else 'posterior_predictive=True'})",
    )
    _group(idata, "observed_data", f"{what} needs the observed response")
    if num_samples < 1:
        raise OptionError("num_samples must be at least 1")
    n_draws = idata[group].sizes["chain"] * idata[group].sizes["draw"]
    return azp.plot_ppc_dist(idata, group=group, num_samples=min(num_samples, n_draws), backend="matplotlib", **kwargs)


def plot_ppc(idata: Any, *, num_samples: int = 50, **kwargs: Any) -> Any:
    """Posterior predictive check: densities of ``num_samples`` replicated responses ``y_rep`` (one per
    posterior draw, group ``posterior_predictive``) with the observed ``y`` drawn over them.

    Through ``arviz_plots.plot_ppc_dist`` (matplotlib); other keyword arguments go to it. Returns
    ArviZ's ``PlotCollection``; write it to a file with :func:`save`.
    """
    return _plot_dist(idata, "posterior_predictive", num_samples, "plot_ppc()", **kwargs)


def plot_prior_predictive(idata: Any, *, num_samples: int = 50, **kwargs: Any) -> Any:
    """Prior predictive check: densities of responses simulated from the prior (group
    ``prior_predictive``) with the observed ``y`` drawn over them.

    Shows whether the priors allow data on the scale observed (and do not put most of their
    mass far from it). Returns ArviZ's ``PlotCollection``.
    """
    visuals = dict(kwargs.pop("visuals", None) or {})
    visuals.setdefault("observed_dist", {})  # ArviZ leaves the observed data out of prior checks by default
    return _plot_dist(idata, "prior_predictive", num_samples, "plot_prior_predictive()", visuals=visuals, **kwargs)


@dataclass(frozen=True)
class GroupCheck:
    """Per-group statistic, observed and replicated.

    Attributes
    ----------
    table
        One row per level of ``factor`` (index): ``n`` observations, ``observed`` ``T_g(y)``,
        ``pred_mean``, ``pred_low``/``pred_high`` (central ``prob`` interval of ``T_g(y_rep)``),
        ``ppp`` the posterior predictive p-value ``Pr(T_g(y_rep) >= T_g(y))`` and ``outside``
        (observed outside the interval). Values of ``ppp`` near 0 or 1 mark groups the model
        does not reproduce; NaN rows are groups where the statistic is undefined (a slope where
        the covariate does not vary).
    replicated
        ``(S, G)`` the statistic of each replicate.
    """

    table: pd.DataFrame
    replicated: np.ndarray
    stat: str
    factor: str
    covariate: str | None
    prob: float
    predictive: str


def _factor_term(spec: ModelSpec, factor: str | None) -> Any:
    if not spec.terms:
        raise OptionError("the model has no grouping factor; per-group checks need a random-effect term")
    if factor is None:
        return spec.terms[0]
    for t in spec.terms:
        if factor in (t.group, t.name):
            return t
    raise OptionError(
        f"no grouping factor {factor!r} in the model; choose from {', '.join(sorted({t.group for t in spec.terms}))}"
    )


def _covariate(spec: ModelSpec, name: str) -> np.ndarray:
    if name in spec.fixef_names:
        return np.asarray(spec.X[:, spec.fixef_names.index(name)])
    for t in spec.terms:
        if name in t.coef_names:
            return np.asarray(t.Zraw[:, t.coef_names.index(name)])
    raise OptionError(
        f"no covariate {name!r} among the model's columns; choose from "
        f"{', '.join(n for n in spec.fixef_names if n != '(Intercept)')}"
    )


def _weights(spec: ModelSpec, codes: np.ndarray, G: int, stat: str, covariate: str | None) -> np.ndarray:
    """``(n, G)`` W with ``T(y) = y W``: group means, or within-group OLS slopes on the covariate."""
    n_g = np.bincount(codes, minlength=G).astype(float)
    W = np.zeros((spec.n, G))
    rows = np.arange(spec.n)
    if stat == "mean":
        W[rows, codes] = 1.0 / n_g[codes]
        return W
    if covariate is None:
        raise OptionError(
            "stat='slope' needs covariate='<column>', e.g. one of "
            f"{', '.join(n for n in spec.fixef_names if n != '(Intercept)')}"
        )
    x = _covariate(spec, covariate)
    dx = x - (np.bincount(codes, weights=x, minlength=G) / n_g)[codes]
    Sxx = np.bincount(codes, weights=dx * dx, minlength=G)
    # slope_g = sum_i dx_i y_i / Sxx_g (the dx sum to 0 within a group, so centring y is not needed)
    ok = Sxx > 1e-12 * max(float(np.max(Sxx)), 1e-300)
    if not ok.any():
        raise OptionError(f"covariate {covariate!r} is constant within every group: no within-group slope")
    W[rows, codes] = np.divide(dx, Sxx[codes], out=np.zeros_like(dx), where=ok[codes])
    W[:, ~ok] = np.nan
    return W


def ppc_group_stats(
    idata: Any,
    spec: ModelSpec,
    stat: str = "mean",
    *,
    covariate: str | None = None,
    factor: str | None = None,
    prob: float = 0.9,
    predictive: str = "posterior_predictive",
) -> GroupCheck:
    """Compare a per-group statistic of the observed ``y`` with its predictive distribution.

    ``stat="mean"``: the mean response of each level of ``factor``; ``stat="slope"``: the OLS
    slope of ``y`` on ``covariate`` (a column of the model: a fixed-effect or random-effect
    column name) fitted within each level. For each group ``g`` the replicated statistics
    ``T_g(y_rep^(s))`` (one per draw ``s`` of ``predictive``) give the central ``prob`` interval
    and the posterior predictive p-value ``ppp_g = Pr(T_g(y_rep) >= T_g(y))``.

    Parameters
    ----------
    idata
        Sampled from ``spec`` (the observed ``y`` must be ``spec.y``), with a ``predictive`` group.
    spec
        The model specification (grouping codes, covariates).
    factor
        Grouping factor; default the first random-effect term's.
    predictive
        ``"posterior_predictive"`` or ``"prior_predictive"``.

    Returns
    -------
    GroupCheck
    """
    if stat not in STATS:
        raise OptionError(f"unknown stat {stat!r}: use one of {', '.join(STATS)}")
    if not 0 < prob < 1:
        raise OptionError("prob must be between 0 and 1")
    if predictive not in ("posterior_predictive", "prior_predictive"):
        raise OptionError("predictive must be 'posterior_predictive' or 'prior_predictive'")
    rep = _group(idata, predictive, "sample with bayeslmm.bayes.sample(posterior_predictive=True, prior=True)")
    if "y" not in rep.data_vars or rep["y"].shape[-1] != spec.n:
        raise OptionError(
            f"the {predictive} group has no y with {spec.n} observations: was idata sampled from this spec?"
        )
    if "observed_data" in idata.children:
        y_obs = idata["observed_data"]["y"].values
        if y_obs.shape != spec.y.shape or not np.allclose(y_obs, spec.y):
            raise OptionError("the observed y of idata differs from spec.y: pass the spec the model was sampled from")
    t = _factor_term(spec, factor)
    W = _weights(spec, t.codes, t.nlevels, stat, covariate)
    Yrep = np.asarray(rep["y"].transpose("chain", "draw", ...).values).reshape(-1, spec.n)  # (S, n)
    # NaN columns of W (undefined slopes) stay NaN through the products
    T_obs = spec.y @ W  # (G,)
    T_rep = Yrep @ W  # (S, G)
    a = (1 - prob) / 2
    defined = ~np.isnan(T_obs)
    low = np.full(t.nlevels, np.nan)
    high = np.full(t.nlevels, np.nan)
    ppp = np.full(t.nlevels, np.nan)
    low[defined], high[defined] = np.quantile(T_rep[:, defined], [a, 1 - a], axis=0)
    ppp[defined] = np.mean(T_rep[:, defined] >= T_obs[defined], axis=0)
    table = pd.DataFrame(
        {
            "n": np.bincount(t.codes, minlength=t.nlevels),
            "observed": T_obs,
            "pred_mean": T_rep.mean(axis=0),
            "pred_low": low,
            "pred_high": high,
            "ppp": ppp,
            "outside": defined & ((T_obs < low) | (T_obs > high)),
        },
        index=pd.Index(list(t.levels), name=t.group),
    )
    return GroupCheck(
        table=table,
        replicated=T_rep,
        stat=stat,
        factor=t.group,
        covariate=covariate if stat == "slope" else None,
        prob=prob,
        predictive=predictive,
    )


def plot_ppc_groups(
    idata: Any,
    spec: ModelSpec,
    stat: str = "mean",
    *,
    covariate: str | None = None,
    factor: str | None = None,
    prob: float = 0.9,
    predictive: str = "posterior_predictive",
    ax: Any = None,
) -> Any:
    """Per-group predictive check plot: for each level the central ``prob`` interval of the replicated
    statistic (line), its mean (tick) and the observed statistic (dot; red when outside the interval).

    Arguments as :func:`ppc_group_stats`. Returns the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    chk = ppc_group_stats(idata, spec, stat, covariate=covariate, factor=factor, prob=prob, predictive=predictive)
    tab = chk.table
    G = len(tab)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, max(3.0, 0.22 * G + 1.2)), layout="constrained")
    else:
        fig = ax.get_figure()
    pos = np.arange(G)[::-1]
    ax.hlines(pos, tab["pred_low"], tab["pred_high"], color="C0", lw=2, label=f"{prob:.0%} predictive interval")
    ax.plot(tab["pred_mean"], pos, "|", color="C0", ms=8)
    inside = ~tab["outside"].to_numpy()
    ax.plot(tab["observed"][inside], pos[inside], "o", color="k", ms=4, label="observed")
    if (~inside).any():
        ax.plot(tab["observed"][~inside], pos[~inside], "o", color="C3", ms=5, label="observed, outside")
    ax.set_yticks(pos, [str(v) for v in tab.index], fontsize=7 if G > 30 else 9)
    ax.set_ylabel(chk.factor)
    what = "mean of y" if stat == "mean" else f"slope of y on {covariate}"
    src = "posterior" if predictive == "posterior_predictive" else "prior"
    ax.set_xlabel(f"{what} within {chk.factor}")
    ax.set_title(f"{src} predictive check by {chk.factor}: {int(tab['outside'].sum())} of {G} outside")
    ax.legend(loc="best", fontsize=8)
    return fig
