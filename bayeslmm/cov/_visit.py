"""Structures by visit: the covariance of two observations of a subject depends on their visits.

``name(visit | id)`` with ``visit`` a factor of ``m`` levels (in the order of its levels: numbers
numerically, categories in their order, text sorted). Each structure is an ``m x m`` matrix
``Sigma`` over the visits; a subject's ``R_i`` is ``Sigma`` at the visits it has, so missed visits
and any row order are fine. Definitions follow SAS PROC MIXED (TYPE=) and R's mmrm:

====== ======================================================= ===========================
name   ``Sigma[j, k]``                                          parameters
====== ======================================================= ===========================
us     free (unstructured)                                      m (m + 1) / 2
cs     ``sigma2 (rho + (1 - rho) [j = k])`` (in ``_cs.py``)      2
csh    ``s_j s_k (rho + (1 - rho) [j = k])``                    m + 1
ar1h   ``s_j s_k rho^|j - k|``                                  m + 1
toep   ``sigma2 rho_|j - k|``, ``rho_0 = 1``                    m
toeph  ``s_j s_k rho_|j - k|``                                  2 m - 1
diag   ``s_j^2 [j = k]``                                        m
====== ======================================================= ===========================

``j, k`` are visit indices (so ``ar1h`` and ``toep`` leave a gap where a visit is missed). The
natural parameters are ``sigma2`` (the variance at the first visit: the Residual row, nlme's
``sigma`` with ``varIdent``), the variances ``var(<visit>)`` of the other visits, and the
correlations (``rho``, ``rho(lag k)``) or, for ``us``, the covariances ``cov(<a>,<b>)``.
The optimiser sees the log sd ratios ``log(s_j / s_1)``, the correlations and, for ``us``, the
lower triangle of ``L`` with ``Sigma = s^2 L L'`` and ``L[0, 0] = 1`` (lme4's parameterisation of
a covariance, the scale ``s^2`` profiled out).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from ._base import PriorSpec, ResidualStructure, Rows, central_contraction, sd_prior

#: bounds of the log sd ratios (a ratio of e^20 is a visit without variance in effect)
LOG_RATIO_MAX = 20.0
#: distance kept from correlation bounds
EDGE = 1e-8


def _stack_matrix(entries: list[list[Any]], xp: Any) -> Any:
    """``(m, m)`` matrix from nested entries (NumPy floats or PyTensor scalars)."""
    if xp is np:
        return np.array(entries, dtype=float)
    return xp.stack([xp.stack([xp.as_tensor_variable(e) for e in row]) for row in entries])


class VisitStructure(ResidualStructure):
    """The common part of the structures by visit (module docstring)."""

    lhs = "visit"

    def __init__(self, visits: tuple[str, ...]) -> None:
        self.visits = tuple(visits)
        self.m = len(self.visits)
        self.param_names, self.process_keys = self._names()

    @classmethod
    def bind(cls, rows: Rows) -> VisitStructure:
        return cls(rows.labels["visit"])

    @abstractmethod
    def _names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(optimiser parameter names, natural process keys)."""

    # -- the matrix -------------------------------------------------------------
    @abstractmethod
    def sigma(self, nat: dict[str, Any], xp: Any = np) -> Any:
        """``(m, m)`` covariance over all visits at the natural parameters."""

    def matrix(self, feats: dict[str, np.ndarray], nat: dict[str, Any], xp: Any = np) -> Any:
        S = self.sigma(nat, xp)
        v = np.asarray(feats["visit"]).astype(np.int64)
        return S[v[..., :, None], v[..., None, :]]

    def visit_sum(self, feats: dict[str, np.ndarray], G: np.ndarray) -> np.ndarray:
        """``H = sum_i E_i' G_i E_i`` ``(m, m)``: ``G`` of each group scattered onto the visits of its rows."""
        v = np.asarray(feats["visit"]).astype(np.int64)
        pair = v[..., :, None] * self.m + v[..., None, :]  # (..., s, s) index of (visit_j, visit_k)
        return np.bincount(pair.ravel(), weights=np.ravel(G), minlength=self.m * self.m).reshape(self.m, self.m)

    def gradient(self, feats: dict[str, np.ndarray], G: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """``tr(H dSigma/dpsi_k)`` with ``H`` the visit sum of ``G`` (central differences of the m x m ``Sigma``)."""
        H = self.visit_sum(feats, G)
        return central_contraction(lambda p: self.sigma(self.natural(p, 1.0)), H, psi)

    def check_rows(self, rows: Rows, what: str) -> None:
        """Every visit needs two observations for its variance; two observations of one subject at one
        visit are not a structure by visit."""
        v = rows.feats["visit"].astype(np.int64)
        counts = np.bincount(v, minlength=self.m)
        few = [self.visits[j] for j in np.flatnonzero(counts < 2)]
        if few and self.heterogeneous:
            raise ValueError(
                f"{what}: visit level(s) {', '.join(map(repr, few))} have fewer than 2 observations, too few "
                "to estimate a variance per visit: drop or merge those visits, or use a structure with one "
                "variance (cs, toep, ar1)"
            )
        key = rows.codes.astype(np.int64) * self.m + v
        if np.unique(key).size < key.size:
            dup = int(key.size - np.unique(key).size)
            raise ValueError(
                f"{what}: {dup} observation(s) repeat a visit of their subject; a structure by visit needs at "
                "most one observation per subject and visit: check the visit and subject columns, or "
                "average the repeats"
            )

    #: a variance per visit
    heterogeneous: bool = True

    def empirical(self, rows: Rows, resid: np.ndarray) -> np.ndarray | None:
        """``(m, m)`` covariance of the residuals over the visits from the pairs observed together,
        made positive definite (None where a pair or a visit is never observed)."""
        v = rows.feats["visit"].astype(np.int64)
        Rm = np.zeros((rows.nlevels, self.m))
        M = np.zeros((rows.nlevels, self.m))
        Rm[rows.codes, v] = resid
        M[rows.codes, v] = 1.0
        cnt = M.T @ M
        if np.any(cnt < 1):
            return None
        S = (Rm.T @ Rm) / cnt
        w, Q = np.linalg.eigh(S)
        if w[-1] <= 0:
            return None
        S = (Q * np.maximum(w, 1e-3 * w[-1])) @ Q.T
        return S / S[0, 0]

    def data_starts(self, rows: Rows, resid: np.ndarray) -> list[np.ndarray]:
        S = self.empirical(rows, resid)
        return [] if S is None else self.start_from(S)

    def start_from(self, S: np.ndarray) -> list[np.ndarray]:
        """Optimiser points near the relative covariance ``S`` over the visits (``S[0, 0] = 1``)."""
        return []

    # -- shared pieces ------------------------------------------------------------
    def _var_keys(self) -> tuple[str, ...]:
        return tuple(f"var({v})" for v in self.visits[1:])

    def _ratio_names(self) -> tuple[str, ...]:
        return tuple(f"log sd ratio({v})" for v in self.visits[1:])

    def _variances(self, nat: dict[str, Any]) -> list[Any]:
        return [nat["sigma2"], *(nat[k] for k in self._var_keys())]

    def _variances_from_ratios(self, logr: np.ndarray, scale2: float) -> dict[str, float]:
        return {"sigma2": scale2} | {k: scale2 * float(np.exp(2 * r)) for k, r in zip(self._var_keys(), logr)}

    def _scaled(self, nat: dict[str, Any], corr: list[list[Any]], xp: Any) -> Any:
        """``s_j s_k corr[j][k]`` with ``s_j^2`` the variances."""
        var = self._variances(nat)
        sd = [np.sqrt(v) if xp is np else xp.sqrt(v) for v in var]
        return _stack_matrix([[sd[j] * sd[k] * corr[j][k] for k in range(self.m)] for j in range(self.m)], xp)

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        """``levels``, ``cov`` (m x m), ``sd`` and ``corr`` over the visits, and the natural parameters."""
        S = self.sigma(nat)
        sd = np.sqrt(np.diag(S))
        return {
            "levels": list(self.visits),
            "cov": S.tolist(),
            "sd": sd.tolist(),
            "corr": (S / np.outer(sd, sd)).tolist(),
            **{k: nat[k] for k in self.process_keys},
            self.residual_key: nat["sigma2"],
        }

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        """The variance, sd and correlations per visit (nlme's correlation matrix and variance function,
        SAS's R matrix); ``rp`` is :meth:`report`'s dict or the natural parameters (``residual_params()``)."""
        if "cov" in rp:
            S = np.asarray(rp["cov"], dtype=float)
        else:
            S = self.sigma({k: v for k, v in rp.items() if k != "kind"} | {"sigma2": rp[self.residual_key]})
        sd = np.sqrt(np.diag(S))
        corr = S / np.outer(sd, sd)
        var_s = [fmt(x) for x in np.diag(S)]
        sd_s = [fmt(x, 4) for x in sd]
        corr_s = [[f"{corr[j, k]:.3f}" for k in range(j)] for j in range(self.m)]
        w0 = max(len("Visit"), *(len(v) for v in self.visits))
        w1 = max(len("Variance"), *(len(x) for x in var_s))
        w2 = max(len("Std.Dev."), *(len(x) for x in sd_s))
        wc = [max(len(self.visits[k]), 6) for k in range(self.m - 1)]
        out = [
            f"Residual covariance {self.name}({time} | {group}) over the levels of {time} (the Residual row above is "
            f"visit {self.visits[0]}):",
            f" {'Visit':<{w0}} {'Variance':>{w1}} {'Std.Dev.':>{w2}}" + ("  Correlation" if self.m > 1 else ""),
        ]
        if self.m > 1:
            out.append(" " + " " * (w0 + w1 + w2 + 3) + "".join(f" {v:>{w}}" for v, w in zip(self.visits, wc)))
        for j, v in enumerate(self.visits):
            cells = "".join(f" {c:>{w}}" for c, w in zip(corr_s[j], wc))
            out.append(f" {v:<{w0}} {var_s[j]:>{w1}} {sd_s[j]:>{w2}} {cells}".rstrip())
        keys = [k for k in getattr(self, "corr_keys", ()) if k in rp]
        if keys:
            out.append(" Correlation parameters: " + ", ".join(f"{k} {fmt(rp[k])}" for k in keys))
        return out

    def _visit_sd_priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        return {f"sd({v})": sd_prior(sd_scale) for v in self.visits[1:]}

    def _visit_vars_from_draws(self, draws: dict[str, Any]) -> dict[str, Any]:
        return {k: draws[f"sd({v})"] ** 2 for k, v in zip(self._var_keys(), self.visits[1:])}


def _corr_prior(lo: float) -> PriorSpec:
    return PriorSpec("Uniform", {"lower": lo, "upper": 1}, (lo - 0.5, 1.5), ((lo + 1) / 2,), f"({lo:.4g}, 1)")


class Unstructured(VisitStructure):
    """``us``: a free covariance over the visits (SAS TYPE=UN, mmrm's ``us``)."""

    name = "us"
    description = "unstructured covariance over the visits (a factor) within g"
    confounded_with_intercept = True

    def _names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        rows, cols = self._tril()
        pnames = tuple(f"L[{self.visits[r]},{self.visits[c]}]" for r, c in zip(rows, cols))
        keys = self._var_keys() + tuple(f"cov({self.visits[c]},{self.visits[r]})" for r, c in self._pairs())
        return pnames, keys

    def _tril(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the free entries of ``L`` (lower triangle by column, without ``L[0, 0]``)."""
        if "_tril_rc" not in self.__dict__:
            r, c = np.tril_indices(self.m)
            order = np.lexsort((r, c))
            self.__dict__["_tril_rc"] = (r[order][1:], c[order][1:])
        return self.__dict__["_tril_rc"]

    def _pairs(self) -> list[tuple[int, int]]:
        if "_pairs_rc" not in self.__dict__:
            r, c = np.tril_indices(self.m, -1)
            self.__dict__["_pairs_rc"] = list(zip(r.tolist(), c.tolist()))
        return self.__dict__["_pairs_rc"]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r, c = self._tril()
        return np.where(r == c, 0.0, -np.inf), np.full(r.size, np.inf)

    def _L(self, psi: np.ndarray) -> np.ndarray:
        L = np.zeros((self.m, self.m))
        L[0, 0] = 1.0
        r, c = self._tril()
        L[r, c] = psi
        return L

    def start_values(self) -> list[np.ndarray]:
        r, c = self._tril()
        out = []
        for rho in (0.0, 0.5):
            C = (1 - rho) * np.eye(self.m) + rho
            out.append(np.linalg.cholesky(C)[r, c])
        return out

    def gradient(self, feats: dict[str, np.ndarray], G: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """Exact: ``Sigma = L L'``, so ``d tr(H Sigma) / dL = 2 H L`` (``H`` symmetric), at the free entries."""
        H = self.visit_sum(feats, G)
        r, c = self._tril()
        return (2.0 * H @ self._L(np.asarray(psi, dtype=float)))[r, c]

    def start_from(self, S: np.ndarray) -> list[np.ndarray]:
        r, c = self._tril()
        return [np.linalg.cholesky(S)[r, c]]

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        L = self._L(np.asarray(psi, dtype=float))
        S = scale2 * (L @ L.T)
        return self.natural_of(S)

    def natural_of(self, S: np.ndarray) -> dict[str, float]:
        """The natural parameters of the covariance ``S`` over the visits."""
        out = {"sigma2": float(S[0, 0])}
        for j, v in enumerate(self.visits[1:], start=1):
            out[f"var({v})"] = float(S[j, j])
        for r, c in self._pairs():
            out[f"cov({self.visits[c]},{self.visits[r]})"] = float(S[r, c])
        return out

    def sigma(self, nat: dict[str, Any], xp: Any = np) -> Any:
        var = self._variances(nat)
        ent: list[list[Any]] = [[None] * self.m for _ in range(self.m)]
        for j in range(self.m):
            ent[j][j] = var[j]
        for r, c in self._pairs():
            ent[r][c] = ent[c][r] = nat[f"cov({self.visits[c]},{self.visits[r]})"]
        return _stack_matrix(ent, xp)

    def derivatives(self, feats: dict[str, np.ndarray], nat: dict[str, float]) -> dict[str, np.ndarray]:
        v = np.asarray(feats["visit"]).astype(np.int64)
        out = {}
        keys = ["sigma2", *self._var_keys()]
        for j, k in enumerate(keys):
            E = np.zeros((self.m, self.m))
            E[j, j] = 1.0
            out[k] = E[v[..., :, None], v[..., None, :]]
        for r, c in self._pairs():
            E = np.zeros((self.m, self.m))
            E[r, c] = E[c, r] = 1.0
            out[f"cov({self.visits[c]},{self.visits[r]})"] = E[v[..., :, None], v[..., None, :]]
        return out

    def check_rows(self, rows: Rows, what: str) -> None:
        super().check_rows(rows, what)
        v = rows.feats["visit"].astype(np.int64)
        M = np.zeros((rows.nlevels, self.m))
        M[rows.codes, v] = 1.0
        together = M.T @ M
        missing = [(self.visits[c], self.visits[r]) for r, c in self._pairs() if together[r, c] < 1]
        if missing:
            a, b = missing[0]
            raise ValueError(
                f"{what}: no subject has both visit {a!r} and visit {b!r} ({len(missing)} pair(s) of visits never "
                "observed together), so their covariance cannot be estimated: use a structure with fewer "
                "parameters (toeph, ar1h, csh) or merge visits"
            )

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        """``sd(<visit>) ~ HalfNormal(sd_scale)`` for each visit after the first (``sigma`` is the first
        visit's sd); the correlation over the visits is made by :meth:`pymc_variables` (LKJ)."""
        return self._visit_sd_priors(sd_scale)

    def pymc_variables(
        self, rv: Callable[[str], Any], sd_scale: float, lkj_eta: float, suffix: str = ""
    ) -> dict[str, Any]:
        """The sds of :meth:`priors` and ``corr_chol``: ``<name>_corr_chol`` (``us_corr_chol``, ``suffix``
        appended), the Cholesky factor of the ``m x m`` correlation over the visits, ``LKJCorr(eta=lkj_eta)``."""
        out = super().pymc_variables(rv, sd_scale, lkj_eta, suffix)
        if self.m > 1:
            import pymc as pm

            out["corr_chol"] = pm.LKJCorr(f"{self.name}_corr_chol{suffix}", n=self.m, eta=lkj_eta)
        return out

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        """``cov(a,b) = sd_a sd_b (L L')[a, b]`` with ``L = draws["corr_chol"]`` and ``sd`` the first
        visit's ``sqrt(sigma2)`` and the others' ``sd(<visit>)``."""
        out = {"sigma2": sigma2} | self._visit_vars_from_draws(draws)
        if self.m < 2:
            return out
        L = draws["corr_chol"]
        sd = [sigma2**0.5, *(draws[f"sd({v})"] for v in self.visits[1:])]
        for r, c in self._pairs():  # c < r: (L L')[r, c] = sum_{k <= c} L[r, k] L[c, k]
            out[f"cov({self.visits[c]},{self.visits[r]})"] = sd[r] * sd[c] * (L[r, : c + 1] @ L[c, : c + 1])
        return out


class _CorrelationByVisit(VisitStructure):
    """Structures ``s_j s_k C[j, k]`` with a correlation ``C`` of a few parameters and variances per
    visit (``heterogeneous``) or one variance."""

    corr_keys: tuple[str, ...] = ()

    def _corr_names(self) -> tuple[str, ...]:
        return ()

    def _names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        ck = self._corr_names()
        self.corr_keys = ck
        if self.heterogeneous:
            return self._ratio_names() + ck, self._var_keys() + ck
        return ck, ck

    @abstractmethod
    def corr(self, nat: dict[str, Any], xp: Any) -> list[list[Any]]:
        """``C[j][k]``, the correlation between visits ``j`` and ``k`` (entries NumPy floats or PyTensor scalars)."""

    def corr_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.corr_keys)
        return np.full(k, -1.0 + EDGE), np.full(k, 1.0 - EDGE)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.corr_bounds()
        if not self.heterogeneous:
            return lo, hi
        k = self.m - 1
        return np.r_[np.full(k, -LOG_RATIO_MAX), lo], np.r_[np.full(k, LOG_RATIO_MAX), hi]

    def start_values(self) -> list[np.ndarray]:
        lo, hi = self.corr_bounds()
        ratios = np.zeros(self.m - 1 if self.heterogeneous else 0)
        return [np.r_[ratios, np.clip(np.full(lo.size, r), lo, hi)] for r in (0.0, 0.3, 0.6)] if lo.size else [ratios]

    def start_from(self, S: np.ndarray) -> list[np.ndarray]:
        sd = np.sqrt(np.diag(S))
        lo, hi = self.corr_bounds()
        off = (S / np.outer(sd, sd))[np.tril_indices(self.m, -1)]
        rho = float(np.mean(off)) if off.size else 0.0
        ratios = np.log(sd[1:]) if self.heterogeneous else np.zeros(0)
        return [np.r_[ratios, np.clip(np.full(lo.size, rho), lo, hi)]]

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        psi = np.asarray(psi, dtype=float)
        k = self.m - 1 if self.heterogeneous else 0
        out = self._variances_from_ratios(psi[:k], scale2) if self.heterogeneous else {"sigma2": scale2}
        return out | {c: float(v) for c, v in zip(self.corr_keys, psi[k:])}

    def _variances(self, nat: dict[str, Any]) -> list[Any]:
        if self.heterogeneous:
            return super()._variances(nat)
        return [nat["sigma2"]] * self.m

    def sigma(self, nat: dict[str, Any], xp: Any = np) -> Any:
        return self._scaled(nat, self.corr(nat, xp), xp)

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        """``sd(<visit>) ~ HalfNormal(sd_scale)`` per visit after the first (heterogeneous structures) and
        each correlation ``Uniform`` on the range where the matrix is positive definite (``csh``:
        ``(-1/(m - 1), 1)``; ``ar1h``: ``(-1, 1)``)."""
        lo = float(self.corr_bounds()[0][0]) - EDGE if self.corr_keys else -1.0
        out = self._visit_sd_priors(sd_scale) if self.heterogeneous else {}
        return out | {k: _corr_prior(round(lo, 12)) for k in self.corr_keys}

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        out = {"sigma2": sigma2} | {k: draws[k] for k in self.corr_keys}
        return out | (self._visit_vars_from_draws(draws) if self.heterogeneous else {})


class HeterogeneousCS(_CorrelationByVisit):
    """``csh``: compound symmetry with a variance per visit (SAS TYPE=CSH)."""

    name = "csh"
    description = "compound symmetry over the visits (a factor) within g, a variance per visit"
    # s_j s_k rho + tau is not of the form s'_j s'_k rho' unless the variances are equal: a random intercept
    # is identified through unequal variances only (weakly near equal ones), as nlme and SAS allow it
    confounded_with_intercept = False

    def _corr_names(self) -> tuple[str, ...]:
        return ("rho",)

    def corr_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-1.0 / max(self.m - 1, 1) + EDGE]), np.array([1.0 - EDGE])

    def corr(self, nat: dict[str, Any], xp: Any) -> list[list[Any]]:
        return [[1.0 if j == k else nat["rho"] for k in range(self.m)] for j in range(self.m)]


class HeterogeneousAR1(_CorrelationByVisit):
    """``ar1h``: AR(1) in the visit index with a variance per visit (SAS TYPE=ARH(1))."""

    name = "ar1h"
    description = "AR(1) in the visit index (a factor) within g, a variance per visit"
    # the correlation decays with the lag; a random intercept adds a constant that does not: identifiable
    # (the classic random intercept plus AR(1) errors)
    confounded_with_intercept = False

    def _corr_names(self) -> tuple[str, ...]:
        return ("rho",)

    def corr(self, nat: dict[str, Any], xp: Any) -> list[list[Any]]:
        return [[1.0 if j == k else nat["rho"] ** abs(j - k) for k in range(self.m)] for j in range(self.m)]


class Toeplitz(_CorrelationByVisit):
    """``toep``: one variance, a correlation per visit lag (SAS TYPE=TOEP)."""

    name = "toep"
    description = "Toeplitz over the visit index (a factor) within g: a correlation per lag, one variance"
    heterogeneous = False
    # sigma2 rho_|j-k| + tau is again Toeplitz (variance sigma2 + tau, every lag's covariance + tau): a random
    # intercept is not identifiable next to it
    confounded_with_intercept = True

    def _corr_names(self) -> tuple[str, ...]:
        return tuple(f"rho(lag {k})" for k in range(1, self.m))

    def corr(self, nat: dict[str, Any], xp: Any) -> list[list[Any]]:
        return [[1.0 if j == k else nat[f"rho(lag {abs(j - k)})"] for k in range(self.m)] for j in range(self.m)]

    def _pacf_keys(self) -> tuple[str, ...]:
        return tuple(f"pacf(lag {k})" for k in range(1, self.m))

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        """``sd(<visit>) ~ HalfNormal(sd_scale)`` per visit after the first (``toeph``) and the partial
        autocorrelations ``pacf(lag k) ~ Uniform(-1, 1)``: independent correlations ``rho(lag k)`` in
        ``(-1, 1)`` need not make a positive definite matrix, partial autocorrelations in ``(-1, 1)``
        always do, and every positive definite Toeplitz correlation has one set of them
        (:func:`autocorrelations`)."""
        out = self._visit_sd_priors(sd_scale) if self.heterogeneous else {}
        return out | {k: _corr_prior(-1.0) for k in self._pacf_keys()}

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        rho = autocorrelations([draws[k] for k in self._pacf_keys()])
        out = {"sigma2": sigma2} | dict(zip(self.corr_keys, rho))
        return out | (self._visit_vars_from_draws(draws) if self.heterogeneous else {})


def autocorrelations(pacf: list[Any]) -> list[Any]:
    """``rho(lag 1..K)`` of a stationary sequence from its partial autocorrelations ``pacf(lag 1..K)``
    (the Durbin-Levinson recursion; NumPy or PyTensor scalars). The Toeplitz matrix of ``1, rho`` is
    positive definite if and only if every partial autocorrelation is in ``(-1, 1)``."""
    rho: list[Any] = []
    phi: list[Any] = []  # phi[j]: the (j + 1)-th coefficient of the AR(k) predictor, k = len(phi)
    for p in pacf:
        k = len(phi)
        if k == 0:
            r = p
        else:
            r = sum(phi[j] * rho[k - 1 - j] for j in range(k)) + p * (1 - sum(phi[j] * rho[j] for j in range(k)))
        phi = [phi[j] - p * phi[k - 1 - j] for j in range(k)] + [p]
        rho.append(r)
    return rho


class HeterogeneousToeplitz(Toeplitz):
    """``toeph``: a variance per visit, a correlation per visit lag (SAS TYPE=TOEPH, glmmTMB's ``toep``)."""

    name = "toeph"
    description = "Toeplitz over the visit index (a factor) within g: a correlation per lag, a variance per visit"
    heterogeneous = True
    # as csh: s_j s_k rho_|j-k| + tau is toeph only with equal variances, so a random intercept is identified
    # (weakly) through unequal variances
    confounded_with_intercept = False


class Diagonal(_CorrelationByVisit):
    """``diag``: independent, a variance per visit (SAS TYPE=UN(1), nlme's ``varIdent`` alone)."""

    name = "diag"
    description = "independent errors with a variance per visit (a factor) within g"
    # no covariance between visits: a random intercept is what correlates them (nlme's lme with varIdent)
    confounded_with_intercept = False

    def corr(self, nat: dict[str, Any], xp: Any) -> list[list[Any]]:
        return [[1.0 if j == k else 0.0 for k in range(self.m)] for j in range(self.m)]
