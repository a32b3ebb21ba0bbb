"""The engine of a residual structure within groups: ``V_i = s^2 (Z_i D_rel Z_i' + R_i)``, groups independent.

``R_i`` comes from the structure (:mod:`bayeslmm.cov`: ``ou``, ``ar1``, ``cs``, ...), relative to
the scale ``s^2``; every random-effect term is on the structure's grouping factor. ``psi`` = (the
lower triangles of the relative factors ``T_k``, ``D_rel = blockdiag(T_k T_k')``; then the
structure's parameters). ``beta`` and ``s^2`` are profiled out as in the blocked engine, from
``log|V_rel|`` and the cross-products ``[X_w y_w]'V_rel^{-1}[X_w y_w]`` of the working columns
(:mod:`bayeslmm.linalg._basis`: a large constant in the data costs no digits).

Each evaluation whitens ``[Z X y]`` by ``R`` alone and adds the random effects by Woodbury's
identity group by group. The whitening is the structure's business: a Markov structure (OU, AR(1))
uses the Kalman filter (:class:`bayeslmm.linalg._kalman.ProcessGram`, linear in the group sizes),
any other the dense per-group Cholesky (:class:`bayeslmm.linalg._dense.DenseGram`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..cov import MarkovStructure, Rows
from ..linalg import (
    DenseGram,
    FilterResult,
    FixedBasis,
    GramResult,
    ProcessGram,
    SerialLayout,
    TermBasis,
    kalman_smooth,
    lambda_blocks,
)
from ..spec import ModelSpec, ResidualProcess, check_terms
from ._objective import GLS, Engine, Pieces


def _tril_index(qs: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column in ``blockdiag(T_k)`` of each random-effect entry of theta (lme4's order)."""
    ri, ci, off = [], [], 0
    for q in qs:
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))  # column-major order of the lower triangle
        ri.append(rows[order] + off)
        ci.append(cols[order] + off)
        off += q
    return (
        (np.concatenate(ri).astype(np.int64), np.concatenate(ci).astype(np.int64))
        if qs
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    )


def _blockdiag(mats: list[np.ndarray]) -> np.ndarray:
    q = sum(m.shape[0] for m in mats)
    out = np.zeros((q, q))
    i = 0
    for m in mats:
        out[i : i + m.shape[0], i : i + m.shape[0]] = m
        i += m.shape[0]
    return out


class GroupedEngine(Engine):
    """``psi -> d(psi)`` for a model with a residual structure (module docstring).

    The data enter in working coordinates: ``[X_w y_w]`` and each term's ``Z_w = Z A_z``. ``psi``
    is in the original coordinates (lme4's ``T_k``); :meth:`working` takes the working one
    (``T_w = A_z^-1 T``, lower triangular), so that neither shifts nor units of the data change the
    optimiser's path. ``det A = 1``: the criterion needs no correction.
    """

    def __init__(self, spec: ModelSpec, reml: bool) -> None:
        res = spec.residual
        if res is None:
            raise ValueError("the grouped engine needs a model with a residual structure (spec.residual)")
        check_terms(res, spec.terms)
        self.spec = spec
        #: the residual structure bound to the rows (``spec.residual``, never None here)
        self.residual: ResidualProcess = res
        self.reml = reml
        self.structure = res.structure
        self.qs = tuple(t.q for t in spec.terms)
        self.nre = spec.ntheta
        #: original random-effect columns (``D_rel`` acts on these)
        self.Z = np.hstack([t.Zraw for t in spec.terms]) if spec.terms else None
        self.basis = FixedBasis.from_rows(spec.X, spec.y)
        self.term_bases = [TermBasis.from_rows(t.Zraw) for t in spec.terms]
        self._Ainv = _blockdiag([b.Ainv for b in self.term_bases])  # T_w = Ainv T, Z_w = Z Ainv^-1
        self._Az = np.linalg.inv(self._Ainv) if sum(self.qs) else self._Ainv
        self._ti, self._tj = _tril_index(self.qs)
        s = self.structure
        self.layout = SerialLayout.build(res.codes, res.t, len(res.levels), by_order=s.by_order)
        # the kernel keeps the only copy of the working columns [Z_w X_w y_w], in its row order
        closed = s.kalman_closed_form if isinstance(s, MarkovStructure) else True
        rows = ProcessGram.row_order(self.layout, closed)
        qt, p = sum(self.qs), spec.p
        U = np.empty((spec.n, qt + p + 1))
        i = 0
        for b, t in zip(self.term_bases, spec.terms):
            U[:, i : i + b.q] = b.apply(t.Zraw[rows])
            i += b.q
        shift = self.basis.intercept is not None
        for j in range(p):
            U[:, qt + j] = spec.X[rows, j]
            if shift:
                U[:, qt + j] -= self.basis.centres[j]
        U[:, qt + p] = self.basis.apply_y(spec.y[rows])
        if isinstance(s, MarkovStructure):
            self._gram: ProcessGram = ProcessGram(self.layout, None, None, closed_form=closed, U=U, q=qt)
        else:
            self._gram = DenseGram(self.layout, U=U, q=qt, feats={k: v[rows] for k, v in res.feats.items()})

    @property
    def Y(self) -> np.ndarray:
        """Working ``[X_w y_w]``, rows in the data's order (a new array)."""
        return self._gram.columns("Y")

    @property
    def Zw(self) -> np.ndarray | None:
        """Working random-effect columns ``Z_w = Z A_z`` (a new array), or None."""
        return self._gram.columns("Z")

    # -- parameters ---------------------------------------------------------
    def names(self) -> list[str]:
        return self.spec.theta_names() + list(self.structure.param_names)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.structure.bounds()
        return np.r_[self.spec.theta_lower(), lo], np.r_[np.full(self.nre, np.inf), hi]

    def start_candidates(self) -> list[np.ndarray]:
        """Random-effect factors 1 with each of the structure's starting values; the best one starts BOBYQA."""
        re0 = np.where(np.isfinite(self.spec.theta_lower()), 1.0, 0.0)
        starts = list(self.structure.start_values())
        if not self.spec.terms:  # no random effects: the structure's guess from least-squares residuals
            res = self.residual
            Xw, yw = self.Y[:, :-1], self.Y[:, -1]
            beta = np.linalg.lstsq(Xw, yw, rcond=None)[0]
            rows = Rows(dict(res.feats), res.codes, len(res.levels), dict(res.labels))
            starts += self.structure.data_starts(rows, yw - Xw @ beta)
        lo, hi = self.structure.bounds()
        return [np.r_[re0, np.clip(v, lo, hi)] for v in starts]

    def split(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(theta, structure parameters)``."""
        psi = np.asarray(psi, dtype=float)
        return psi[: self.nre], psi[self.nre :]

    def factors(self, psi: np.ndarray) -> list[np.ndarray]:
        return lambda_blocks(self.split(psi)[0], self.qs)

    def D_rel(self, psi: np.ndarray) -> np.ndarray | None:
        """``blockdiag(T_k T_k')`` of the original columns, or None without random effects."""
        Ts = self.factors(psi)
        return _blockdiag([T @ T.T for T in Ts]) if Ts else None

    def _factor(self, psi: np.ndarray, working: bool) -> np.ndarray | None:
        """``(q, q)`` factor ``T`` of the working ``D_w = Ainv D Ainv'`` (block diagonal)."""
        if not self.nre:
            return None
        qt = self._Ainv.shape[0]
        T = np.zeros((qt, qt))
        T[self._ti, self._tj] = psi[: self.nre]
        return T if working else self._Ainv @ T

    def to_working(self, psi: np.ndarray) -> np.ndarray:
        psi = np.array(psi, dtype=float)
        Tw = [b.to_working(T) for b, T in zip(self.term_bases, self.factors(psi))]
        psi[: self.nre] = _blockdiag(Tw)[self._ti, self._tj] if Tw else psi[:0]
        return psi

    def from_working(self, psi_w: np.ndarray) -> np.ndarray:
        psi = np.array(psi_w, dtype=float)
        Ts = [b.from_working(T) for b, T in zip(self.term_bases, lambda_blocks(psi[: self.nre], self.qs))]
        psi[: self.nre] = _blockdiag(Ts)[self._ti, self._tj] if Ts else psi[:0]
        return psi

    # -- evaluation ---------------------------------------------------------
    @property
    def working_gradient(self) -> Callable[[np.ndarray], tuple[float, np.ndarray] | None] | None:
        """``psi_w -> (criterion, gradient)`` for a structure whitened densely (not a Markov one), with
        ``V_i = Z_w,i T_w T_w'Z_w,i' + R_i`` per group; None for the Kalman path."""
        if not isinstance(self._gram, DenseGram):
            return None
        gram: DenseGram = self._gram

        def fg(psi_w: np.ndarray) -> tuple[float, np.ndarray] | None:
            psi_w = np.asarray(psi_w, dtype=float)
            T = self._factor(psi_w, working=True)
            out = gram.criterion_gradient(self.structure, self.split(psi_w)[1], self.reml, T)
            if out is None:
                return None
            val, dT, gs = out[:3]
            return val, np.r_[dT[self._ti, self._tj], gs]

        return fg

    @property
    def varpar_gradient(self) -> Callable[[np.ndarray], np.ndarray | None] | None:
        """``(psi, s) -> d deviance_varpar / d(psi, s)`` (original coordinates) for a structure whitened
        densely, else None: what makes Satterthwaite's Hessian ``k + 1`` gradients, not ``O(k^2)`` criteria."""
        if not isinstance(self._gram, DenseGram):
            return None
        gram: DenseGram = self._gram

        def grad(varpar: np.ndarray) -> np.ndarray | None:
            varpar = np.asarray(varpar, dtype=float)
            psi, s = varpar[:-1], float(varpar[-1])
            Tw = self._factor(psi, working=False)  # Ainv T: the factor of the working columns
            out = gram.criterion_gradient(self.structure, self.split(psi)[1], self.reml, Tw, scale2=s * s)
            if out is None:
                return None
            _, dTw, gs, ds = out  # type: ignore[misc]
            dT = self._Ainv.T @ dTw if self.nre else dTw  # T_w = Ainv T
            return np.r_[dT[self._ti, self._tj], gs, ds]

        return grad

    def gram(self, psi: np.ndarray, working: bool = False) -> GramResult:
        """``log|V_rel|`` and the working cross-products ``[X_w y_w]'V_rel^{-1}[X_w y_w]`` at ``psi``."""
        psi = np.asarray(psi, dtype=float)
        return self._gram.evaluate(self._factor(psi, working), self.structure, self.split(psi)[1])

    def _profile(self, g: GramResult) -> tuple[np.ndarray, Pieces] | None:
        """Cholesky factor of the working cross-products and the criterion's pieces."""
        if not np.isfinite(g.logdet):
            return None
        try:
            L = np.linalg.cholesky(g.C)
        except np.linalg.LinAlgError:
            return None
        p = self.spec.p
        d = np.diagonal(L)
        return L, Pieces(g.logdet, 2.0 * float(np.log(d[:p]).sum()), float(d[p]) ** 2)

    def pieces(self, psi: np.ndarray, working: bool = False) -> Pieces | None:
        out = self._profile(self.gram(psi, working))
        return None if out is None else out[1]

    def gls(self, psi: np.ndarray, working: bool = False) -> GLS | None:
        g = self.gram(psi, working)
        out = self._profile(g)
        if out is None:
            return None
        L, pc = out
        p = self.spec.p
        L11 = L[:p, :p]
        beta_w = np.linalg.solve(L11.T, L[p, :p]) if p else np.zeros(0)
        return GLS(self.basis, beta_w, np.linalg.inv(g.C[:p, :p]) if p else np.zeros((0, 0)), pc, g)

    def cov_working(self, psi: np.ndarray) -> tuple[FixedBasis, np.ndarray] | None:
        g = self.gram(psi)
        if not np.isfinite(g.logdet):
            return None
        p = self.spec.p
        return self.basis, (np.linalg.inv(g.C[:p, :p]) if p else np.zeros((0, 0)))

    def cross_products(self, psi: np.ndarray) -> tuple[float, np.ndarray, FixedBasis] | None:
        g = self.gram(psi)
        return None if not np.isfinite(g.logdet) else (g.logdet, g.C, self.basis)

    @property
    def _group_slot(self) -> np.ndarray:
        """Position of each level (level order) in the kernel's group order."""
        order = self.layout.group_order
        slot = np.empty(len(self.residual.levels), dtype=np.int64)
        slot[order] = np.arange(order.size)
        return slot

    def modes(self, gls: GLS) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """BLUPs ``b = A_z b_w``, ``b_w = D_w Z_w'V^-1 (y_w - X_w beta_w)`` (the Woodbury pieces), per term."""
        if not self.spec.terms:
            return [], []
        a, P = gls.state.blup()
        slot = self._group_slot
        a, P = a[slot], P[slot]
        p, Az = self.spec.p, self._Az
        b = (a[:, :, p] - a[:, :, :p] @ gls.beta_w) @ Az.T  # (G, q)
        P = Az @ P @ Az.T
        bs, cs, i = [], [], 0
        for t in self.spec.terms:
            bs.append(b[:, i : i + t.q])
            cs.append(P[:, i : i + t.q, i : i + t.q])
            i += t.q
        return bs, cs

    def filter(self, psi: np.ndarray, working: bool = True) -> FilterResult:
        """Whitened ``[X y]`` (``V_rel^{-1/2}``: the standardised innovations), ``log|V_rel|`` and, for a
        Markov structure, the filter's BLUP states.

        With ``working`` the columns are the working ``[X_w y_w]`` and the states those of ``b_w``;
        otherwise the original ``[X y]`` and ``b``.
        """
        psi = np.asarray(psi, dtype=float)
        T = self._factor(psi, False)
        D = None if T is None else T @ T.T
        g = self._gram
        fr = g.filter(g.columns("Y"), g.columns("Z"), D, self.structure, self.split(psi)[1])
        if working or not np.isfinite(fr.logdet):
            return fr
        Minv = self._to_original()
        a_b, P_b = fr.a_b, fr.P_b
        if a_b is not None:
            a_b = self._Az @ a_b @ Minv
            P_b = self._Az @ P_b @ self._Az.T
        return FilterResult(fr.white @ Minv, fr.logdet, a_b, P_b)

    def _to_original(self) -> np.ndarray:
        """``(c, c)`` map of columns: ``[X y] = [X_w y_w] M``."""
        p = self.spec.p
        M = np.eye(p + 1)
        b = self.basis
        if b.intercept is not None:
            M[b.intercept, :p] += b.centres
            M[b.intercept, p] = b.shift_y
        return M

    def residual_variance(self, psi: np.ndarray, scale2: float) -> float:
        return self.structure.natural(self.split(psi)[1], scale2)["sigma2"]

    def residual_params(self, psi: np.ndarray, scale2: float) -> dict[str, Any]:
        return self.structure.residual_params(self.split(psi)[1], scale2)

    def draw_residual(self, psi: np.ndarray, scale2: float, rng: np.random.Generator) -> np.ndarray:
        return self._gram.draw(self.structure, self.split(psi)[1], scale2, rng)

    def with_response(self, y: np.ndarray) -> GroupedEngine:
        return GroupedEngine(self.spec.with_response(y), self.reml)

    def scaled_residuals(self, fit: Any) -> np.ndarray:
        """The normalized residuals (nlme's ``type = "normalized"``): the standardised innovations
        ``V^{-1/2}(y - X beta_hat)``, independent N(0, 1) under the model."""
        w = self.filter(fit.psi).white  # working columns
        p = self.spec.p
        return (w[:, p] - w[:, :p] @ fit._gls.beta_w) / np.sqrt(fit.scale2)

    # -- the process at observed and new times ----------------------------------
    def process(self, fit: Any, newdata: Any) -> pd.DataFrame:
        """Conditional mean and sd of the residual process, and of the whole random part
        (see :meth:`LMMFit.process`)."""
        from ..spec import as_pandas
        from ._predict import apply_design

        spec, res, s = self.spec, self.residual, self.structure
        if newdata is None:
            codes_new, t_new = np.zeros(0, dtype=np.int64), np.zeros(0)
            feats_new = {k: v[:0] for k, v in res.feats.items()}
            Z_new = np.zeros((0, sum(self.qs)))
        else:
            try:
                s.check_new_times()
            except ValueError as e:
                raise DataError(str(e)) from None
            df = as_pandas(newdata)
            t_new, feats_new = res.new_features(df)
            codes_new = _new_codes(df, res)
            Z_new = (
                np.hstack(
                    [
                        apply_design(t.design, df, f"random-effect columns of ({t.lhs} | {t.group})").to_numpy(
                            dtype=float
                        )
                        for t in spec.terms
                    ]
                )
                if spec.terms
                else np.zeros((len(df), 0))
            )
        known = codes_new >= 0
        n = spec.n
        Yw, p = self.Y, spec.p  # y - X beta, computed in the working columns
        resid = Yw[:, p] - Yw[:, :p] @ fit._gls.beta_w
        D = self.D_rel(fit.psi)
        psi_s = self.split(fit.psi)[1]
        m_known = int(known.sum())
        codes = np.concatenate([res.codes, codes_new[known]])
        t_all = np.concatenate([res.t, t_new[known]])
        feats_all = {k: np.concatenate([v, feats_new[k][known]]) for k, v in res.feats.items()}
        Z = np.vstack([self.Z, Z_new[known]]) if self.Z is not None else None
        if isinstance(s, MarkovStructure):
            observed = np.r_[np.ones(n, bool), np.zeros(m_known, bool)]
            decay, var_w, kappa = s.markov_process(psi_s)
            layout = SerialLayout.build(codes, t_all, len(res.levels), by_order=s.by_order)
            mean, cov = kalman_smooth(layout, np.r_[resid, np.zeros(m_known)], observed, Z, D, decay, var_w, kappa)
            h = np.ones((codes.size, cov.shape[1]))
            if spec.terms:
                h[:, 1:] = Z
            proc, proc_var = mean[:, 0], cov[:, 0, 0]
            rand = np.einsum("ns,ns->n", h, mean)
            rand_var = np.einsum("ns,nst,nt->n", h, cov, h)
            var_latent = fit.scale2 * var_w  # the process without its measurement error
        else:
            proc, proc_var, rand, rand_var = _dense_conditional(s, psi_s, codes, t_all, feats_all, n, resid, Z, D)
            nat_s = s.natural(psi_s, fit.scale2)
            var_latent = np.array(
                [
                    float(s.matrix({k: v[None, i : i + 1] for k, v in feats_new.items()}, nat_s)[0, 0, 0])
                    for i in range(len(t_new))
                ]
            )
        s2 = fit.scale2
        sel = slice(0, n) if newdata is None else slice(n, None)
        cols = {
            "process": proc[sel],
            "process_sd": _sd(s2 * proc_var[sel], s2),
            "random": rand[sel],
            "random_sd": _sd(s2 * rand_var[sel], s2),
        }
        if newdata is None:
            return pd.DataFrame(cols)
        m = len(codes_new)
        marg = var_latent + (s2 * np.einsum("nq,qp,np->n", Z_new, D, Z_new) if D is not None else 0.0)
        out = pd.DataFrame(
            {
                "process": np.zeros(m),
                "process_sd": np.broadcast_to(np.sqrt(var_latent), (m,)).copy(),
                "random": np.zeros(m),
                "random_sd": np.sqrt(marg),
            }
        )
        k = np.flatnonzero(known)
        for c, v in cols.items():
            out.loc[k, c] = v
        return out

    def predict(
        self,
        fit: Any,
        newdata: Any = None,
        *,
        re_form: bool = True,
        allow_new_levels: bool = False,
        se_fit: bool = False,
    ) -> Any:
        """``X beta_hat + E(z'b + e | y)`` (``re_form``) or ``X beta_hat``; see :meth:`LMMFit.predict`."""
        from ..spec import as_pandas
        from ._predict import fixed_matrix

        spec, res = self.spec, self.residual
        if newdata is None:
            X = spec.X
            unseen = np.zeros(spec.n, bool)
        else:
            df = as_pandas(newdata)
            X = fixed_matrix(spec, df)
            unseen = _new_codes(df, res) < 0
        pred = X @ fit.fixef.to_numpy()
        sd_rand = np.zeros(len(pred))
        if re_form:
            if unseen.any() and not allow_new_levels and res.group != "(row)":
                raise DataError(
                    f"{int(unseen.sum())} new row(s) belong to levels of {res.group!r} not in "
                    "the fit; pass allow_new_levels=True to predict them at the population level"
                )
            pr = self.process(fit, newdata)
            pred = pred + np.where(unseen, 0.0, pr.random.to_numpy())
            sd_rand = pr.random_sd.to_numpy()
        if not se_fit:
            return pred
        basis, V = fit.vcov_working()
        Xw = basis.apply(X, None)[0]
        se = np.sqrt(np.einsum("np,pq,nq->n", Xw, V, Xw))
        return pd.DataFrame({"fit": pred, "se_fixed": se, "sd_random": sd_rand})


def _new_codes(df: pd.DataFrame, res: ResidualProcess) -> np.ndarray:
    """Group of each new row (-1: a group the fit has not seen; every row of a structure without
    groups, ``"(row)"``, is a new group; ``| 1`` has one group)."""
    from ._predict import codes_for

    if res.factors:
        return codes_for(df, res.factors, res.levels)
    return np.full(len(df), -1 if res.group == "(row)" else 0, dtype=np.int64)


def _sd(var: np.ndarray, scale2: float) -> np.ndarray:
    """Standard deviations from conditional variances: rounding below 0 is 0; a clearly negative variance
    (a new row that the structure cannot hold, e.g. compound symmetry with ``rho < -1/n_i`` in a group
    that grows to ``n_i + 1``) is NaN, not a number that looks valid."""
    return np.sqrt(np.where(var > -1e-8 * scale2, np.maximum(var, 0.0), np.nan))


def _dense_conditional(
    structure: Any,
    psi_s: np.ndarray,
    codes: np.ndarray,
    t: np.ndarray,
    feats: dict[str, np.ndarray],
    n: int,
    resid: np.ndarray,
    Z: np.ndarray | None,
    D: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Conditional means and variances (``/ s^2``) of the residual ``e`` and of ``z'b + e`` at every row
    (the first ``n`` observed, with residuals ``resid``; the rest new), group by group, densely."""
    nat = structure.natural(psi_s, 1.0)
    total = codes.size
    proc, proc_var = np.zeros(total), np.zeros(total)
    rand, rand_var = np.zeros(total), np.zeros(total)
    order = np.lexsort((np.arange(total), t, codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        R = structure.matrix({k: v[rows] for k, v in feats.items()}, nat)
        ZDZ = Z[rows] @ D @ Z[rows].T if Z is not None else np.zeros_like(R)
        obs = rows < n
        Vfull = R + ZDZ
        Voo = Vfull[np.ix_(obs, obs)]
        r = resid[rows[obs]]
        alpha = np.linalg.solve(Voo, r)
        for cov_all, m_out, v_out in ((R, proc, proc_var), (Vfull, rand, rand_var)):
            cross = cov_all[:, obs]  # Cov(part at every row, y_obs)
            m_out[rows] = cross @ alpha
            v_out[rows] = np.diag(cov_all) - np.einsum("ij,ji->i", cross, np.linalg.solve(Voo, cross.T))
    return proc, proc_var, rand, rand_var
