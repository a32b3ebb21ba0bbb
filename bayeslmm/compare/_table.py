"""REML (or ML) estimates against posterior summaries, parameter by parameter and level by level.

:func:`compare` puts each parameter of a fit next to its posterior from
:func:`bayeslmm.bayes.sample`: the estimate, its Wald standard error and a Wald or profile
interval against the posterior mean, median, mode, sd and HDI, and the ratio of the widths
of the two intervals. :func:`compare_ranef` does the same for the random effects: BLUPs
``b_hat`` with their conditional sds against the posterior of ``b``, with the raw group
means of ``y - X beta_hat`` and the closed-form shrinkage factor of a random intercept.
Both return a :class:`Comparison`, a pandas frame that prints as a terminal table and
renders as Markdown or HTML.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, OptionError

#: Columns of :func:`compare`'s table with their display headers (``estimate`` gets the method).
COMPARE_COLUMNS = {
    "kind": "kind",
    "name": "name",
    "estimate": "REML",
    "se": "SE",
    "low": "low",
    "high": "high",
    "mean": "mean",
    "median": "median",
    "mode": "mode",
    "sd": "sd",
    "hdi_low": "HDI low",
    "hdi_high": "HDI high",
    "width_ratio": "width ratio",
}
RANEF_COLUMNS = {
    "term": "term",
    "coef": "coef",
    "level": "level",
    "n": "n",
    "mean_resid": "mean resid",
    "factor": "factor",
    "blup": "BLUP",
    "condsd": "cond sd",
    "mean": "post mean",
    "sd": "post sd",
}


def _num(x: Any) -> str:
    """About four significant digits in fixed notation (scientific outside 1e-4 .. 1e6); NaN is ``NA``."""
    if isinstance(x, str):
        return x
    if x is None or not math.isfinite(float(x)):
        return "NA"
    x = float(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if -4 <= mag < 6:
        return f"{x:.{max(0, 3 - mag)}f}"
    return f"{x:.3e}"


@dataclass(frozen=True)
class Comparison:
    """A comparison table: ``table`` (pandas) plus how to show it.

    Attributes
    ----------
    table
        The numbers, one row per parameter (:func:`compare`) or per level and coefficient
        (:func:`compare_ranef`); NaN where a value does not apply.
    title
        One line saying what is compared.
    columns
        Columns of ``table`` shown by ``str``, :meth:`to_markdown` and HTML, with their headers.
    notes
        Lines printed under the table (interval levels, how the mode is computed...).
    """

    table: pd.DataFrame
    title: str
    columns: dict[str, str]
    notes: tuple[str, ...] = field(default=())

    def _cells(self) -> tuple[list[str], list[list[str]], list[bool]]:
        """Headers, formatted rows and, per column, whether it is numeric (right-aligned)."""
        cols = list(self.columns)
        numeric = [pd.api.types.is_numeric_dtype(self.table[c]) for c in cols]
        integer = [pd.api.types.is_integer_dtype(self.table[c]) for c in cols]

        def cell(v: Any, isnum: bool, isint: bool) -> str:
            if isint:
                return str(v)
            return _num(v) if isnum else ("" if v is None or v is pd.NA else str(v))

        rows = [
            [cell(v, a, b) for v, a, b in zip(r, numeric, integer)] for r in self.table[cols].itertuples(index=False)
        ]
        return list(self.columns.values()), rows, numeric

    def __str__(self) -> str:
        head, rows, numeric = self._cells()
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

        out = [self.title, "", line(head), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
        return "\n".join(out + ([""] + list(self.notes) if self.notes else []))

    def __repr__(self) -> str:
        return str(self)

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table (``|`` in names escaped), with the title and notes."""
        head, rows, numeric = self._cells()

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"
        out = [f"**{self.title}**", "", line(head), rule, *(line(r) for r in rows)]
        return "\n".join(out + ([""] + list(self.notes) if self.notes else []))

    def _repr_html_(self) -> str:
        head, rows, numeric = self._cells()
        style = ["text-align:right" if num else "text-align:left" for num in numeric]
        th = "".join(f"<th style='{s}'>{html.escape(h)}</th>" for h, s in zip(head, style))
        body = "".join(
            "<tr>" + "".join(f"<td style='{s}'>{html.escape(c)}</td>" for c, s in zip(r, style)) + "</tr>" for r in rows
        )
        notes = "".join(f"<div>{html.escape(n)}</div>" for n in self.notes)
        return (
            f"<div class='bayeslmm-comparison'><table><caption>{html.escape(self.title)}</caption>"
            f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>{notes}</div>"
        )

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-ready rows of ``table`` (NaN as None)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float | np.floating):
                return float(v) if math.isfinite(v) else None
            return v.item() if isinstance(v, np.generic) else v

        return [{k: clean(v) for k, v in r.items()} for r in self.table.to_dict(orient="records")]


# --------------------------------------------------------------------- input checks
def _check_fit(fit: Any, terms: bool = True) -> None:
    """Raise unless ``fit`` is a mixed-model fit; with ``terms``, one with a random-effect term (without,
    a residual structure alone will do: an MMRM ``y ~ visit * arm`` with ``us(visit | id)``)."""
    if not (hasattr(fit, "spec") and hasattr(fit, "varcorr") and hasattr(fit, "ranef")):
        raise OptionError(f"expected a mixed-model fit from bayeslmm.lmm(...), got {type(fit).__name__}")
    if not fit.spec.terms and (terms or fit.spec.residual is None):
        need = "one" if terms else "one or a residual structure"
        raise OptionError(f"the fit has no random-effect term; the PyMC models (and these comparisons) need {need}")


def _posterior(idata: Any) -> Any:
    """The posterior group of an InferenceData / DataTree as an ``xarray.Dataset``."""
    try:
        post = idata["posterior"]
    except (KeyError, TypeError, AttributeError):
        raise OptionError(
            "idata has no posterior group: pass the result of bayeslmm.bayes.sample(fit.spec, ...)"
        ) from None
    return post.to_dataset() if hasattr(post, "to_dataset") else post


def _draws(post: Any, name: str) -> np.ndarray:
    """``(S, ...)`` draws of a posterior variable, chains and draws stacked."""
    da = post[name]
    sample = [d for d in ("chain", "draw") if d in da.dims]
    if not sample:
        raise OptionError(
            f"posterior variable {name!r} has no chain/draw dimensions; pass the InferenceData "
            "returned by bayeslmm.bayes.sample"
        )
    da = da.transpose(*sample, ...)
    return np.asarray(da.values, dtype=float).reshape(-1, *da.shape[len(sample) :])


def _labels(post: Any, name: str, dim: str) -> list[str]:
    return [str(v) for v in post[name][dim].values] if dim in post[name].coords else []


def check_posterior(fit: Any, idata: Any) -> Any:
    """The posterior Dataset of ``idata`` after checking that it was sampled from ``fit``'s model and data.

    Raises
    ------
    OptionError
        If the posterior lacks ``beta``/``varcorr`` or its coefficients, variance
        components or serial-process parameters differ from the fit's.
    DataError
        If its observed ``y`` differs from the fit's response.
    """
    from ..bayes import varcorr_labels

    _check_fit(fit, terms=False)
    post = _posterior(idata)
    spec = fit.spec
    hint = "sample the fit's own model: bayeslmm.bayes.sample(fit.spec, ...)"
    for var in ("beta", "varcorr"):
        if var not in post:
            raise OptionError(f"the posterior has no {var!r} variable; {hint}")
    coef = _labels(post, "beta", "coef")
    if coef != list(spec.fixef_names):
        raise OptionError(
            f"the posterior was sampled from another model: its fixed effects are {coef} but the "
            f"fit's are {list(spec.fixef_names)}; {hint}"
        )
    comp = _labels(post, "varcorr", "component")
    if comp != varcorr_labels(spec):
        raise OptionError(
            f"the posterior was sampled from another model: its variance components are {comp} but "
            f"the fit's are {varcorr_labels(spec)}; {hint}"
        )
    if (spec.residual is None) != ("process" not in post):
        have = "has" if "process" in post else "has no"
        raise OptionError(
            f"the posterior {have} serial-process parameters but the fit "
            f"{'has none' if spec.residual is None else 'has ' + spec.residual.kind}; {hint}"
        )
    try:
        y = np.asarray(idata["observed_data"]["y"].values, dtype=float)
    except (KeyError, TypeError, AttributeError):
        y = None
    if y is not None and (y.shape != spec.y.shape or not np.allclose(y, spec.y, rtol=1e-12, atol=0)):
        raise DataError(
            f"the posterior was sampled from other data: its observed y ({y.size} values) is not the "
            f"fit's response ({spec.n} values); sample bayeslmm.bayes.sample(fit.spec, ...)"
        )
    return post


def _check_probs(level: float, hdi_prob: float) -> None:
    if not 0 < level < 1:
        raise OptionError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    if not 0 < hdi_prob < 1:
        raise OptionError(f"hdi_prob must be between 0 and 1 (e.g. 0.94), got {hdi_prob}")


# --------------------------------------------------------------------- posterior summaries
def _kde_mode(x: np.ndarray) -> float:
    """Mode of ArviZ's boundary-corrected Gaussian KDE of the draws (512-point grid)."""
    from arviz_stats.base import array_stats

    if np.ptp(x) == 0:
        return float(x[0])
    grid, pdf, _ = array_stats.kde(x)
    return float(grid[np.argmax(pdf)])


def _summaries(D: np.ndarray, hdi_prob: float) -> dict[str, np.ndarray]:
    """Mean, median, KDE mode, sd (ddof 1, as ArviZ) and HDI of each column of ``D (S, k)``."""
    from arviz_stats.base import array_stats

    hdi = np.asarray(array_stats.hdi(D, hdi_prob, axis=0)).reshape(D.shape[1], 2)
    return {
        "mean": D.mean(axis=0),
        "median": np.median(D, axis=0),
        "mode": np.array([_kde_mode(D[:, j]) for j in range(D.shape[1])]),
        "sd": D.std(axis=0, ddof=1),
        "hdi_low": hdi[:, 0],
        "hdi_high": hdi[:, 1],
    }


# --------------------------------------------------------------------- compare
def _profile_limits(fit: Any, level: float) -> dict[tuple[str | None, ...], tuple[float, float]]:
    """Profile limits keyed ``("fixef", name)``, ``("sd", grp, var1)``, ``("cor", grp, var1, var2)``.

    The residual standard deviation is ``("sd", "Residual", None)``.
    """
    if fit.spec.residual is not None:
        raise OptionError("profile intervals are not available for serial-process fits; use interval='wald'")
    ci = fit.confint(level=level, method="profile")
    p = fit.spec.p
    out: dict[tuple[str | None, ...], tuple[float, float]] = {}
    for name, (lo, hi) in zip(fit.spec.fixef_names, ci.iloc[ci.shape[0] - p :, 1:3].to_numpy()):
        out[("fixef", name)] = (lo, hi)
    vc_rows = ci.iloc[: ci.shape[0] - p]
    for t in fit.spec.terms:
        for j, a in enumerate(t.coef_names):
            out[("sd", t.name, a)] = tuple(vc_rows.loc[f"sd_{a}|{t.name}"].iloc[1:3])
            for b in t.coef_names[j + 1 :]:
                out[("cor", t.name, a, b)] = tuple(vc_rows.loc[f"cor_{b}.{a}|{t.name}"].iloc[1:3])
    out[("sd", "Residual", None)] = tuple(vc_rows.loc["sigma"].iloc[1:3])
    return out


def _vc_with_se(fit: Any) -> tuple[pd.DataFrame, str | None]:
    """``fit.vc_se()``, or where it is not computed (too many random effects) the same rows with NaN SEs."""
    try:
        return fit.vc_se(), None
    except DataError as e:
        vc = fit.varcorr()
        if fit.spec.residual is not None:
            rp = fit.residual_params()
            extra = [k for k in rp if k not in ("kind", "nugget", "sigma2")]
            vc = pd.concat(
                [
                    vc,
                    pd.DataFrame(
                        {"grp": "process", "var1": extra, "var2": None, "vcov": [rp[k] for k in extra], "sdcor": np.nan}
                    ),
                ],
                ignore_index=True,
            )
        return vc.assign(se_vcov=np.nan, se_sdcor=np.nan), f"no Wald SEs of the variance components: {e}"


def compare(fit: Any, idata: Any, *, interval: str = "wald", level: float = 0.95, hdi_prob: float = 0.94) -> Comparison:
    """REML (or ML) estimates and intervals next to posterior summaries, one row per parameter.

    Rows: the fixed effects; per random-effect term its variances, covariances and
    correlations (``corr = cov / sqrt(var1 var2)``, for the posterior computed draw by draw
    from ``varcorr``); the residual variance (the ``Residual`` row: the nugget of ``ou``, the first
    visit's variance of a structure by visit, the sill of a spatial one); for a residual structure each
    of its other parameters, as ``fit.residual_params()`` (``kind`` "process", e.g. ``process_var`` and
    ``rho`` for ``ou``, ``phi`` for ``ar1``, ``var(<visit>)`` and ``cov(<a>,<b>)`` for ``us``, ``range``
    and ``nugget`` for ``exp``, ``ratio(<level>)`` of a variance function, ``... [<stratum>]`` of
    strata). A fit with a residual structure and no random-effect term (an MMRM) is compared too.

    Columns: ``kind`` (fixef, variance, covariance, correlation, process), ``name`` (the
    coefficient, or the ``grp|var1|var2`` label of the posterior's ``varcorr`` component),
    ``grp, var1, var2`` (as ``fit.varcorr()``), ``estimate`` (the fit's, REML or ML), ``se``
    (``fit.se`` for fixed effects; ``fit.vc_se()``: the variance scale for variances and
    covariances, the delta method for correlations), ``low, high`` (the interval),
    ``mean, median, mode, sd, hdi_low, hdi_high`` (posterior; ``sd`` with ``ddof=1`` as ArviZ;
    ``mode`` is the maximum of ArviZ's boundary-corrected Gaussian KDE on 512 points, whose
    error from a few hundred draws is of the order of a tenth of the sd or more) and
    ``width_ratio`` = ``(hdi_high - hdi_low) / (high - low)``.

    Parameters
    ----------
    fit
        A fit from :func:`bayeslmm.lmm`.
    idata
        The InferenceData of ``bayeslmm.bayes.sample(fit.spec, ...)`` (any parameterisation).
    interval
        ``"wald"``: ``estimate +- z se``, on the variance scale for variance components (it can
        go below 0: the reason to compare). ``"profile"``: ``fit.confint(method="profile")``,
        the profile of the ML deviance as lme4's; sd limits are squared for the variances,
        covariances get none (NaN).
    level
        Coverage of the interval.
    hdi_prob
        Probability of the HDI; the width ratio compares intervals of ``hdi_prob`` and ``level``.

    Returns
    -------
    Comparison
        ``.table`` a DataFrame with the columns above.

    Raises
    ------
    OptionError
        For a bad option, or ``idata`` sampled from another model.
    DataError
        For ``idata`` sampled from other data.
    """
    import scipy.stats

    if interval not in ("wald", "profile"):
        raise OptionError(f"unknown interval {interval!r}: use 'wald' or 'profile'")
    _check_probs(level, hdi_prob)
    post = check_posterior(fit, idata)
    spec = fit.spec
    z = float(scipy.stats.norm.ppf(0.5 + level / 2))
    prof = _profile_limits(fit, level) if interval == "profile" else None
    vcse, se_note = _vc_with_se(fit)
    rows: list[dict[str, Any]] = []
    cols: list[np.ndarray] = []

    def add(
        kind: str,
        name: str,
        grp: Any,
        var1: Any,
        var2: Any,
        est: float,
        se: float,
        draws: np.ndarray,
        key: tuple[Any, ...] | None = None,
        square: bool = False,
    ) -> None:
        if prof is None:
            lo, hi = est - z * se, est + z * se
        elif key is None:  # no profile interval for this parameter (covariances)
            lo, hi = np.nan, np.nan
        else:  # sd limits squared for variances (the profile interval is invariant to monotone maps)
            lo, hi = (v * v if square else v for v in prof[key])
        rows.append(
            {
                "kind": kind,
                "name": name,
                "grp": grp,
                "var1": var1,
                "var2": var2,
                "estimate": float(est),
                "se": float(se),
                "low": float(lo),
                "high": float(hi),
            }
        )
        cols.append(draws)

    beta = _draws(post, "beta")
    for j, name in enumerate(spec.fixef_names):
        add("fixef", name, None, None, None, fit.fixef.iloc[j], fit.se.iloc[j], beta[:, j], ("fixef", name))
    vc = _draws(post, "varcorr")
    labels = _labels(post, "varcorr", "component")
    i = 0
    for t in spec.terms:
        first = i  # column of the term's first variance
        for a in t.coef_names:
            r = vcse.iloc[i]
            add("variance", labels[i], t.name, a, None, r.vcov, r.se_vcov, vc[:, i], ("sd", t.name, a), True)
            i += 1
        covs = []
        for ja, a in enumerate(t.coef_names):
            for jb in range(ja + 1, t.q):
                r = vcse.iloc[i]
                add("covariance", labels[i], t.name, a, t.coef_names[jb], r.vcov, r.se_vcov, vc[:, i])
                covs.append((i, ja, jb))
                i += 1
        for k, ja, jb in covs:
            r = vcse.iloc[k]
            cor = vc[:, k] / np.sqrt(vc[:, first + ja] * vc[:, first + jb])  # per draw
            add(
                "correlation",
                labels[k],
                t.name,
                r.var1,
                r.var2,
                r.sdcor,
                r.se_sdcor,
                cor,
                ("cor", t.name, r.var1, r.var2),
            )
    r = vcse.iloc[i]
    add("variance", labels[i], "Residual", None, None, r.vcov, r.se_vcov, vc[:, i], ("sd", "Residual", None), True)
    if spec.residual is not None:
        rp = fit.residual_params()
        proc = _draws(post, "process")
        for j, name in enumerate(_labels(post, "process", "process_param")):
            hit = vcse[(vcse.grp == "process") & (vcse.var1 == name)]
            if name not in rp or hit.empty:
                raise OptionError(
                    f"the posterior's process parameter {name!r} is not one of the fit's "
                    f"{[k for k in rp if k != 'kind']}; sample bayeslmm.bayes.sample(fit.spec, ...)"
                )
            add("process", name, "process", name, None, rp[name], hit.se_vcov.iloc[0], proc[:, j])
    table = pd.DataFrame(rows)
    for key, val in _summaries(np.column_stack(cols), hdi_prob).items():
        table[key] = val
    with np.errstate(divide="ignore", invalid="ignore"):
        table["width_ratio"] = (table.hdi_high - table.hdi_low) / (table.high - table.low)
    for c in ("grp", "var1", "var2"):
        table[c] = table[c].astype(object).where(table[c].notna(), None)
    what = f"Wald {100 * level:g}%" if prof is None else f"profile {100 * level:g}%"
    notes = [
        f"low/high: {what} intervals"
        + (
            " (variances and covariances on the variance scale)"
            if prof is None
            else " (ML profile, as lme4's confint; variances from squared sd limits, none for covariances)"
        ),
        f"posterior: {_draw_count(post)} draws; HDI {100 * hdi_prob:g}%; mode: maximum of a Gaussian KDE; "
        "width ratio = HDI width / interval width",
    ] + ([se_note] if se_note else [])
    columns = {**COMPARE_COLUMNS, "estimate": fit.method}
    return Comparison(table, f"{fit.method} estimates against the posterior ({spec.formula})", columns, tuple(notes))


def _draw_count(post: Any) -> str:
    """``"chains x draws"`` of a posterior, for the notes."""
    shape = dict(post.sizes)
    return f"{shape.get('chain', 1)} x {shape.get('draw', '?')}"


# --------------------------------------------------------------------- compare_ranef
def compare_ranef(fit: Any, idata: Any = None) -> Comparison:
    """BLUPs against the posterior of the random effects, one row per term, coefficient and level.

    Columns: ``term``, ``coef``, ``level``, ``n`` (observations of the level), ``mean_resid``
    (intercept rows: the raw group mean of ``y - X beta_hat``), ``factor`` (the closed-form
    shrinkage ``n_i s_u^2 / (s^2 + n_i s_u^2)`` of a model whose only term is a random intercept,
    with independent errors: there ``blup = factor * mean_resid``; NaN otherwise), ``blup``,
    ``condsd`` (``fit.ranef()``), and with ``idata`` the posterior ``mean`` and ``sd`` of
    ``b_<term>``.

    Parameters
    ----------
    fit
        A fit from :func:`bayeslmm.lmm`.
    idata
        Optional InferenceData of ``bayeslmm.bayes.sample(fit.spec, ...)``.

    Returns
    -------
    Comparison
        ``.table`` with ``sum_k nlevels_k q_k`` rows, terms and coefficients in ``fit.ranef()`` order.
    """
    _check_fit(fit)
    spec = fit.spec
    post = None if idata is None else check_posterior(fit, idata)
    re = fit.ranef(cond_var=True)
    r = spec.y - spec.X @ fit.fixef.to_numpy()
    try:  # the closed form exists for one random intercept with independent errors only
        shrink = fit.shrinkage()
    except DataError:
        shrink = None
    frames = []
    for t in spec.terms:
        n_i = t.counts()
        if post is not None:
            name = f"b_{t.name}"
            if name not in post:
                raise OptionError(f"the posterior has no {name!r}; sample bayeslmm.bayes.sample(fit.spec, ...)")
            if _labels(post, name, f"{t.name}_level") != list(t.levels) or _labels(
                post, name, f"{t.name}_coef"
            ) != list(t.coef_names):
                raise OptionError(
                    f"the levels or coefficients of the posterior's {name!r} are not those of the "
                    f"fit's term {t.name!r}; sample bayeslmm.bayes.sample(fit.spec, ...)"
                )
            b = _draws(post, name)  # (S, nlevels, q)
        for c, coef in enumerate(t.coef_names):
            sel = re[(re.grpvar == t.name) & (re.term == coef)]
            d = {
                "term": t.name,
                "coef": coef,
                "level": list(t.levels),
                "n": n_i,
                "mean_resid": (
                    np.bincount(t.codes, weights=r, minlength=t.nlevels) / n_i if coef == "(Intercept)" else np.nan
                ),
                "factor": shrink.factor.to_numpy() if shrink is not None else np.nan,
                "blup": sel.condval.to_numpy(),
                "condsd": sel.condsd.to_numpy(),
            }
            if post is not None:
                d["mean"], d["sd"] = b[:, :, c].mean(axis=0), b[:, :, c].std(axis=0, ddof=1)
            frames.append(pd.DataFrame(d))
    table = pd.concat(frames, ignore_index=True)
    columns = {k: v for k, v in RANEF_COLUMNS.items() if k in table}
    notes = [
        "mean resid: group mean of y - X beta_hat; factor: n_i s_u^2 / (s^2 + n_i s_u^2) "
        "(one random intercept, independent errors), BLUP = factor x mean resid"
    ]
    if post is not None:
        notes.append(f"post mean/sd: posterior of b ({_draw_count(post)} draws)")
    title = f"BLUPs{' against the posterior' if post is not None else ''} ({spec.formula})"
    return Comparison(table, title, columns, tuple(notes))
