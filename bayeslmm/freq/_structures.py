"""Residual structures as results: their reported estimates, the implied marginal covariance of one
subject, and a table comparing several structures for one mean model (SAS's and mmrm's usual
model selection: fit ``us``, ``toeph``, ``ar1h``, ``cs`` ... by REML, compare AIC/BIC and test the
nested pairs).

* :func:`residual_report`: ``fit --json``'s ``residual``: ``kind`` and the structure's estimates in
  the parameterisation of the docs (``us``: ``levels``, ``cov``, ``sd``, ``corr``; spatial:
  ``range``, ``nugget``, ``sill``; a stratified structure: ``by`` and one report per stratum);
* :func:`variance_report`: the variance function's estimates (``ratios`` or ``delta``), or None;
* :func:`marginal_cov`: ``V_i = Z_i D Z_i' + R_i`` of one subject, labelled by its rows: for a
  structure by visit a subject with every visit (all visit levels in order), otherwise the group
  with the most observations;
* :func:`compare_structures`: one row per structure with the number of parameters, the (restricted)
  log-likelihood, AIC, BIC, convergence and, on request, the likelihood-ratio test of nested pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._errors import DataError, OptionError
from ..cov import VARIANCE_FUNCTIONS
from ._grouped import _blockdiag

if TYPE_CHECKING:
    from ._fit import LMMFit


# -- the structure's estimates ---------------------------------------------------------------------
def _natural(fit: LMMFit) -> dict[str, float]:
    obj = fit.objective
    return fit.spec.residual.structure.natural(obj.split(fit.psi)[1], fit.scale2)  # type: ignore[union-attr,attr-defined]


def residual_report(fit: LMMFit) -> dict[str, Any]:
    """``{"kind": ..., **structure.report(nat)}``; ``{"kind": "iid", "sigma2": ...}`` for independent errors."""
    res = fit.spec.residual
    if res is None:
        return {"kind": "iid", "sigma2": fit.sigma2}
    s = res.structure
    return {"kind": s.name, **s.report(_natural(fit))}


def variance_report(fit: LMMFit) -> dict[str, Any] | None:
    """The variance function's estimates (``{"kind": "ident", "column", "ratios": {level: sd ratio}}`` or
    ``{"kind": "power" | "exp", "column", "delta"}``), or None without one."""
    from ..cov import Heteroscedastic

    res = fit.spec.residual
    if res is None or not isinstance(res.structure, Heteroscedastic):
        return None
    return res.structure.variance_report(_natural(fit))


# -- the marginal covariance of one subject ----------------------------------------------------------
#: rows of ``marginal_cov`` in ``fit --json`` (a spatial field of one group can have thousands)
JSON_ROWS = 100


def _parts(structure: Any) -> tuple[Any, Any, Any]:
    """``(variance function or None, Stratified or None, the (first) base structure)``."""
    from ..cov import Heteroscedastic, Stratified

    vf = None
    if isinstance(structure, Heteroscedastic):
        vf, structure = structure.vf, structure.base
    strat = structure if isinstance(structure, Stratified) else None
    base = strat.bases[0] if strat is not None else structure
    return vf, strat, base


def _fmt_num(x: float) -> str:
    return f"{x:.6g}"


def _row_labels(res: Any, base: Any, feats: dict[str, np.ndarray]) -> list[str]:
    """Labels of rows: visit labels, times, or coordinates ``(x, y)``."""
    lhs = getattr(base, "lhs", "any")
    if "visit" in feats and lhs == "visit":
        return [res.labels["visit"][int(v)] for v in feats["visit"]]
    if "coords" in feats:
        return ["(" + ", ".join(_fmt_num(c) for c in row) + ")" for row in np.atleast_2d(feats["coords"])]
    if not res.independent and res.spec is not None and res.spec.lhs:
        if lhs == "any" and "visit" in res.labels:
            return [res.labels["visit"][int(v)] for v in feats["t"]]
        return [_fmt_num(float(v)) for v in feats["t"]]
    return []


def _one(fit: LMMFit, group: str | None, stratum: int | None, max_rows: int | None) -> dict[str, Any]:
    """``{"group", "rows", "cov", "complete"}`` for one subject (module docstring)."""
    from ..cov import VisitStructure

    res = fit.spec.residual
    assert res is not None
    s = res.structure
    vf, strat, base = _parts(s)
    codes = res.codes
    G = len(res.levels)
    sizes = np.bincount(codes, minlength=G)
    eligible = np.ones(G, bool)
    if stratum is not None:
        st = res.feats["stratum"].astype(np.int64)
        per = np.full(G, -1)
        per[codes] = st
        eligible = per == stratum
        if strat is not None:
            base = strat.bases[stratum]
    terms = fit.spec.terms
    nat = _natural(fit)
    by_visit = isinstance(base, VisitStructure)
    g: int | None
    if group is not None:
        lookup = {lev: i for i, lev in enumerate(res.levels)}
        if str(group) not in lookup:
            raise DataError(f"group {group!r} is not a level of {res.group!r}")
        g = lookup[str(group)]
    elif by_visit and np.any(eligible & (sizes == base.m)):
        g = int(np.flatnonzero(eligible & (sizes == base.m))[0])  # a subject with every visit
    elif (
        by_visit
        and not terms
        and (
            vf is None
            or (VARIANCE_FUNCTIONS[vf.kind].per_level and res.spec is not None and vf.column == res.spec.lhs[0])
        )
    ):
        g = None  # no subject has every visit, but the covariance depends on the visit alone
    else:
        if not eligible.any():
            raise DataError("no group to show")
        g = int(np.flatnonzero(eligible)[np.argmax(sizes[eligible])])  # the most observations, first on ties
    if g is None:
        m = base.m
        feats: dict[str, np.ndarray] = {"visit": np.arange(m, dtype=float), "t": np.arange(m, dtype=float)}
        if "stratum" in res.feats:
            feats["stratum"] = np.full(m, float(stratum or 0))
        if "vf" in res.feats:
            feats["vf"] = np.arange(m, dtype=float)
        V = np.asarray(s.matrix(feats, nat), dtype=float)
        return {"group": None, "rows": list(base.visits), "cov": V, "complete": True}
    rows = np.flatnonzero(codes == g)
    rows = rows[np.lexsort((rows, res.t[rows]))]
    total = rows.size
    rows = rows[:max_rows]  # the first rows in time order: the matrix of a subset is the submatrix
    feats = {k: v[rows] for k, v in res.feats.items()}
    V = np.asarray(s.matrix(feats, nat), dtype=float)
    if terms:
        Z = np.hstack([t.Zraw[rows] for t in terms])
        D = _blockdiag(list(fit.cov_matrices().values()))
        V = V + Z @ D @ Z.T
    labels = _row_labels(res, base, feats) or [str(i) for i in fit.spec.row_index[rows]]
    complete = bool(by_visit and total == base.m)
    return {
        "group": res.levels[g],
        "rows": labels,
        "cov": V,
        "complete": complete or not by_visit,
        "truncated": rows.size < total,
    }


def _independent(fit: LMMFit, group: str | None, max_rows: int | None) -> dict[str, Any]:
    """``V_i = Z_i D Z_i' + sigma^2 I`` of a model with independent errors and one grouping factor."""
    spec = fit.spec
    factors = {t.factors for t in spec.terms}
    if len(factors) != 1:
        raise DataError(
            "the marginal covariance is block diagonal by one grouping factor only: this model has "
            f"{len(factors)} grouping factors ({', '.join(t.group for t in spec.terms)}), so V is not one "
            "matrix per group"
        )
    t0 = spec.terms[0]
    sizes = np.bincount(t0.codes, minlength=t0.nlevels)
    if group is None:
        g = int(np.argmax(sizes))
    else:
        lookup = {lev: i for i, lev in enumerate(t0.levels)}
        if str(group) not in lookup:
            raise DataError(f"group {group!r} is not a level of {t0.group!r}")
        g = lookup[str(group)]
    rows = np.flatnonzero(t0.codes == g)
    total = rows.size
    rows = rows[:max_rows]
    Z = np.hstack([t.Zraw[rows] for t in spec.terms])
    D = _blockdiag(list(fit.cov_matrices().values()))
    V = Z @ D @ Z.T + fit.sigma2 * np.eye(rows.size)
    labels = [str(i) for i in spec.row_index[rows]]
    return {"group": t0.levels[g], "rows": labels, "cov": V, "complete": True, "truncated": rows.size < total}


def marginal_cov(
    fit: LMMFit, group: str | None = None, stratum: str | None = None, max_rows: int | None = None
) -> pd.DataFrame:
    """``V_i = Z_i D Z_i' + R_i``: the marginal covariance of one subject's observations, labelled.

    For a structure by visit (``us``, ``csh``, ...) a subject with every visit, rows and columns the visit
    levels in order (with no such subject and a covariance of the visit alone, the matrix of a complete
    subject all the same); otherwise the group with the most observations (rows labelled by their time,
    coordinates, or row index). ``group`` picks a subject; ``stratum`` a level of the strata of
    ``us(visit | arm/id)`` (default the first); ``max_rows`` keeps the first rows of a large group (in time
    order). ``attrs``: ``group`` (None for a hypothetical complete subject), ``complete`` (every visit
    present), ``truncated`` (``max_rows`` cut the group) and, for strata, ``stratum``.
    """
    fit._need_rows("the marginal covariance of a subject needs the rows")
    res = fit.spec.residual
    if res is None:
        if not fit.spec.terms:
            raise DataError("the model has no random effects and no residual structure: V = sigma^2 I")
        out = _independent(fit, group, max_rows)
        st = None
    else:
        _, strat, _ = _parts(res.structure)
        code: int | None = None
        if strat is not None:
            labels = list(strat.strata)
            if stratum is None:
                code = 0
            elif str(stratum) in labels:
                code = labels.index(str(stratum))
            else:
                raise DataError(f"stratum {stratum!r} is not a level of {strat.column!r} ({', '.join(labels)})")
            if group is not None:
                code = None  # the subject's own stratum
        elif stratum is not None:
            raise OptionError("stratum= is for a structure per stratum, us(visit | arm/id)")
        out = _one(fit, group, code, max_rows)
        st = None if strat is None or code is None else strat.strata[code]
        if strat is not None and group is not None:
            per = res.feats["stratum"][res.codes == list(res.levels).index(str(group))]
            st = strat.strata[int(per[0])]
    frame = pd.DataFrame(out["cov"], index=out["rows"], columns=out["rows"])
    frame.attrs.update(group=out["group"], complete=out["complete"], truncated=out.get("truncated", False))
    if st is not None:
        frame.attrs["stratum"] = st
    return frame


def marginal_cov_report(fit: LMMFit) -> dict[str, Any] | None:
    """``fit --json``'s ``marginal_cov``: ``{"group", "rows", "complete", "cov"}``, per stratum for a
    structure per stratum (``{"by", "strata": {level: ...}}``); None where ``V`` is not block diagonal by
    one factor (crossed random effects) or has no rows."""

    def entry(frame: pd.DataFrame) -> dict[str, Any]:
        return {
            "group": frame.attrs.get("group"),
            "rows": [str(r) for r in frame.index],
            "complete": bool(frame.attrs.get("complete", True)),
            "truncated": bool(frame.attrs.get("truncated", False)),
            "cov": frame.to_numpy().tolist(),
        }

    if not fit.spec.has_rows:
        return None
    res = fit.spec.residual
    try:
        if res is not None:
            _, strat, _ = _parts(res.structure)
            if strat is not None:
                return {
                    "by": strat.column,
                    "strata": {lab: entry(marginal_cov(fit, stratum=lab, max_rows=JSON_ROWS)) for lab in strat.strata},
                }
        return entry(marginal_cov(fit, max_rows=JSON_ROWS))
    except DataError:
        return None


# -- comparing structures -----------------------------------------------------------------------------
def _structure_text(s: str, visit: Any, group: str | None) -> str | None:
    """A full structure text from a bare name and ``visit``/``group`` (None: independent errors)."""
    text = str(s).strip()
    if text.lower() in ("", "iid"):
        return None
    if "(" in text:
        return text
    if visit is None or group is None:
        raise OptionError(
            f"structure {text!r} is a bare name: give visit= and group= (--visit and --group on the command "
            "line): the visit factor (or the time, or the coordinates) and the subject factor ('arm/id' for one "
            f"structure per arm, '1' for one group); or write it in full, e.g. '{text}(visit | id)'"
        )
    lhs = " + ".join(visit) if isinstance(visit, (list, tuple)) else str(visit)
    return f"{text}({lhs} | {group})"


def compare_structures(
    formula: str,
    data: Any,
    structures: Sequence[str],
    *,
    visit: str | Sequence[str] | None = None,
    group: str | None = None,
    method: str = "REML",
    variance: str | None = None,
    lrt: bool | Sequence[tuple[Any, Any]] = False,
    return_fits: bool = False,
) -> Any:
    """Fit one mean model with each residual structure and compare them (SAS's and mmrm's model selection).

    Parameters
    ----------
    formula
        The model, as for :func:`bayeslmm.lmm` (random-effect terms allowed; without them each fit is
        nlme's ``gls``).
    structures
        Structure texts (``"us(visit | id)"``, ``"exp(x + y | 1, nugget=false)"``) or bare names
        (``"us"``, ``"toeph"``, ``"ar1h"``, ``"cs"``: then ``visit`` and ``group`` say the columns);
        ``"iid"`` for independent errors.
    visit, group
        The left and right of ``|`` for bare names (``visit`` a list for coordinates).
    method
        ``"REML"`` (default: the fixed effects are the same, so REML likelihoods compare) or ``"ML"``.
    variance
        A variance function for every structure (``"ident(visit)"``, ...).
    lrt
        ``True``: test each structure against the one before it where that one is nested in it (rows
        that are not: NaN); or ``(null, alt)`` pairs, by structure text/name or position, each one
        nested (else :class:`DataError`). Adds ``vs``, ``Chisq``, ``Df``, ``Pr(>Chisq)``.
    return_fits
        Also return the fits, in the order of the rows.

    Returns
    -------
    DataFrame with ``structure``, ``npar_cov`` (covariance parameters, the scale included), ``npar``
    (with the fixed effects), ``loglik`` ((restricted) log-likelihood), ``AIC``, ``BIC``,
    ``converged``; rows in the order given. With ``return_fits``: ``(table, fits)``.
    """
    from ..spec import as_pandas, build_spec
    from ._lrt import fit_model, nested_residual
    from ._lrt import lrt as lrt_test
    from ._objective import check_method

    method = check_method(method)
    if isinstance(structures, str):
        structures = [structures]
    if not structures:
        raise OptionError("give at least one residual structure to compare")
    texts = [_structure_text(s, visit, group) for s in structures]
    names = [_label(t, variance) for t in texts]
    pairs: list[tuple[int, int]] = []
    strict = lrt is not True
    if lrt is True:
        pairs = [(i - 1, i) for i in range(1, len(texts))]
    elif lrt:
        pairs = [(_position(a, names, texts, structures), _position(b, names, texts, structures)) for a, b in lrt]
        alts = [b for _, b in pairs]
        if len(set(alts)) < len(alts):
            raise OptionError(
                "each structure is the alternative of at most one test in the table; use bayeslmm.lrt(null, alt) "
                "on the fits (return_fits=True) for more"
            )
    df = as_pandas(data)
    specs = [build_spec(formula, df, residual=t, variance=variance) for t in texts]
    common = specs[0].row_index
    for sp in specs[1:]:
        common = np.intersect1d(common, sp.row_index)
    if any(sp.n != common.size for sp in specs):  # a structure's columns drop other rows: use those all keep
        sub = df.loc[common]
        specs = [build_spec(formula, sub, residual=t, variance=variance) for t in texts]
    fits = [fit_model(sp, method) for sp in specs]
    rows = []
    for name, fit in zip(names, fits):
        rows.append(
            {
                "structure": name,
                "npar_cov": int(fit.npar - fit.spec.p),
                "npar": int(fit.npar),
                "loglik": float(fit.loglik),
                "AIC": float(-2 * fit.loglik + 2 * fit.npar),
                "BIC": float(-2 * fit.loglik + np.log(fit.nobs) * fit.npar),
                "converged": bool(getattr(fit, "converged", True)),
            }
        )
    table = pd.DataFrame(rows)
    if lrt is not False and lrt is not None:
        k = len(fits)
        vs: list[str | None] = [None] * k
        stat, dfs, pv = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
        for i0, i1 in pairs:
            if not strict and (fits[i0].npar >= fits[i1].npar or not nested_residual(fits[i0], fits[i1])):
                continue
            r = lrt_test(fits[i0], fits[i1])
            vs[i1], stat[i1], dfs[i1], pv[i1] = names[i0], r.statistic, r.df, r.p
        table["vs"] = vs
        table["Chisq"] = stat
        table["Df"] = dfs
        table["Pr(>Chisq)"] = pv
    return (table, fits) if return_fits else table


def _label(text: str | None, variance: str | None) -> str:
    s = "iid" if text is None else text
    return s if variance is None else f"{s}, variance={variance}"


def _position(key: Any, names: list[str], texts: list[str | None], given: Sequence[str]) -> int:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not 0 <= int(key) < len(names):
            raise OptionError(f"lrt pair position {key} is not a row (0 to {len(names) - 1})")
        return int(key)
    k = str(key).strip()
    for i, (n, t, g) in enumerate(zip(names, texts, given)):
        if k in (n, str(g).strip()) or (t is not None and k == t) or (t is None and k.lower() == "iid"):
            return i
    raise OptionError(f"lrt pair {key!r} names none of the structures compared ({', '.join(map(str, given))})")
