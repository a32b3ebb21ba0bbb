"""Likelihood-ratio tests of nested models, done right.

* The two fits must use the same rows and be nested (fixed-effect columns of the null in
  the span of the alternative's; every null random-effect term inside one of the
  alternative's; the same residual process).
* REML likelihoods are not comparable across fixed effects: when the fixed parts differ and a
  fit is REML, both are refitted by ML and the result says so (as lme4's ``anova``).
* A variance component set to 0 under the null sits on the boundary of the parameter space:
  the statistic's null distribution is a chi-bar-square mixture. Known cases (Self and Liang
  1987; Stram and Lee 1994), shifted by the number of fixed effects tested ``d``:

  - one new variance (a new term with one column): ``0.5 chi2_d + 0.5 chi2_(d+1)``;
  - ``m`` new independent variances: ``sum_j C(m, j) 2^-m chi2_(d+j)`` (exact when their
    estimators are asymptotically independent);
  - a term extended from ``q`` to ``q + 1`` correlated columns: ``0.5 chi2_(d+q) + 0.5 chi2_(d+q+1)``.

  Otherwise ``p_boundary`` is None and ``notes`` say why. A parametric bootstrap gives a
  p value that needs no such theory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..cov import VARIANCE_FUNCTIONS


def fit_model(spec: Any, method: str, start: Any = None) -> Any:
    """Fit any model the engines know: with random effects or a process, or a plain linear model."""
    from ._fit import fit_spec
    from ._linear import LinearFit

    if not spec.terms and spec.residual is None:
        return LinearFit(spec, method)
    return fit_spec(spec, method=method, start=start)


def _groups(spec: Any) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for t in spec.terms:
        out.setdefault(t.group, []).append(t.coef_names)
    return out


def _check_nested(null: Any, alt: Any) -> tuple[int, list[str]]:
    """Raise unless ``null`` is nested in ``alt``; return the number of fixed effects tested."""
    s0, s1 = null.spec, alt.spec
    if s0.n != s1.n or not np.array_equal(s0.row_index, s1.row_index) or not np.array_equal(s0.y, s1.y):
        raise DataError(
            f"the models were fitted to different rows or responses ({s0.n} and {s1.n} observations): "
            "a likelihood-ratio test needs the same data; drop rows with missing values in either model's "
            "columns before fitting both"
        )
    if s0.p:
        coef, *_ = np.linalg.lstsq(s1.X, s0.X, rcond=None)
        gap = np.linalg.norm(s1.X @ coef - s0.X) / max(np.linalg.norm(s0.X), 1e-300)
        if gap > 1e-8:
            raise DataError("the null model's fixed effects are not nested in the alternative's")
    g0, g1 = _groups(s0), _groups(s1)
    for g, terms in g0.items():
        for cn in terms:
            if not any(set(cn) <= set(c1) for c1 in g1.get(g, [])):
                raise DataError(
                    f"the null model's random-effect term for {g!r} ({', '.join(cn)}) is not in the "
                    "alternative; the models are not nested"
                )
    r0 = None if s0.residual is None else s0.residual.kind
    r1 = None if s1.residual is None else s1.residual.kind
    notes = []
    if r0 is None and r1 is not None:
        notes.append(f"the alternative adds a {r1} residual process: no known boundary mixture")
    elif r1 is None and r0 is not None:
        raise DataError(
            f"the null model has a residual structure ({s0.residual}) and the alternative has independent "
            "errors; they are not nested (swap them if the alternative is the independent-errors model's extension)"
        )
    elif r0 is not None and _residual_text(s0) != _residual_text(s1):
        why = _why_not_nested(null, alt)
        if why is not None:
            raise DataError(
                f"the null's residual structure {_residual_text(s0)} is not nested in the alternative's "
                f"{_residual_text(s1)}: {why}"
            )
    if alt.npar <= null.npar:
        raise DataError(f"the alternative must have more parameters than the null ({alt.npar} vs {null.npar})")
    return s1.p - s0.p, notes


#: structures by visit (same visit factor) that contain each structure as a special case (SAS's and
#: mmrm's usual chain: cs < csh < us, cs < toep < toeph < us, ar1 < ar1h < toeph < us, diag < csh, ar1h)
NESTED_IN: dict[str, frozenset[str]] = {
    "cs": frozenset({"csh", "toep", "toeph", "us"}),
    "csh": frozenset({"us"}),
    "toep": frozenset({"toeph", "us"}),
    "toeph": frozenset({"us"}),
    "ar1h": frozenset({"toeph", "us"}),
    "diag": frozenset({"csh", "ar1h", "toeph", "us"}),
    "ar1": frozenset({"ar1h", "toep", "toeph", "us"}),
}
#: the structure with a variance per visit that a structure with one variance becomes with ``ident(visit)``
HETEROGENEOUS = {"cs": "csh", "toep": "toeph", "ar1": "ar1h", "iid": "diag"}
#: the kinds whose nested special cases sit inside the parameter space (a correlation 0 or equal
#: variances or correlations): the chi-square p value of the LRT applies
_INTERIOR = frozenset(NESTED_IN) | frozenset({"us"})


def _residual_text(spec: Any) -> str:
    res = spec.residual
    if res is None:
        return "iid"
    v = res.variance
    return str(res) + (f", variance {v}" if v is not None else "")


def _consecutive(null_res: Any, alt_res: Any) -> bool:
    """Whether, in the null's time order within each group, the alternative's visit indices step by 1
    (then ``ar1`` by order equals ``ar1h`` with equal variances, by visit index)."""
    codes, t = null_res.codes, null_res.t
    order = np.lexsort((np.arange(codes.size), t, codes))
    v = alt_res.feats["visit"][order]
    same = codes[order][1:] == codes[order][:-1]
    return bool(np.all(np.diff(v)[same] == 1))


def _why_not_nested(null: Any, alt: Any) -> str | None:
    """None where the null's residual structure is a special case of the alternative's, else why not."""
    r0, r1 = null.spec.residual, alt.spec.residual
    a, b = r0.spec, r1.spec
    k0, k1 = a.kind, b.kind
    # independent errors with a variance function ("iid") are inside a structure of any grouping
    if k0 != "iid" and a.factors != b.factors:
        return f"they group by different factors ({r0.group} and {r1.group})"
    if a.strata is not None and a.strata != b.strata:
        return f"the null has one structure per {a.strata} and the alternative does not"
    v0, v1 = a.variance, b.variance
    hetero = False
    if v0 is not None and (v1 is None or str(v0) != str(v1)):
        visit_col = b.lhs[0] if b.lhs else None
        if v1 is None and VARIANCE_FUNCTIONS[v0.kind].per_level and v0.column == visit_col and k0 in HETEROGENEOUS:
            hetero = True  # e.g. cs with ident(visit) is csh
        else:
            return f"the null's variance function {v0} is not in the alternative ({v1 or 'none'})"
    if k0 == "iid":
        if not hetero or k1 in ("diag", *NESTED_IN["diag"]):
            return None
        return f"independent errors with {v0} are diag, which is not a special case of {k1}"
    if k0 == k1 and not hetero:
        if dict(a.options).get("nugget", True) and not dict(b.options).get("nugget", True):
            return "the null has a nugget and the alternative has none"
        if a.lhs != b.lhs and k0 != "cs":
            return f"they use different columns left of '|' ({a.time} and {b.time})"
        return None
    target = HETEROGENEOUS[k0] if hetero else k0
    if k1 != target and k1 not in NESTED_IN.get(target, frozenset()):
        inside = sorted({target, *NESTED_IN.get(target, frozenset())} - {k0})
        what = f"{k0} with {v0}" if hetero else k0
        if not inside:
            return f"{what} is not a special case of {k1} (is {k1} the null? then swap the models)"
        return f"{what} is a special case of {', '.join(inside)} (by the same visit factor), not of {k1}"
    if k0 == "cs":  # the left of '|' only names the syntax
        return None
    if k0 == "ar1":
        if not _consecutive(r0, r1):
            return (
                f"ar1 correlates observations by their order and {k1} by the visit index: they agree only where "
                "no subject skips a visit, and here some do"
            )
        return None
    if a.lhs != b.lhs:
        return f"they use different visit factors ({a.time} and {b.time})"
    return None


def nested_residual(null: Any, alt: Any) -> bool:
    """Whether the null's residual structure is the alternative's or a special case of it (same rows not checked)."""
    r0, r1 = null.spec.residual, alt.spec.residual
    if r0 is None:
        return True
    if r1 is None:
        return False
    if _residual_text(null.spec) == _residual_text(alt.spec):
        return True
    return _why_not_nested(null, alt) is None


def boundary_mixture(null: Any, alt: Any, d_fixed: int) -> tuple[list[tuple[float, int]] | None, str | None]:
    """Weights and degrees of freedom of the chi-bar-square null distribution, or a reason there is none."""
    if (null.spec.residual is None) != (alt.spec.residual is None):
        return None, "the residual process differs"
    if null.spec.residual is not None and _residual_text(null.spec) != _residual_text(alt.spec):
        if _groups(null.spec) != _groups(alt.spec):
            return None, "the random effects and the residual structure differ at once"
        a, b = null.spec.residual.spec, alt.spec.residual.spec
        if a.kind == b.kind and dict(a.options).get("nugget", True) != dict(b.options).get("nugget", True):
            # nugget = 0 is the edge of [0, 1): one parameter on the boundary (Self and Liang 1987)
            return [(0.5, d_fixed), (0.5, d_fixed + 1)], None
        if a.kind in _INTERIOR or a.kind == b.kind:
            return None, (
                "the null's covariance parameters are inside the alternative's parameter space (equal variances "
                "or correlations): the chi-square p value applies"
            )
        return None, f"{a.kind} inside {b.kind}: no known boundary mixture"
    g0, g1 = _groups(null.spec), _groups(alt.spec)
    new_scalar = 0
    extended = []
    for g, terms in g1.items():
        old = list(g0.get(g, []))
        for cn in terms:
            match = [c for c in old if set(c) <= set(cn)]
            if not match:
                if len(cn) == 1:
                    new_scalar += 1
                    continue
                return None, f"a new term with {len(cn)} correlated columns for {g!r}"
            best = max(match, key=len)
            old.remove(best)
            if len(cn) > len(best):
                extended.append((len(best), len(cn)))
    if new_scalar and extended:
        return None, "new variances and extended terms at once"
    if extended:
        if len(extended) > 1 or extended[0][1] != extended[0][0] + 1:
            return None, "more than one column added to a term"
        q = extended[0][0]
        return [(0.5, d_fixed + q), (0.5, d_fixed + q + 1)], None
    if new_scalar:
        m = new_scalar
        return [(math.comb(m, j) / 2**m, d_fixed + j) for j in range(m + 1)], None
    return None, "no variance component is on the boundary under the null"


def _mixture_sf(stat: float, mixture: list[tuple[float, int]]) -> float:
    import scipy.stats

    return float(sum(w * (float(stat <= 0) if d == 0 else scipy.stats.chi2.sf(stat, d)) for w, d in mixture))


@dataclass
class LRTResult:
    """The test: statistic, df, naive and boundary-corrected p values, optional bootstrap."""

    statistic: float
    df: int
    p: float
    p_boundary: float | None
    mixture: list[tuple[float, int]] | None
    refit: str | None
    null: dict[str, Any]
    alt: dict[str, Any]
    p_bootstrap: float | None = None
    n_bootstrap: int | None = None
    bootstrap_statistics: np.ndarray | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``bayeslmm lrt --json``."""
        out = {
            "lrt": self.statistic,
            "df": self.df,
            "p": self.p,
            "p_boundary": self.p_boundary,
            "mixture": None if self.mixture is None else [{"weight": w, "df": d} for w, d in self.mixture],
            "refit": self.refit,
            "null": self.null,
            "alt": self.alt,
            "notes": self.notes,
        }
        if self.n_bootstrap:
            out.update(p_bootstrap=self.p_bootstrap, n_bootstrap=self.n_bootstrap)
        return out

    def table(self) -> pd.DataFrame:
        """lme4 ``anova``-style table."""
        rows = [
            {
                "npar": self.null["npar"],
                "logLik": self.null["loglik"],
                "Chisq": np.nan,
                "Df": np.nan,
                "Pr(>Chisq)": np.nan,
            },
            {
                "npar": self.alt["npar"],
                "logLik": self.alt["loglik"],
                "Chisq": self.statistic,
                "Df": self.df,
                "Pr(>Chisq)": self.p,
            },
        ]
        return pd.DataFrame(rows, index=["null", "alt"])

    def __str__(self) -> str:
        lines = [
            f"Likelihood-ratio test{' (models refitted with ML)' if self.refit else ''}",
            f"null: {self.null['formula']}"
            + (f", residual {self.null['residual']}" if "residual" in self.null else ""),
            f"alt:  {self.alt['formula']}" + (f", residual {self.alt['residual']}" if "residual" in self.alt else ""),
            "",
            self.table().to_string(float_format=lambda v: f"{v:.6g}"),
            "",
        ]
        if self.p_boundary is not None and self.mixture is not None:  # set together (boundary_mixture)
            mix = " + ".join(f"{w:g} chi2_{d}" for w, d in self.mixture)
            lines.append(f"boundary-corrected p (null distribution {mix}): {self.p_boundary:.6g}")
        if self.n_bootstrap:
            lines.append(f"parametric bootstrap p ({self.n_bootstrap} samples): {self.p_bootstrap:.6g}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return "<pre>" + str(self).replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


def _summary(fit: Any) -> dict[str, Any]:
    out = {"formula": fit.spec.formula, "method": fit.method, "loglik": fit.loglik, "npar": fit.npar}
    if fit.spec.residual is not None:
        out["residual"] = _residual_text(fit.spec)
    return out


def lrt(
    null: Any,
    alt: Any,
    *,
    bootstrap: int = 0,
    seed: int | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
) -> LRTResult:
    """Likelihood-ratio test of ``null`` against ``alt`` (fits of nested models).

    Parameters
    ----------
    null, alt
        Fitted models (:func:`bayeslmm.lmm`, or :func:`bayeslmm.lm` for a null without
        random effects).
    bootstrap
        Number of parametric-bootstrap samples (simulate from the null, refit both).
    seed, n_jobs, progress
        See :func:`bayeslmm.freq._bootstrap.parallel_replicates`.
    """
    import scipy.stats  # here, not at import time: it takes half a second to load

    d_fixed, notes = _check_nested(null, alt)
    refit = None
    if d_fixed and (null.reml or alt.reml) and _residual_text(null.spec) != _residual_text(alt.spec):
        raise DataError(
            "REML likelihoods are comparable only between models with the same fixed effects, and these differ "
            f"in their fixed effects and in their residual structure ({_residual_text(null.spec)} and "
            f"{_residual_text(alt.spec)}): compare residual structures with one fixed-effect formula, or fit "
            "both models by ML (method='ML') to test both changes at once"
        )
    if (d_fixed and (null.reml or alt.reml)) or null.method != alt.method:
        null, alt = fit_model(null.spec, "ML"), fit_model(alt.spec, "ML")
        refit = "ML"
        notes.append("REML likelihoods are not comparable across fixed effects: both models refitted by ML")
    stat = max(0.0, 2.0 * (alt.loglik - null.loglik))
    df = alt.npar - null.npar
    p = float(scipy.stats.chi2.sf(stat, df))
    mixture, why = boundary_mixture(null, alt, d_fixed)
    if mixture is None and why:
        notes.append(f"boundary-corrected p not given: {why}")
    p_boundary = None if mixture is None else _mixture_sf(stat, mixture)
    res = LRTResult(stat, df, p, p_boundary, mixture, refit, _summary(null), _summary(alt), notes=notes)
    if bootstrap:
        from ._bootstrap import parallel_replicates

        def one(rng: np.random.Generator) -> float:
            y = null.simulate(1, seed=rng)[:, 0]
            return max(0.0, 2.0 * (alt.refit(y).loglik - null.refit(y).loglik))

        stats = np.array(parallel_replicates(one, int(bootstrap), seed=seed, n_jobs=n_jobs, progress=progress))
        res.bootstrap_statistics = stats
        res.n_bootstrap = int(bootstrap)
        res.p_bootstrap = float((1 + np.sum(stats >= stat - 1e-10)) / (1 + stats.size))
    return res


def lrt_formulas(
    data: Any,
    null: str,
    alt: str,
    *,
    method: str = "REML",
    residual: str | None = None,
    variance: str | None = None,
    null_residual: str | None = None,
    alt_residual: str | None = None,
    null_variance: str | None = None,
    alt_variance: str | None = None,
    **kwargs: Any,
) -> LRTResult:
    """Fit ``null`` and ``alt`` to the same rows of ``data`` and test them (the CLI's ``lrt``).

    ``residual``/``variance`` apply to both models; ``null_residual``, ``alt_residual``, ``null_variance``,
    ``alt_variance`` replace them for one (``cs`` against ``us`` with one formula: a test of the covariance
    structure). The rows are those complete for the alternative; the null is fitted to them.
    """
    from ..spec import as_pandas, build_spec
    from ._objective import check_method

    method = check_method(method)
    df = as_pandas(data)
    r0 = residual if null_residual is None else null_residual
    r1 = residual if alt_residual is None else alt_residual
    v0 = variance if null_variance is None else null_variance
    v1 = variance if alt_variance is None else alt_variance
    s1 = build_spec(alt, df, residual=r1, variance=v1)
    s0 = build_spec(null, df.loc[s1.row_index], residual=r0, variance=v0)
    return lrt(fit_model(s0, method), fit_model(s1, method), **kwargs)
