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
    if r0 != r1:
        if r0 is not None:
            raise DataError(f"the models have different residual processes ({r0} and {r1}); they are not nested")
        notes.append(f"the alternative adds a {r1} residual process: no known boundary mixture")
    if alt.npar <= null.npar:
        raise DataError(f"the alternative must have more parameters than the null ({alt.npar} vs {null.npar})")
    return s1.p - s0.p, notes


def boundary_mixture(null: Any, alt: Any, d_fixed: int) -> tuple[list[tuple[float, int]] | None, str | None]:
    """Weights and degrees of freedom of the chi-bar-square null distribution, or a reason there is none."""
    if (null.spec.residual is None) != (alt.spec.residual is None):
        return None, "the residual process differs"
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
            f"null: {self.null['formula']}",
            f"alt:  {self.alt['formula']}",
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
    return {"formula": fit.spec.formula, "method": fit.method, "loglik": fit.loglik, "npar": fit.npar}


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
    data: Any, null: str, alt: str, *, method: str = "REML", residual: str | None = None, **kwargs: Any
) -> LRTResult:
    """Fit ``null`` and ``alt`` to the same rows of ``data`` and test them (the CLI's ``lrt``).

    The rows are those complete for the alternative; the null is fitted to them.
    """
    from ..spec import as_pandas, build_spec
    from ._objective import check_method

    method = check_method(method)
    df = as_pandas(data)
    s1 = build_spec(alt, df, residual=residual)
    s0 = build_spec(null, df.loc[s1.row_index], residual=residual)
    return lrt(fit_model(s0, method), fit_model(s1, method), **kwargs)
