"""lme4-style printed summary, HTML for notebooks, and the JSON form of a fit."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._fit import LMMFit


def abbreviate(name: str, minlength: int) -> str:
    """R's ``abbreviate``: drop lower-case vowels, then lower-case letters, from the right."""
    s = list(name)
    for pool in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        i = len(s) - 1
        while len(s) > minlength and i > 0:
            if s[i] in pool:
                del s[i]
            i -= 1
    return "".join(s[: max(minlength, 1)]) if len(s) > minlength else "".join(s)


def _fmt(x: float, digits: int = 5) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "NA"
    return f"{x:.{digits}g}"


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    rows = [r + [""] * (len(header) - len(r)) for r in rows]  # lower-triangular tables are ragged
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        out = []
        for c, w, a in zip(cells, widths, align):
            out.append(c.ljust(w) if a == "l" else c.rjust(w))
        return " ".join(out).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _fixed_decimals(vals: np.ndarray, digits: int = 5) -> list[str]:
    """Format a column with a common number of decimals (as R's printCoefmat)."""
    finite = np.abs(vals[np.isfinite(vals)])
    if finite.size == 0:
        return ["NA"] * len(vals)
    smallest = max(np.min(finite[finite > 0]) if np.any(finite > 0) else 1.0, 1e-300)
    dec = int(max(0, min(10, digits - 1 - math.floor(math.log10(smallest)))))
    return [f"{v:.{dec}f}" if np.isfinite(v) else "NA" for v in vals]


class Summary:
    """The printed summary of an :class:`LMMFit` in lme4's layout."""

    def __init__(self, fit: LMMFit) -> None:
        self.fit = fit

    # -- pieces -------------------------------------------------------------
    def header(self) -> list[str]:
        f = self.fit
        how = "REML" if f.reml else "maximum likelihood "
        res = f.spec.residual
        cls = "lmerMod" if res is None else f"{res.kind} residuals"
        out = [f"Linear mixed model fit by {how} ['{cls}']", f"Formula: {f.spec.formula}"]
        if res is not None:
            what = "independent errors" if res.independent else str(res)
            vf = f"; variance function {res.variance}" if res.variance is not None else ""
            out.append(f"Residual process: {what}{vf}")
        if f.spec.n_dropped:
            out.append(f"  ({f.spec.n_dropped} observation(s) deleted due to missingness)")
        out.append("")
        if f.reml:
            out.append(f"REML criterion at convergence: {f.criterion:.1f}")
        else:
            df_resid = f.nobs - f.npar
            out += _table(
                ["AIC", "BIC", "logLik", "-2*log(L)", "df.resid"],
                [[f"{f.aic:.1f}", f"{f.bic:.1f}", f"{f.loglik:.1f}", f"{f.criterion:.1f}", str(df_resid)]],
                ["r"] * 5,
            )
        return out

    def residual_quantiles(self) -> list[str]:
        if not self.fit.spec.has_rows:
            return ["Scaled residuals: not computed (fit from sufficient statistics; see fit.fitted_frame)"]
        q = np.quantile(self.fit.residuals(scaled=True), [0, 0.25, 0.5, 0.75, 1])
        table = _table(["Min", "1Q", "Median", "3Q", "Max"], [[f"{v:.4f}" for v in q]], ["r"] * 5)
        title = "Scaled residuals: " if self.fit.spec.residual is None else "Normalized residuals: "
        return [title, *table]

    def random_effects(self) -> list[str]:
        f = self.fit
        vc = f.varcorr()
        has_corr = any(t.q > 1 for t in f.spec.terms)
        rows = []
        for t, D in zip(f.spec.terms, f.cov_matrices().values()):
            sd = np.sqrt(np.diag(D))
            for i in range(t.q):
                corr = []
                for j in range(i):
                    c = D[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else float("nan")
                    corr.append(f"{c:.2f}" if math.isfinite(c) else "NaN")
                row = [t.name if i == 0 else "", t.coef_names[i], _fmt(D[i, i]), _fmt(sd[i], 4)]
                if has_corr:
                    row.append(" ".join(corr))
                rows.append(row)
        res = vc.iloc[-1]
        rows.append(["Residual", "", _fmt(res.vcov), _fmt(res.sdcor, 4)] + ([""] if has_corr else []))
        header = ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if has_corr else [])
        lines = _table(header, rows, ["l", "l", "r", "r"] + (["l"] if has_corr else []))
        groups = ", ".join(f"{g}, {n}" for g, n in f.ngroups.items() if g not in ("(row)", "1"))  # gls; one field
        obs = f"Number of obs: {f.nobs}" + (f", groups:  {groups}" if groups else "")
        out = ["Random effects:", *[" " + s for s in lines], obs]
        res = f.spec.residual
        if res is not None:
            out.append("")
            strat = getattr(getattr(res.structure, "base", res.structure), "strata", None)
            if strat:  # a structure per stratum: say whose variance the Residual row is
                column = getattr(res.structure, "column", None) or res.spec.strata  # type: ignore[union-attr]
                out.append(f"One structure per level of {column}; the Residual row above is {column} = {strat[0]}'s.")
            out += res.structure.describe(res.time, res.group, f.residual_params(), _fmt)
        return out

    def fixed_effects(self) -> list[str]:
        f = self.fit
        if f.spec.p == 0:
            return ["No fixed effect coefficients"]
        est = f.fixef.to_numpy()
        se = f.se.to_numpy()
        t = est / se
        e_s, s_s = _fixed_decimals(est), _fixed_decimals(se)
        rows = [[n, a, b, f"{v:.2f}"] for n, a, b, v in zip(f.spec.fixef_names, e_s, s_s, t)]
        out = ["Fixed effects:", *_table(["", "Estimate", "Std. Error", "t value"], rows, ["l", "r", "r", "r"])]
        if f.spec.dropped_columns:
            out.append(
                f"fixed-effect model matrix is rank deficient so dropping {len(f.spec.dropped_columns)} "
                f"column(s): {', '.join(f.spec.dropped_columns)}"
            )
        return out

    def correlation(self) -> list[str]:
        f = self.fit
        p = f.spec.p
        if p < 2:
            return []
        V = f.vcov.to_numpy()
        s = np.sqrt(np.diag(V))
        C = V / np.outer(s, s)
        names = list(f.spec.fixef_names)
        rows = []
        for i in range(1, p):
            rows.append([abbreviate(names[i], 11)] + [f"{C[i, j]:.3f}" for j in range(i)])
        header = [""] + [abbreviate(n, 6) for n in names[: p - 1]]
        return ["Correlation of Fixed Effects:", *_table(header, rows, ["l"] + ["r"] * (p - 1))]

    def messages(self) -> list[str]:
        rec = self.fit.optimizer
        return [f"optimizer ({rec.optimizer}) convergence note: {m}" for m in rec.messages]

    # -- outputs ------------------------------------------------------------
    def __str__(self) -> str:
        parts = [
            self.header(),
            [""],
            self.residual_quantiles(),
            [""],
            self.random_effects(),
            [""],
            self.fixed_effects(),
        ]
        corr = self.correlation()
        if corr:
            parts += [[""], corr]
        msgs = self.messages()
        if msgs:
            parts += [msgs]
        return "\n".join(line for part in parts for line in part)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        f = self.fit
        vc = f.varcorr()
        coef = f.coef_table()
        head = "".join(f"<div>{html.escape(s)}</div>" for s in self.header() if s)
        msgs = "".join(f"<div style='color:#a00'>{html.escape(m)}</div>" for m in self.messages())
        return (
            f"<div class='bayeslmm-summary'>{head}"
            f"<h4>Random effects</h4>{vc.to_html(index=False, na_rep='', float_format=lambda v: f'{v:.5g}')}"
            f"<div>Number of obs: {f.nobs}; groups: {html.escape(str(f.ngroups))}</div>"
            f"<h4>Fixed effects</h4>{coef.to_html(float_format=lambda v: f'{v:.5g}')}{msgs}</div>"
        )


def _num(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _name(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def fit_to_dict(fit: LMMFit) -> dict[str, Any]:
    """The JSON object of ``bayeslmm fit --json`` (see the README for the fields)."""
    vc = fit.varcorr()
    re = fit.ranef(cond_var=True)
    out: dict[str, Any] = {
        "formula": fit.spec.formula,
        "method": fit.method,
        "nobs": fit.nobs,
        "n_dropped": fit.spec.n_dropped,
        "ngroups": fit.ngroups,
        "converged": fit.converged,
        "singular": fit.singular,
        "fit_seconds": fit.fit_seconds,
        "fixef": {k: _num(v) for k, v in fit.fixef.items()},
        "se": {k: _num(v) for k, v in fit.se.items()},
        "vcov": fit.vcov.to_numpy().tolist(),
        "dropped_columns": list(fit.spec.dropped_columns),
        "varcorr": [
            {"grp": r.grp, "var1": _name(r.var1), "var2": _name(r.var2), "vcov": _num(r.vcov), "sdcor": _num(r.sdcor)}
            for r in vc.itertuples(index=False)
        ],
        "sigma": fit.sigma,
        "theta": fit.theta.tolist(),
        "psi": fit.psi.tolist(),
        "loglik": fit.loglik,
        "aic": fit.aic,
        "bic": fit.bic,
        "npar": fit.npar,
        "ranef": [
            {"grpvar": r.grpvar, "term": r.term, "grp": r.grp, "condval": _num(r.condval), "condsd": _num(r.condsd)}
            for r in re.itertuples(index=False)
        ],
        "optimizer": fit.optimizer.as_dict(),
    }
    out["reml_criterion" if fit.reml else "deviance"] = fit.criterion
    out["residual"] = _clean(fit.residual_report())
    out["variance"] = _clean(fit.variance_report())  # None without a variance function
    out["marginal_cov"] = _clean(_marginal_cov(fit))
    out["df"] = _satterthwaite(fit)
    out["vc_se"], note = _vc_se(fit)
    if note:
        out["vc_se_note"] = note
    return out


def _clean(obj: Any) -> Any:
    """JSON-ready: NumPy values as Python ones, NaN and infinity as None, text kept."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    return _num(obj)


def _marginal_cov(fit: LMMFit) -> dict[str, Any] | None:
    from ._structures import marginal_cov_report

    return marginal_cov_report(fit)


def _satterthwaite(fit: LMMFit) -> dict[str, float | None]:
    from ._inference import satterthwaite_df

    _, _, df, names = satterthwaite_df(fit)
    return {k: _num(v) for k, v in zip(names, df)}


def _vc_se(fit: LMMFit) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Rows of ``fit.vc_se()``, or None and the reason (too many random effects, large groups)."""
    from .._errors import DataError

    try:
        se = fit.vc_se()
    except DataError as e:
        return None, str(e)
    return [
        {
            "grp": r.grp,
            "var1": _name(r.var1),
            "var2": _name(r.var2),
            "se_vcov": _num(r.se_vcov),
            "se_sdcor": _num(r.se_sdcor),
            "unreliable": bool(r.unreliable),
        }
        for r in se.itertuples(index=False)
    ], None
