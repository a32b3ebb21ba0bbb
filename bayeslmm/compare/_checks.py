"""Model checking with ArviZ: sampler diagnostics, trace and rank plots, LOO/WAIC and model comparison.

Everything here reads an InferenceData (an ``xarray.DataTree``) as written by
:func:`bayeslmm.bayes.sample` and works for PyMC's NUTS and for nutpie, whose ``sample_stats``
name the tree-depth statistics differently (``tree_depth``/``depth`` and
``reached_max_treedepth``/``maxdepth_reached``).

The log-likelihood that LOO and WAIC use depends on the parameterisation:

* ``conditional`` (independent errors) stores ``log p(y_j | beta, b, sigma)`` per observation
  (dim ``obs``): PSIS-LOO then estimates leave-one-OBSERVATION-out predictive accuracy;
* ``marginal`` and ``restricted`` (and serial residual processes) store ``log N(y_i; X_i beta, V_i)``
  per group (dim named after the grouping factor): PSIS-LOO then estimates leave-one-GROUP-out
  accuracy, the predictive density of all responses of a new group.

The two are different quantities and are never compared with each other.
ArviZ is imported only when a function runs.
"""

from __future__ import annotations

import html
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import OptionError

DEFAULT_VARS = ("beta", "varcorr", "sigma", "process")
SAMPLE_DIMS = ("chain", "draw")
_DEPTH_NAMES = ("tree_depth", "depth")  # PyMC NUTS (older), PyMC NUTS / nutpie
_MAXDEPTH_HIT_NAMES = ("reached_max_treedepth", "maxdepth_reached")  # PyMC NUTS, nutpie


def _group(idata: Any, name: str, need: str) -> Any:
    """The Dataset of group ``name`` of ``idata``, or an OptionError that says what to do."""
    if name not in getattr(idata, "children", {}):
        raise OptionError(f"the InferenceData has no {name!r} group; {need}")
    return idata[name].to_dataset()


def default_var_names(posterior: Any) -> list[str]:
    """The parameters checked by default: ``beta``, ``varcorr``, ``sigma`` and ``process``, those present."""
    return [v for v in DEFAULT_VARS if v in posterior.data_vars]


def _var_names(posterior: Any, var_names: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if var_names is None:
        names = default_var_names(posterior)
        if not names:
            raise OptionError(
                "the posterior holds none of beta, varcorr, sigma, process; pass var_names=[...] "
                f"from {sorted(posterior.data_vars)}"
            )
        return names
    names = [var_names] if isinstance(var_names, str) else list(var_names)
    missing = [v for v in names if v not in posterior.data_vars]
    if missing:
        raise OptionError(
            f"no variable {', '.join(map(repr, missing))} in the posterior; "
            f"choose from {', '.join(sorted(posterior.data_vars))}"
        )
    return names


def _labelled(name: str, da: Any) -> list[tuple[str, float]]:
    """``[("beta[(Intercept)]", value), ...]``: one entry per element of ``da``, labelled by its coordinates."""
    if da.ndim == 0:
        return [(name, float(da))]
    labels = [list(da[d].values) if d in da.coords else list(range(da.sizes[d])) for d in da.dims]
    vals = np.asarray(da.values, dtype=float)
    return [
        (f"{name}[{', '.join(str(labels[k][i]) for k, i in enumerate(idx))}]", float(vals[idx]))
        for idx in np.ndindex(vals.shape)
    ]


@dataclass(frozen=True)
class Diagnosis:
    """Sampler diagnostics of one posterior, with the problems found written out in plain language.

    Attributes
    ----------
    table
        One row per scalar parameter (``beta[Days]``, ``varcorr[Subject|Days]``, ``sigma``): columns
        ``variable``, ``r_hat`` (rank-normalised split R-hat), ``ess_bulk``, ``ess_tail`` (ArviZ).
    chains, draws
        Number of chains and of draws per chain (after tuning).
    divergences
        Divergent transitions after tuning, over all chains.
    max_treedepth_hits
        Transitions that stopped at the maximum tree depth.
    max_treedepth
        The sampler's maximum tree depth when the InferenceData records it, else ``None``.
    bfmi
        E-BFMI per chain (empty when ``sample_stats`` has no ``energy``).
    warnings
        Plain-language descriptions of every problem found, each with what to do; empty when all is well.
    """

    table: pd.DataFrame
    chains: int
    draws: int
    divergences: int
    max_treedepth_hits: int
    max_treedepth: int | None
    bfmi: tuple[float, ...]
    rhat_max: float
    ess_min: float
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no warning was raised."""
        return not self.warnings

    def _header(self) -> list[str]:
        depth = f" (max depth {self.max_treedepth})" if self.max_treedepth is not None else ""
        lines = [
            f"MCMC diagnostics: {self.chains} chains x {self.draws} draws",
            f"divergences after tuning: {self.divergences}; max tree depth hits: {self.max_treedepth_hits}{depth}",
        ]
        if self.bfmi:
            lines.append("E-BFMI per chain: " + ", ".join(f"{b:.2f}" for b in self.bfmi))
        return lines

    def _tab(self) -> pd.DataFrame:
        return self.table[["r_hat", "ess_bulk", "ess_tail"]]

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        if self.ok:
            warn = [f"no warnings: R-hat <= {self.rhat_max:g} and ESS >= {self.ess_min:g} everywhere, no divergences"]
        else:
            warn = ["warnings:", *(f"  - {w}" for w in self.warnings)]
        return "\n".join([*self._header(), "", self._tab().to_string(float_format=_fmt), "", *warn])

    def _repr_html_(self) -> str:
        head = "".join(f"<p>{html.escape(line)}</p>" for line in self._header())
        warn = (
            ("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings) + "</ul>")
            if self.warnings
            else "<p>No warnings.</p>"
        )
        return f"<div>{head}{self._tab().to_html(float_format=_fmt)}{warn}</div>"


def _fmt(v: float) -> str:
    """R-hat with 3 decimals, ESS as a whole number."""
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"


def _after_tuning(stats: Any, name: str) -> np.ndarray:
    """``sample_stats[name]`` as a boolean array, draws flagged as tuning (nutpie's ``tuning``) left out."""
    v = np.asarray(stats[name].values, dtype=bool)
    if "tuning" in stats.data_vars:
        v = v & ~np.asarray(stats["tuning"].values, dtype=bool)
    return v


def _max_treedepth(stats: Any, hits: np.ndarray) -> int | None:
    """The maximum tree depth: from nutpie's recorded settings, else the depth of the transitions that hit it."""
    settings = stats.attrs.get("inference_library_settings")
    if isinstance(settings, str):
        try:
            depth = json.loads(settings).get("settings", {}).get("maxdepth")
        except (ValueError, AttributeError):
            depth = None
        if depth is not None:
            return int(depth)
    for name in _DEPTH_NAMES:
        if name in stats.data_vars and hits.any():
            return int(np.asarray(stats[name].values)[hits].max())
    return None


def _sampler_warnings(stats: Any | None, param_hint: str) -> tuple[int, int, int | None, tuple[float, ...], list[str]]:
    if stats is None:
        return 0, 0, None, (), []
    out = []
    n_div = int(_after_tuning(stats, "diverging").sum()) if "diverging" in stats.data_vars else 0
    if n_div:
        s = "s" if n_div > 1 else ""
        out.append(
            f"{n_div} divergent transition{s} after tuning: the posterior geometry is hard and the draws may "
            f"be biased; {param_hint}"
        )
    hits_name = next((n for n in _MAXDEPTH_HIT_NAMES if n in stats.data_vars), None)
    hits = _after_tuning(stats, hits_name) if hits_name else np.zeros(0, dtype=bool)
    n_hit = int(hits.sum())
    depth = _max_treedepth(stats, hits)
    if n_hit:
        at = f" ({depth})" if depth is not None else ""
        out.append(
            f"{n_hit} transitions stopped at the maximum tree depth{at}: the sampler needs very long "
            "trajectories (strongly correlated or badly scaled parameters); the draws are valid but "
            "inefficient; centre and scale the covariates"
        )
    bfmi: tuple[float, ...] = ()
    if "energy" in stats.data_vars and stats.sizes.get("draw", 0) > 2:
        import arviz_stats as azs

        # E-BFMI per chain: E[(E_t - E_{t-1})^2] / Var(E)
        bfmi = tuple(float(b) for b in np.atleast_1d(azs.bfmi(stats["energy"], sample_dims=list(SAMPLE_DIMS)).values))
        low = [f"chain {i}: {b:.2f}" for i, b in enumerate(bfmi) if b < 0.3]
        if low:
            out.append(
                f"E-BFMI below 0.3 ({', '.join(low)}): the momentum resampling explores the energy poorly "
                "(heavy tails or a funnel); reparameterise, e.g. param='marginal'"
            )
    return n_div, n_hit, depth, bfmi, out


def _worst(table: pd.DataFrame, col: str, bad: pd.Series, high: bool) -> list[tuple[str, float, str]]:
    """Per variable: the worst flagged element, its value and a note on how many others are flagged."""
    out = []
    for var, rows in table[bad].groupby("variable", sort=False):
        lab = rows[col].idxmax() if high else rows[col].idxmin()
        more = f" (and {len(rows) - 1} more elements of {var})" if len(rows) > 1 else ""
        out.append((str(lab), float(rows.loc[lab, col]), more))
    return out


def diagnose(
    idata: Any, var_names: str | list[str] | None = None, *, rhat_max: float = 1.01, ess_min: float = 400.0
) -> Diagnosis:
    """Sampler diagnostics of a posterior, with plain-language warnings.

    Computes, with ArviZ, the rank-normalised split R-hat and the bulk and tail effective
    sample sizes of every scalar element of ``var_names`` (default: ``beta``, ``varcorr``,
    ``sigma`` and ``process``, those present), and reads the number of divergent transitions
    after tuning, of transitions that hit the maximum tree depth and the E-BFMI per chain from
    ``sample_stats`` (PyMC NUTS and nutpie names both understood).

    Parameters
    ----------
    idata
        InferenceData (DataTree) with a ``posterior`` group; ``sample_stats`` is optional.
    var_names
        Posterior variables to check.
    rhat_max
        R-hat above this value is flagged (1.01, Vehtari et al. 2021).
    ess_min
        Bulk or tail ESS below this value is flagged (400: 100 per chain for 4 chains, the
        same reference).

    Returns
    -------
    Diagnosis
        Printable (``str`` and HTML) summary; ``Diagnosis.warnings`` lists the problems.
    """
    import arviz_stats as azs

    post = _group(idata, "posterior", "diagnose() needs posterior draws")
    names = _var_names(post, var_names)
    if rhat_max <= 1 or ess_min <= 0:
        raise OptionError("rhat_max must exceed 1 and ess_min must be positive")
    rows: list[tuple[str, str, float, float, float]] = []
    for v in names:
        da = post[v]
        rh = _labelled(v, azs.rhat(da, sample_dims=list(SAMPLE_DIMS)))
        eb = _labelled(v, azs.ess(da, sample_dims=list(SAMPLE_DIMS), method="bulk"))
        et = _labelled(v, azs.ess(da, sample_dims=list(SAMPLE_DIMS), method="tail"))
        rows += [(lab, v, r, b, t) for (lab, r), (_, b), (_, t) in zip(rh, eb, et)]
    table = pd.DataFrame(rows, columns=["parameter", "variable", "r_hat", "ess_bulk", "ess_tail"]).set_index(
        "parameter"
    )
    conditional = any(str(v).startswith("z_") for v in post.data_vars)
    hint = (
        "try param='marginal' (random effects integrated out), or a higher target_accept"
        if conditional
        else "try a higher target_accept (sample(..., target_accept=0.95)) and check the priors of the "
        "variance components"
    )
    stats = idata["sample_stats"].to_dataset() if "sample_stats" in idata.children else None
    n_div, n_hit, depth, bfmi, warns = _sampler_warnings(stats, hint)
    for lab, val, more in _worst(table, "r_hat", table["r_hat"] > rhat_max, high=True):
        warns.append(
            f"R-hat {val:.3f} for {lab} > {rhat_max:g}{more}: chains disagree; run longer (more tune "
            "and draws) and look at plot_trace() for a chain stuck elsewhere"
        )
    for lab, val, more in _worst(table, "ess_bulk", table["ess_bulk"] < ess_min, high=False):
        warns.append(
            f"bulk ESS {val:.0f} < {ess_min:g} for {lab}{more}: too few effective draws for a stable "
            "posterior mean and sd; run more draws"
        )
    for lab, val, more in _worst(table, "ess_tail", table["ess_tail"] < ess_min, high=False):
        warns.append(
            f"tail ESS {val:.0f} < {ess_min:g} for {lab}{more}: the 5% and 95% quantiles (interval "
            "ends) are unstable; run more draws"
        )
    return Diagnosis(
        table=table,
        chains=int(post.sizes["chain"]),
        draws=int(post.sizes["draw"]),
        divergences=n_div,
        max_treedepth_hits=n_hit,
        max_treedepth=depth,
        bfmi=bfmi,
        rhat_max=rhat_max,
        ess_min=ess_min,
        warnings=tuple(warns),
    )


def plot_trace(idata: Any, var_names: str | list[str] | None = None, **kwargs: Any) -> Any:
    """Trace and marginal density of each chain, through ``arviz_plots.plot_trace_dist`` (matplotlib).

    ``var_names`` defaults to ``beta``, ``varcorr``, ``sigma`` (and ``process``), one panel row
    per element (``compact=False``; pass ``compact=True`` to overlay a variable's elements); divergent
    transitions are marked on the traces. Other keyword arguments go to ArviZ. Returns
    ArviZ's ``PlotCollection``; write it to a file with :func:`save`.
    """
    import arviz_plots as azp

    post = _group(idata, "posterior", "plot_trace() needs posterior draws")
    kwargs.setdefault("compact", False)  # one panel per element: variance components differ in scale by 100x
    return azp.plot_trace_dist(idata, var_names=_var_names(post, var_names), backend="matplotlib", **kwargs)


def plot_rank(idata: Any, var_names: str | list[str] | None = None, **kwargs: Any) -> Any:
    """Rank plots through ``arviz_plots.plot_rank`` (matplotlib): per chain, the ECDF of the draws'
    fractional ranks (ranked over all chains) minus the uniform CDF.

    Chains that target the same distribution give curves near zero; ArviZ's multi-chain test
    prints its p-value and highlights the points that deviate most (``method="envelope"`` draws a
    simultaneous envelope instead). Returns ArviZ's ``PlotCollection``; write it with :func:`save`.
    """
    import arviz_plots as azp

    post = _group(idata, "posterior", "plot_rank() needs posterior draws")
    names = _var_names(post, var_names)
    panels = sum(int(np.prod([n for d, n in post[v].sizes.items() if d not in SAMPLE_DIMS])) for v in names)
    fig_kw = dict(kwargs.pop("figure_kwargs", None) or {})
    # ArviZ's default height leaves no room for two-line titles (variable, then coordinate)
    fig_kw.setdefault("figsize", (3.2 * min(panels, 4), 3.0 * -(-panels // 4)))
    fig_kw.setdefault("layout", "constrained")
    return azp.plot_rank(idata, var_names=names, backend="matplotlib", figure_kwargs=fig_kw, **kwargs)


def save(plot: Any, path: Any, **kwargs: Any) -> None:
    """Write a plot to ``path`` (format from the suffix): an ArviZ ``PlotCollection``, a matplotlib
    ``Figure`` or ``Axes``; keyword arguments go to ``savefig``."""
    if hasattr(plot, "savefig"):  # PlotCollection and Figure
        plot.savefig(path, **kwargs)
    elif hasattr(plot, "get_figure") and plot.get_figure() is not None:
        plot.get_figure().savefig(path, **kwargs)
    else:
        raise OptionError(f"cannot save a {type(plot).__name__}: pass a PlotCollection or a matplotlib Figure/Axes")


# ---------------------------------------------------------------------------------------- LOO and WAIC


def _loglik(idata: Any, name: str) -> Any:
    """The pointwise log-likelihood DataArray ``(chain, draw, unit)`` of a model."""
    ll = _group(
        idata,
        "log_likelihood",
        f"model {name!r} has no pointwise log-likelihood to leave out (with "
        "crossed grouping factors param='marginal'/'restricted' has no independent "
        "groups); sample it with bayeslmm.bayes.sample(param='conditional')",
    )
    if "y" in ll.data_vars:
        return ll["y"]
    if len(ll.data_vars) == 1:
        return ll[next(iter(ll.data_vars))]
    raise OptionError(
        f"model {name!r} has several log-likelihood variables ({', '.join(ll.data_vars)}); keep one called 'y'"
    )


def _unit(ll: Any) -> str:
    """The dimension the log-likelihood is pointwise over: ``obs`` or a grouping factor."""
    dims = [d for d in ll.dims if d not in SAMPLE_DIMS]
    if len(dims) != 1:
        raise OptionError(f"the log-likelihood has dims {ll.dims}; expected (chain, draw, unit)")
    return str(dims[0])


def _describe(unit: str, size: int) -> str:
    if unit == "obs":
        return f"per observation (param='conditional'; leave-one-out over {size} observations)"
    return (
        f"per group of {unit!r} (random effects integrated out: param='marginal'/'restricted' or a serial "
        f"residual process; leave-one-group-out over {size} groups)"
    )


@dataclass(frozen=True)
class ModelFit:
    """Predictive accuracy of one model: PSIS-LOO (ArviZ) and WAIC, with Pareto-k diagnostics.

    ``unit`` is ``"obs"`` when the log-likelihood is per observation (leave-one-out) or the name of
    the grouping factor when it is per group (``marginal``/``restricted``: leave-one-GROUP-out,
    the accuracy of predicting all responses of a new group).

    Attributes
    ----------
    loo
        ArviZ's ``ELPDDataLOO`` (pointwise): ``elpd``, ``se``, ``p``, ``elpd_i``, ``pareto_k``, ``good_k``.
    elpd_waic, se_waic, p_waic
        WAIC on the elpd scale: ``sum_i lppd_i - p_waic_i``, ``lppd_i = log mean_s p(y_i | draw s)``,
        ``p_waic_i = Var_s log p(y_i | draw s)``; ``se = sqrt(N Var_i elpd_waic_i)``.
    p_waic_i
        ``(N,)`` pointwise WAIC penalties (> 0.4 makes WAIC unreliable).
    unit
        ``"obs"`` or the grouping factor.
    warnings
        Plain-language problems (high Pareto k, unreliable WAIC).
    """

    loo: Any
    elpd_waic: float
    se_waic: float
    p_waic: float
    p_waic_i: np.ndarray
    unit: str
    warnings: tuple[str, ...]

    @property
    def pareto_k(self) -> Any:
        """``(N,)`` Pareto k per unit (observation or group), a labelled DataArray."""
        return self.loo.pareto_k

    @property
    def table(self) -> pd.DataFrame:
        """Rows ``loo`` and ``waic``; columns ``elpd``, ``se``, ``p``."""
        return pd.DataFrame(
            {
                "elpd": [self.loo.elpd, self.elpd_waic],
                "se": [self.loo.se, self.se_waic],
                "p": [self.loo.p, self.p_waic],
            },
            index=["loo", "waic"],
        )

    def _lines(self) -> list[str]:
        k = np.asarray(self.pareto_k.values)
        n_bad, n_vbad = int(np.sum((k > self.loo.good_k) & (k <= 1))), int(np.sum(k > 1))
        what = (
            "observations (leave-one-out)" if self.unit == "obs" else f"groups of {self.unit!r} (leave-one-group-out)"
        )
        return [
            f"predictive accuracy from {self.loo.n_samples} draws over {k.size} {what}",
            f"Pareto k: {k.size - n_bad - n_vbad} good (<= {self.loo.good_k:.2f}), {n_bad} bad, "
            f"{n_vbad} very bad (> 1); max k = {k.max():.2f}",
        ]

    def __str__(self) -> str:
        warn = ["warnings:", *(f"  - {w}" for w in self.warnings)] if self.warnings else ["no warnings"]
        return "\n".join([*self._lines(), "", self.table.to_string(float_format=lambda v: f"{v:.2f}"), "", *warn])

    def _repr_html_(self) -> str:
        head = "".join(f"<p>{html.escape(line)}</p>" for line in self._lines())
        warn = (
            ("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings) + "</ul>")
            if self.warnings
            else "<p>No warnings.</p>"
        )
        return f"<div>{head}{self.table.to_html(float_format=lambda v: f'{v:.2f}')}{warn}</div>"


def _waic(ll: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """WAIC from ``(S, N)`` pointwise log-likelihoods: ``(elpd, se, p, p_i)``."""
    from scipy.special import logsumexp

    S, N = ll.shape
    lppd_i = logsumexp(ll, axis=0) - np.log(S)
    p_i = np.var(ll, axis=0, ddof=1)
    elpd_i = lppd_i - p_i
    se = float(np.sqrt(N * np.var(elpd_i, ddof=1))) if N > 1 else 0.0
    return float(elpd_i.sum()), se, float(p_i.sum()), p_i


def model_fit(idata: Any) -> ModelFit:
    """PSIS-LOO (``arviz_stats.loo``) and WAIC of a model, with plain-language Pareto-k warnings.

    With ``param='conditional'`` the units are the observations (leave-one-out); with
    ``param='marginal'`` or ``'restricted'`` they are the groups, so the LOO here is
    leave-one-GROUP-out: the expected log predictive density of all responses of a group left out,
    given the other groups. Dropping a whole group moves the posterior more than dropping one
    observation, so Pareto k values above the threshold are more common; the warning then
    suggests K-fold cross-validation by group. ArviZ 1.x has no WAIC function; it is computed here
    from the same log-likelihood matrix.
    """
    import arviz_stats as azs

    ll = _loglik(idata, "model")
    unit = _unit(ll)
    with warnings.catch_warnings():  # ArviZ's generic Pareto-k warning; ours below names the units
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        loo = azs.loo(idata, pointwise=True, var_name=ll.name)
    S = ll.sizes["chain"] * ll.sizes["draw"]
    elpd_w, se_w, p_w, p_i = _waic(np.asarray(ll.transpose(*SAMPLE_DIMS, unit).values).reshape(S, -1))
    warns = []
    k = loo.pareto_k
    bad = k > loo.good_k
    if bool(bad.any()):
        kind = "observations" if unit == "obs" else f"groups of {unit!r}"
        labels = k[unit].values if unit in k.coords else np.arange(k.size)
        order = np.argsort(-k.values)[: min(5, int(bad.sum()))]
        names = ", ".join(f"{labels[i]} (k={k.values[i]:.2f})" for i in order)
        fix = (
            "use K-fold cross-validation by group, or more draws"
            if unit != "obs"
            else "use more draws, or refit without them (reloo), or K-fold cross-validation"
        )
        warns.append(
            f"Pareto k > {loo.good_k:.2f} for {int(bad.sum())} of {k.size} {kind} ({names}): the "
            f"PSIS-LOO estimate is unreliable for them and elpd_loo may be too optimistic; {fix}"
        )
    n_w = int(np.sum(p_i > 0.4))
    if n_w:
        warns.append(f"p_waic_i > 0.4 for {n_w} of {p_i.size} units: WAIC is unreliable; use LOO")
    return ModelFit(loo=loo, elpd_waic=elpd_w, se_waic=se_w, p_waic=p_w, p_waic_i=p_i, unit=unit, warnings=tuple(warns))


def _check_comparable(models: dict[str, Any]) -> str:
    """Raise an OptionError unless every model has a log-likelihood over the same units of the same data;
    returns the unit dim."""
    if len(models) < 2:
        raise OptionError("compare_models needs at least two models: {'name': idata, ...}")
    items = [(name, _loglik(idata, name), idata) for name, idata in models.items()]
    name0, ll0, id0 = items[0]
    unit0 = _unit(ll0)
    y0 = id0["observed_data"].to_dataset() if "observed_data" in id0.children else None
    for name, ll, idata in items[1:]:
        unit = _unit(ll)
        if unit != unit0:
            if "obs" in (unit, unit0):
                fix = (
                    "refit them with the same param: param='marginal' for both to compare leave-one-group-out, "
                    "or param='conditional' for both to compare leave-one-observation-out"
                )
            else:
                fix = "refit both with param='conditional' to compare them per observation"
            raise OptionError(
                f"cannot compare {name0!r} and {name!r}: {name0!r} stores the log-likelihood "
                f"{_describe(unit0, ll0.sizes[unit0])} and {name!r} {_describe(unit, ll.sizes[unit])}; "
                f"their elpd values estimate different things; {fix}"
            )
        same_units = ll.sizes[unit] == ll0.sizes[unit0] and (
            unit not in ll.coords or unit0 not in ll0.coords or np.array_equal(ll[unit].values, ll0[unit0].values)
        )
        y = idata["observed_data"].to_dataset() if "observed_data" in idata.children else None
        same_y = (
            y is None
            or y0 is None
            or all(
                v in y0.data_vars and y[v].shape == y0[v].shape and np.array_equal(y[v].values, y0[v].values)
                for v in y.data_vars
            )
        )
        if not (same_units and same_y):
            raise OptionError(
                f"cannot compare {name0!r} and {name!r}: they were fitted to different data "
                f"({'different ' + unit if not same_units else 'the observed responses differ'}); "
                "LOO comparison needs the same observations: fit both formulas to the same data "
                "frame, without rows dropped for missing values in only one of them"
            )
    return unit0


def compare_models(models: dict[str, Any], *, method: str = "stacking", round_to: Any = "none") -> pd.DataFrame:
    """Rank models by PSIS-LOO expected log predictive density (``arviz_stats.compare``).

    Models are comparable only when their log-likelihoods are over the same units of the same
    data: all ``param='conditional'`` (per observation: leave-one-out) or all ``'marginal'`` /
    ``'restricted'`` on the same grouping factor (per group: leave-one-GROUP-out). Anything else
    is refused with an OptionError that says how to refit.

    Parameters
    ----------
    models
        ``{"name": idata, ...}``, at least two.
    method
        Model weights: ``"stacking"``, ``"BB-pseudo-BMA"`` or ``"pseudo-BMA"`` (ArviZ's).
    round_to
        ArviZ's rounding: ``"none"`` (default, raw numbers), ``"auto"`` or a number of digits.

    Returns
    -------
    DataFrame
        ArviZ's comparison table, best model first: ``rank``, ``elpd_diff``, ``dse``, ``p_worse``,
        ``diag_diff``, ``diag_elpd``, ``p``, ``elpd``, ``se``, ``weight``. ``attrs["unit"]`` is
        ``"obs"`` or the grouping factor the LOO leaves out.
    """
    import arviz_stats as azs

    unit = _check_comparable(models)
    with warnings.catch_warnings():  # the table's diag_elpd column reports high Pareto k per model
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        table = azs.compare(dict(models), method=method, round_to=round_to)
    table.attrs["unit"] = unit
    return table
