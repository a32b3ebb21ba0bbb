"""The empirical semivariogram of a fit's residuals (Diggle's), with the fitted model's over it.

For the pairs ``(j, k)`` of rows of one group at lag or distance ``u_jk`` (the time lag within the
group for ``ou``, the position lag for ``ar1``, the visit-index lag for structures by visit, the
Euclidean distance for spatial structures, or any column(s) asked for), the sample semivariogram
is the mean of ``(r_j - r_k)^2 / 2`` over the pairs of a bin of lags. Under the model the
expected half squared difference of a pair of errors is ``(R_jj + R_kk) / 2 - R_jk``, which the
``model`` column averages over the same pairs (so it is the curve at the bin's lag for a structure
of the lag alone whenever the bin holds one lag, and remains defined where the semivariogram is
no function of the lag: structures by visit, variance functions). It does not allow for the
estimation of the fixed effects and of the random effects, which makes residuals a little less
variable than errors (by about ``(n - p) / n`` for normalized residuals).

Scales (``resid_type``; the names are nlme's ``resType``):

* ``"response"`` (the default): the raw residuals ``y - X beta_hat - Z b_hat`` on the scale of the
  response, and the model's semivariogram of the residual covariance ``R`` (OU plus nugget:
  ``nugget + process_var (1 - rho^u)``; spatial: ``sill (nugget + (1 - nugget)(1 - c(d)))``);
* ``"pearson"`` (nlme's default): the residuals divided by their model sd ``sqrt(R_jj)`` (nlme's
  ``sigma`` times the variance function's weights), and ``1 - corr_jk``, the semivariogram of
  the correlation (nlme's ``modelVariog`` with ``sig2 = 1``);
* ``"normalized"``: ``fit.residuals(scaled=True)``, independent N(0, 1) under the model, whose
  semivariogram is 1 at every lag (a check that no correlation is left). For a model with
  random effects these are ``V^{-1/2}(y - X beta_hat)`` (marginal), whereas nlme's are whitened
  within groups after the random effects (conditional): the two differ there.

The residuals of the first two scales are conditional on the random effects (nlme's innermost
level), so the model's semivariogram is the residual structure's alone; BLUPs shrink, so the
sample semivariogram of a model with random effects is a little below the model's.

Bins follow nlme's ``Variogram`` exactly (so its numbers are matched, see
``tests/reference/make_variogram_reference.R``): pairs with ``dist <= max_dist``; with at most
``nint`` distinct distances (``len(breaks) - 1`` where ``breaks`` are given), one bin per distance;
otherwise breaks at the type-7 quantiles of the pair distances (``collapse="quantiles"``), equally
spaced from the smallest to the largest (``"fixed"``), or ``breaks`` (extended, as nlme does, by
the smallest distance below and, where all breaks lie below it, the second smallest above), bins
``(b_k, b_k+1]`` (as R's ``cut``, so pairs at the lowest break, the smallest distance for
quantile or fixed breaks, fall out as in nlme, unless ``include_lowest``); per bin
``variog`` the mean (``robust``: Cressie and Hawkins' ``mean(v^(1/4))^4 / (0.457 + 0.494 / n)``),
``dist`` the median distance and ``n.pairs``; empty bins are dropped. ``collapse="none"`` keeps one
row per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, OptionError

#: the scales of the residuals (nlme's ``resType``)
RESID_TYPES = ("response", "pearson", "normalized")
#: binning of the pairs (nlme's ``collapse``)
COLLAPSES = ("quantiles", "fixed", "none")
#: at most this many pairs of rows (memory: a few arrays of this length)
MAX_PAIRS = 50_000_000


@dataclass(frozen=True)
class Variogram:
    """An empirical semivariogram and the fitted model's (see the module docstring).

    Attributes
    ----------
    table
        One row per bin: ``variog`` (the sample semivariogram), ``dist`` (the median lag or distance
        of the bin's pairs), ``n.pairs`` and ``model`` (the model's semivariogram averaged over the
        bin's pairs), in order of ``dist``.
    curve
        ``dist``, ``model``: the model's semivariogram as a function of the lag on a grid from the
        smallest to the largest lag of the pairs (as nlme's ``modelVariog``; its value at the
        smallest lag is the limit from above, the nugget), where it is one (``ou``, ``ar1`` by
        order, ``cs``, spatial structures, independent errors, each at its own lag); else None
        (structures by visit, variance functions, strata: see ``table.model``).
    resid_type
        ``"response"``, ``"pearson"`` or ``"normalized"``.
    lag
        What the distance is, in words (``"|Time_j - Time_k|"``, ``"distance in latitude + longitude"``).
    group
        The grouping factor of the pairs.
    structure
        The residual structure of the fit, as written (``"iid"`` for independent errors).
    robust
        Cressie-Hawkins' robust estimator instead of the mean.
    """

    table: pd.DataFrame
    curve: pd.DataFrame | None
    resid_type: str
    lag: str
    group: str
    structure: str
    robust: bool = False

    def __str__(self) -> str:
        est = "robust (Cressie-Hawkins)" if self.robust else "mean"
        head = (
            f"Empirical semivariogram of the {self.resid_type} residuals of {self.structure}, pairs within "
            f"{self.group} by {self.lag} ({est} of (r_j - r_k)^2 / 2; model: the fit's semivariogram)"
        )
        return head + "\n" + self.table.to_string()

    def __repr__(self) -> str:
        return str(self)

    def plot(self, ax: Any = None) -> Any:
        """The sample semivariogram (points, area by the number of pairs) with the model's (a line).

        Draws on ``ax`` if given, else on a new :class:`matplotlib.figure.Figure` (no pyplot);
        returns the figure.
        """
        if ax is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(5.0, 3.6), layout="constrained")
            ax = fig.subplots()
        tab = self.table
        npairs = tab["n.pairs"].to_numpy(dtype=float)
        size = 12 + 60 * np.sqrt(npairs / max(float(npairs.max()), 1.0)) if npairs.size else 12
        ax.scatter(tab["dist"], tab["variog"], s=size, color="#1f77b4", alpha=0.8, label="sample", zorder=3)
        if self.curve is not None:
            ax.plot(self.curve["dist"], self.curve["model"], color="#d62728", label="model")
        elif tab["model"].notna().any():
            ax.plot(tab["dist"], tab["model"], color="#d62728", marker="x", ls="--", label="model (bin average)")
        ax.set_xlabel(self.lag)
        ax.set_ylabel(f"semivariogram ({self.resid_type} residuals)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{self.structure}: pairs within {self.group}", fontsize="medium")
        ax.legend(loc="best", fontsize="small")
        return ax.figure


# -------------------------------------------------------------------------- pairs and bins
def within_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(i, j)`` of every pair of rows of one group (``i`` before ``j`` in the data's order)."""
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.size
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    _, first, sizes = np.unique(codes[order], return_index=True, return_counts=True)
    total = int((sizes * (sizes - 1) // 2).sum())
    if total > MAX_PAIRS:
        raise DataError(
            f"the variogram would need {total} pairs of rows (groups of up to {int(sizes.max())} rows); "
            "group the rows more finely (group=...) or use fewer rows"
        )
    out_i, out_j = [], []
    for s in np.unique(sizes[sizes > 1]):
        idx = order[first[sizes == s][:, None] + np.arange(s)[None, :]]  # (G_s, s) rows in data order
        a, b = np.triu_indices(int(s), 1)
        out_i.append(idx[:, a].ravel())
        out_j.append(idx[:, b].ravel())
    if not out_i:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def pair_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Euclidean distance between rows ``i`` and ``j`` of ``x`` (``(n,)`` or ``(n, d)``), as R's ``dist``."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    diff = x[i] - x[j]
    return np.sqrt((diff * diff).sum(axis=1))


def _quantile7(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """R's ``quantile(x, probs, type = 7)``, in its arithmetic (breaks must match R's to the bit)."""
    xs = np.sort(x)
    n = xs.size
    index = 1.0 + max(n - 1, 0) * probs
    lo = np.floor(index).astype(np.int64)
    hi = np.ceil(index).astype(np.int64)
    qs = xs[lo - 1].copy()
    xhi = xs[hi - 1]
    i = (index > lo) & (xhi != qs)
    h = (index - lo)[i]
    qs[i] = (1 - h) * qs[i] + h * xhi[i]
    return qs


def _seq_by(by: float) -> np.ndarray:
    """R's ``seq(0, 1, by)``."""
    n = int(1.0 / by + 1e-10)
    return np.minimum(np.arange(n + 1) * by, 1.0)


def _seq_length(a: float, b: float, length: int) -> np.ndarray:
    """R's ``seq(a, b, length.out = length)`` for doubles."""
    if length <= 2:
        return np.array([a, b][:length], dtype=float)
    if a == b:
        return np.full(length, a)
    n1 = length - 1
    return np.r_[a, a + np.arange(1, length - 1) * ((b - a) / n1), b]


def bin_pairs(
    dist: np.ndarray,
    collapse: str = "quantiles",
    nint: int = 20,
    breaks: Sequence[float] | None = None,
    include_lowest: bool = False,
) -> tuple[np.ndarray, int]:
    """The bin of each pair (-1: in none) and the number of bins, as nlme's ``Variogram`` (module docstring);
    ``include_lowest`` closes the first bin, ``[b_0, b_1]``, so that it keeps the pairs at the lowest break."""
    if collapse == "none":
        return np.arange(dist.size), dist.size
    udist = np.unique(dist)
    if breaks is not None:
        br = [float(b) for b in breaks]
        if udist.size and min(br) > udist[0]:
            br = [float(udist[0]), *br]
        if udist.size > 1 and max(br) < udist[1]:  # nlme compares with the second smallest distance
            br = [*br, float(udist[1])]
        nint = len(br) - 1
    if nint >= udist.size:  # a bin per distinct distance
        return np.searchsorted(udist, dist), udist.size
    if breaks is not None:
        edges = np.sort(np.asarray(br, dtype=float))
    elif collapse == "quantiles":
        edges = np.unique(_quantile7(dist, _seq_by(1.0 / nint)))
    else:
        edges = _seq_length(float(udist[0]), float(udist[-1]), nint + 1)
    if np.unique(edges).size < edges.size:
        raise OptionError("variogram: the breaks are not unique")
    k = np.searchsorted(edges, dist, side="left")  # edges[k-1] < d <= edges[k]
    code = np.where((k >= 1) & (k <= edges.size - 1), k - 1, -1)
    if include_lowest:
        code[dist == edges[0]] = 0
    return code, edges.size - 1


def bin_table(
    variog: np.ndarray,
    dist: np.ndarray,
    code: np.ndarray,
    nbins: int,
    robust: bool = False,
    model: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per bin ``variog`` (mean, or Cressie-Hawkins), ``dist`` (median), ``n.pairs`` and the mean ``model``;
    empty bins dropped."""
    rows = []
    keep = code >= 0
    order = np.argsort(code[keep], kind="stable")
    c, v, d = code[keep][order], variog[keep][order], dist[keep][order]
    m = model[keep][order] if model is not None else None
    bounds = np.searchsorted(c, np.arange(nbins + 1))
    for b in range(nbins):
        lo, hi = bounds[b], bounds[b + 1]
        if hi <= lo:
            continue
        vb = v[lo:hi]
        n = hi - lo
        val = float(np.mean(vb**0.25) ** 4 / (0.457 + 0.494 / n)) if robust else float(np.mean(vb))
        rows.append((val, float(np.median(d[lo:hi])), n, float(np.mean(m[lo:hi])) if m is not None else np.nan))
    out = pd.DataFrame(rows, columns=["variog", "dist", "n.pairs", "model"])
    out["n.pairs"] = out["n.pairs"].astype(np.int64)
    return out


def sample_variogram(
    resid: np.ndarray,
    codes: np.ndarray,
    coords: np.ndarray,
    *,
    max_dist: float | None = None,
    collapse: str = "quantiles",
    nint: int = 20,
    breaks: Sequence[float] | None = None,
    robust: bool = False,
    include_lowest: bool = False,
    model: Any = None,
) -> pd.DataFrame:
    """The binned sample semivariogram of ``resid`` over the pairs of rows with equal ``codes``, at the
    Euclidean distance between their ``coords`` (``(n,)`` or ``(n, d)``), as nlme's ``Variogram``.

    ``model``, if given, maps the pairs' row indices ``(i, j)`` to the model's semivariogram of each
    pair, averaged per bin in the ``model`` column (else NaN).
    """
    _check_options(collapse, nint, max_dist)
    resid = np.asarray(resid, dtype=float)
    i, j = within_pairs(codes)
    dist = pair_distances(coords, i, j)
    if max_dist is not None:
        keep = dist <= max_dist
        i, j, dist = i[keep], j[keep], dist[keep]
    if dist.size == 0:
        raise DataError("variogram: no two rows of one group (within max_dist): there are no pairs to compare")
    v = (resid[i] - resid[j]) ** 2 / 2
    m = np.asarray(model(i, j), dtype=float) if model is not None else None
    code, nbins = bin_pairs(dist, collapse, nint, breaks, include_lowest)
    if collapse == "none":
        order = np.lexsort((v, dist))
        return pd.DataFrame(
            {
                "variog": v[order],
                "dist": dist[order],
                "n.pairs": np.ones(dist.size, dtype=np.int64),
                "model": m[order] if m is not None else np.nan,
            }
        )
    return bin_table(v, dist, code, nbins, robust, m)


def _check_options(collapse: str, nint: int, max_dist: float | None) -> None:
    if collapse not in COLLAPSES:
        raise OptionError(f"variogram: collapse must be one of {', '.join(map(repr, COLLAPSES))}, not {collapse!r}")
    if int(nint) != nint or nint < 1:
        raise OptionError(f"variogram: nint must be a positive integer, not {nint!r}")
    if max_dist is not None and not (np.isfinite(max_dist) and max_dist > 0):
        raise OptionError(f"variogram: max_dist must be a positive number, not {max_dist!r}")


# --------------------------------------------------------------------------- the model's side
class _ModelCov:
    """The model's residual covariance of a fit: its diagonal and the covariance of any pair of rows."""

    def __init__(self, fit: Any) -> None:
        res = fit.spec.residual
        n = fit.spec.n
        if res is None:
            self.diag = np.full(n, float(fit.sigma2))
            self._res = None
            return
        self._res = res
        self.structure = res.structure
        self.nat = res.structure.natural(fit.objective.split(fit.psi)[1], fit.scale2)
        codes = np.asarray(res.codes, dtype=np.int64)
        order = np.lexsort((np.arange(n), np.asarray(res.t), codes))
        sizes = np.bincount(codes, minlength=len(res.levels))
        starts = np.cumsum(sizes) - sizes
        self.pos = np.empty(n, dtype=np.int64)
        self.pos[order] = np.arange(n) - np.repeat(starts, sizes)
        self.codes = codes
        self.slot = np.zeros(sizes.size, dtype=np.int64)
        self.mats: dict[int, np.ndarray] = {}
        self.diag = np.empty(n)
        for s in np.unique(sizes[sizes > 0]):
            groups = np.flatnonzero(sizes == s)
            self.slot[groups] = np.arange(groups.size)
            idx = order[starts[groups][:, None] + np.arange(s)[None, :]]  # (G_s, s) rows in time order
            feats = {k: np.asarray(v)[idx] for k, v in res.feats.items()}
            M = np.asarray(self.structure.matrix(feats, self.nat), dtype=float)
            M = np.broadcast_to(M, (groups.size, int(s), int(s)))
            self.mats[int(s)] = M
            self.diag[idx] = np.diagonal(M, axis1=1, axis2=2)
        self.size = sizes

    def cov(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``R[i, j]`` for pairs of distinct rows (0 between groups of the residual structure)."""
        out = np.zeros(i.size)
        if self._res is None:
            return out
        gi, gj = self.codes[i], self.codes[j]
        same = gi == gj
        sz = self.size[gi]
        for s, M in self.mats.items():
            sel = same & (sz == s)
            if sel.any():
                out[sel] = M[self.slot[gi[sel]], self.pos[i[sel]], self.pos[j[sel]]]
        return out

    def semivariogram(self, i: np.ndarray, j: np.ndarray, resid_type: str) -> np.ndarray:
        """The model's semivariogram of each pair on the scale ``resid_type``."""
        if resid_type == "normalized":
            return np.ones(i.size)
        c = self.cov(i, j)
        di, dj = self.diag[i], self.diag[j]
        if resid_type == "pearson":
            return 1.0 - c / np.sqrt(di * dj)
        return (di + dj) / 2 - c


def model_curve(structure: Any, nat: dict[str, Any], dist: np.ndarray, resid_type: str, ndim: int = 1) -> np.ndarray:
    """The semivariogram of a stationary structure at lags or distances ``dist`` (> 0: the limit from above
    at 0, the nugget): ``(R_00 + R_11) / 2 - R_01`` of two observations ``dist`` apart (``"response"``),
    ``1 - corr`` (``"pearson"``) or 1 (``"normalized"``). A lag structure reads the lag itself (for
    ``ar1``, in positions); a spatial one two points ``dist`` apart along the first of ``ndim`` axes.
    """
    from ..cov import LagStructure, SpatialStructure

    d = np.asarray(dist, dtype=float)
    if resid_type == "normalized":
        return np.ones(d.shape)
    if isinstance(structure, LagStructure):
        lag = np.zeros((d.size, 2, 2))
        lag[:, 0, 1] = lag[:, 1, 0] = d
        R = np.asarray(structure.lag_matrix(lag, nat), dtype=float)
    elif isinstance(structure, SpatialStructure):
        coords = np.zeros((d.size, 2, ndim))
        coords[:, 1, 0] = d
        R = np.asarray(structure.matrix({"coords": coords}, nat), dtype=float)
    else:  # independent errors
        R = np.zeros((d.size, 2, 2))
        R[:, 0, 0] = R[:, 1, 1] = float(nat["sigma2"])
    R = np.broadcast_to(R, (d.size, 2, 2))
    a, b, c = R[:, 0, 0], R[:, 1, 1], R[:, 0, 1]
    if resid_type == "pearson":
        return 1.0 - c / np.sqrt(a * b)
    return (a + b) / 2 - c


# --------------------------------------------------------------------------- the fit's rows
def _rows(fit: Any, data: Any) -> pd.DataFrame:
    if data is None:
        raise OptionError("variogram: pass data=... (the data frame of the fit) to use its columns")
    from ..spec import as_pandas

    df = as_pandas(data)
    try:
        return df.loc[fit.spec.row_index]
    except KeyError as e:
        raise DataError("variogram: data lacks rows of the fit (pass the data frame the model was fitted to)") from e


def _groups(fit: Any, group: str | None, data: Any) -> tuple[np.ndarray, str]:
    """The group of each row for the pairs, and its name."""
    spec, res = fit.spec, fit.spec.residual
    if group is None:
        if res is not None and not res.independent:
            return np.asarray(res.codes), res.group
        groups = {t.group for t in spec.terms}
        if len(groups) != 1:
            what = "no random-effect term" if not groups else f"terms in {', '.join(sorted(groups))}"
            raise OptionError(
                f"variogram: the fit has no residual structure within groups and {what}: say which groups "
                "the pairs are within, group='g' (a column of data=...), or '1' for all rows"
            )
        t = spec.terms[0]
        return np.asarray(t.codes), t.group
    if group == "1":
        return np.zeros(spec.n, dtype=np.int64), "1"
    if res is not None and group == res.group and not res.independent:
        return np.asarray(res.codes), res.group
    for t in spec.terms:
        if t.group == group:
            return np.asarray(t.codes), t.group
    df = _rows(fit, data)
    cols = group.split(":")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"variogram: group {group!r}: data has no column {missing[0]!r}")
    codes = df.groupby(cols, sort=True, dropna=False).ngroup().to_numpy()
    return codes.astype(np.int64), group


def _order_in_groups(codes: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    """Position of each row within its group, in the order of ``t`` (then of the rows)."""
    n = codes.size
    keys = (np.arange(n), codes) if t is None else (np.arange(n), t, codes)
    order = np.lexsort(keys)
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes
    pos = np.empty(n)
    pos[order] = np.arange(n) - np.repeat(starts, sizes)
    return pos


def _kind_of(structure: Any) -> str:
    """What the left of ``|`` is (``"time"``, ``"visit"``, ``"coords"``, ``"any"``; wrappers, variance
    functions and strata, carry their base's)."""
    return str(structure.lhs)


def _lhs(res: Any) -> tuple[str, ...]:
    """The columns left of ``|`` of a residual structure."""
    return tuple(res.spec.lhs) if res.spec is not None else tuple(c.strip() for c in res.time.split("+"))


def _lags(fit: Any, lag: str | Sequence[str] | None, codes: np.ndarray, data: Any) -> tuple[np.ndarray, str, str]:
    """The coordinates of each row the distance is taken in, the words for it, and its scale
    (``"time"``, ``"order"``, ``"coords"``, ``"visit"``, ``"columns"``)."""
    res = fit.spec.residual
    structure = None if res is None or res.independent else res.structure
    if lag is None:
        if structure is None:
            raise OptionError(
                "variogram: the fit has no residual structure within groups: say what the lag is, "
                "lag='time' (a column of data=...), lag=['x', 'y'] (coordinates) or lag='order'"
            )
        assert res is not None
        if _kind_of(structure) == "coords":
            return np.asarray(res.feats["coords"]), f"distance in {res.time}", "coords"
        if structure.by_order:
            lag = "order"
        else:
            scale = "visit" if _kind_of(structure) == "visit" else "time"
            what = (
                f"|index of {res.time}_j - index of {res.time}_k|"
                if scale == "visit"
                else f"|{res.time}_j - {res.time}_k|"
            )
            return np.asarray(res.t, dtype=float), what, scale
    if isinstance(lag, str) and lag == "order":
        t = np.asarray(res.t) if res is not None and not res.independent else None
        by = f" (in the order of {res.time})" if t is not None and res is not None else ""
        return _order_in_groups(codes, t), f"lag in position{by}", "order"
    names = [lag] if isinstance(lag, str) else list(lag)
    if res is not None and not res.independent and tuple(names) == _lhs(res):
        s = res.structure
        if _kind_of(s) == "coords":
            return np.asarray(res.feats["coords"]), f"distance in {res.time}", "coords"
        if _kind_of(s) == "visit":
            labels = res.labels.get("visit", ())
            try:
                values = np.array([float(v) for v in labels])
            except ValueError:
                raise DataError(
                    f"variogram: the visits of {res.time!r} are not numbers ({', '.join(labels[:3])}, ...): "
                    "leave lag=None for the lag in visit index"
                ) from None
            return (
                values[np.asarray(res.feats["visit"]).astype(np.int64)],
                f"|{res.time}_j - {res.time}_k|",
                "visit_value",
            )
        return np.asarray(res.t, dtype=float), f"|{res.time}_j - {res.time}_k|", "time"
    df = _rows(fit, data)
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise DataError(f"variogram: lag: data has no column {missing[0]!r}")
    x = np.column_stack([pd.to_numeric(df[c], errors="raise").to_numpy(dtype=float) for c in names])
    if not np.isfinite(x).all():
        raise DataError(f"variogram: lag column(s) {', '.join(names)} have missing or infinite values")
    what = f"|{names[0]}_j - {names[0]}_k|" if len(names) == 1 else f"distance in {' + '.join(names)}"
    return x, what, "columns"


def _residuals(fit: Any, resid_type: str, mc: _ModelCov) -> np.ndarray:
    if resid_type == "normalized":
        return np.asarray(fit.residuals(scaled=True), dtype=float)
    r = np.asarray(fit.residuals(), dtype=float)
    return r / np.sqrt(mc.diag) if resid_type == "pearson" else r


def _curve_structure(fit: Any, scale: str) -> tuple[Any, dict[str, Any]] | None:
    """The structure and natural parameters if the model's semivariogram is a function of this lag."""
    from ..cov import LagStructure, SpatialStructure

    res = fit.spec.residual
    if res is None:
        return (None, {"sigma2": float(fit.sigma2)}) if scale == "columns" else None
    s = res.structure
    nat = s.natural(fit.objective.split(fit.psi)[1], fit.scale2)
    if isinstance(s, SpatialStructure) and scale == "coords":
        return s, nat
    if isinstance(s, LagStructure) and s.lhs != "visit":
        if (s.by_order and scale == "order") or (not s.by_order and scale == "time"):
            return s, nat
    return None


def variogram(
    fit: Any,
    *,
    resid_type: str = "response",
    lag: str | Sequence[str] | None = None,
    group: str | None = None,
    data: Any = None,
    max_dist: float | None = None,
    collapse: str = "quantiles",
    nint: int = 20,
    breaks: Sequence[float] | None = None,
    robust: bool = False,
    include_lowest: bool = False,
    length_out: int = 50,
) -> Variogram:
    """The empirical semivariogram of the residuals of ``fit``, with the fitted model's (module docstring).

    Parameters
    ----------
    fit
        A fitted model (:func:`bayeslmm.lmm`) with the rows; a residual structure gives the pairs'
        groups, their lag and the model's semivariogram.
    resid_type
        ``"response"`` (raw residuals, the model's semivariogram on the variance scale),
        ``"pearson"`` (residuals divided by their model sd; ``1 - correlation``, nlme's default scale) or
        ``"normalized"`` (``fit.residuals(scaled=True)``; 1).
    lag
        What the pairs' lag or distance is. ``None``: the structure's own (the time lag for ``ou``
        and ``cs``, the position lag for ``ar1``, the visit-index lag for structures by visit, the
        Euclidean distance for spatial ones). ``"order"``: the lag in position within the group (in
        the order of the structure's time, else of the rows: nlme's ``form = ~ 1``). A column name,
        or several for a Euclidean distance (nlme's ``form = ~ x + y``): the structure's own
        columns (for a structure by visit with numeric visits: the lag in visit value), else
        columns of ``data``.
    group
        Pairs within the levels of: ``None`` the structure's grouping factor (for a fit without one,
        the grouping factor of its random-effect terms, if they have one); a grouping factor of the
        model or a column (``"a:b"`` for an interaction) of ``data``; ``"1"`` all rows.
    data
        The data frame the model was fitted to, where ``lag`` or ``group`` name other columns.
    max_dist
        Only pairs with a distance of at most this (nlme's ``maxDist``).
    collapse, nint, breaks
        The bins (nlme's ``collapse``, ``nint``, ``breaks``; module docstring).
    robust
        Cressie and Hawkins' robust estimator instead of the mean (nlme's ``robust``).
    include_lowest
        Keep the pairs at the lowest break in the first bin (R's ``cut(include.lowest = TRUE)``).
        The default drops them, as nlme does: with binned lags, the pairs at the smallest lag then
        count in no bin.
    length_out
        Points of :attr:`Variogram.curve`.

    Returns
    -------
    :class:`Variogram`: ``.table`` (``variog``, ``dist``, ``n.pairs``, ``model``), ``.curve`` and ``.plot()``.
    """
    if resid_type not in RESID_TYPES:
        raise OptionError(
            f"variogram: resid_type must be one of {', '.join(map(repr, RESID_TYPES))}, not {resid_type!r}"
        )
    _check_options(collapse, nint, max_dist)
    fit.spec.require_rows("the variogram needs the rows")
    codes, gname = _groups(fit, group, data)
    x, what, scale = _lags(fit, lag, codes, data)
    mc = _ModelCov(fit)
    r = _residuals(fit, resid_type, mc)
    table = sample_variogram(
        r,
        codes,
        x,
        max_dist=max_dist,
        collapse=collapse,
        nint=nint,
        breaks=breaks,
        robust=robust,
        include_lowest=include_lowest,
        model=lambda i, j: mc.semivariogram(i, j, resid_type),
    )
    curve = None
    cs = _curve_structure(fit, scale)
    if cs is not None and len(table):
        i, j = within_pairs(codes)
        d = pair_distances(x, i, j)
        if max_dist is not None:
            d = d[d <= max_dist]
        grid = _seq_length(float(d.min()), float(d.max()), int(length_out))
        ndim = x.shape[1] if np.ndim(x) == 2 else 1
        curve = pd.DataFrame({"dist": grid, "model": model_curve(cs[0], cs[1], grid, resid_type, ndim)})
    res = fit.spec.residual
    return Variogram(
        table=table,
        curve=curve,
        resid_type=resid_type,
        lag=what,
        group=gname,
        structure=str(res) if res is not None else "iid",
        robust=bool(robust),
    )
