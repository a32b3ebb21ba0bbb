"""Vectorised Kalman filter over groups: whitening ``[X y]`` under a serial process.

Within group ``i`` the observations, in time order, are ``y_t = x_t'beta + z_t'b + w_t + e_t``
with ``b ~ N(0, s^2 D_rel)`` constant in time, ``w`` a stationary AR(1)/OU process and
``e ~ N(0, s^2 kappa)``. The state is ``(w, b)`` (``w`` absent for independent errors);
between observations ``t`` and ``t'`` the process decays by ``r = rho^(t' - t)``
(``phi`` per step for AR(1)) and gains variance ``var_w (1 - r^2)``.

The filter's gains depend on the covariance parameters only, so one pass turns every
column of ``[X y]`` into its innovations divided by their standard deviation: the
whitened ``V_rel^{-1/2}[X y]`` (``V = s^2 V_rel``), together with
``log|V_rel| = sum log F_t``. The work is O(n_i s^2) per group (``s`` = state
dimension): linear in the group size, and never an ``n x n`` matrix. Groups are
processed together, step by step: groups sorted by decreasing size make the active
groups at step ``k`` a prefix.

The criterion itself (:class:`ProcessGram`) is computed in two stages: the process alone
(``R = var_w P + kappa I``, a scalar state) whitens ``[Z X y]``, in closed form without a nugget
(AR(1): ``(u_t - phi u_{t-1}) / sqrt(var_w (1 - phi^2))``, one vectorised pass) and by the scalar
filter with one; the random effects then enter by Woodbury's identity per group,
``log|V| = log|R| + sum_i log|I + T'Z_i'R_i^-1 Z_i T|``. Every operation is on whole arrays,
so an evaluation costs a few dozen NumPy calls however many steps the groups have.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, overload

import numpy as np

from ._batched import chol_batched, solve_lower_batched


@dataclass(frozen=True)
class SerialLayout:
    """Row order for the filter.

    Attributes
    ----------
    rows
        List over steps ``k`` of ``(A_k,)`` row indices: the k-th observation (time order)
        of each group with more than ``k`` observations, groups by decreasing size.
    gaps
        List over steps of ``(A_k,)`` time since the group's previous observation
        (``gaps[0]`` is all zeros).
    group_order
        ``(G,)`` group codes in filter order.
    order
        ``(n,)`` rows group by group (groups in ``group_order``, each in time order).
    starts
        ``(G,)`` first position of each group in ``order``.
    bounds
        ``(K + 1,)`` offsets of the steps in ``perm``.
    perm, gap_all
        ``(n,)`` rows and gaps in step order: ``rows[k]``/``gaps[k]`` are their slices ``bounds[k]:bounds[k+1]``.
    """

    rows: list[np.ndarray]
    gaps: list[np.ndarray]
    group_order: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    bounds: np.ndarray
    perm: np.ndarray
    gap_all: np.ndarray

    @classmethod
    def build(cls, codes: np.ndarray, t: np.ndarray, ngroups: int, by_order: bool) -> SerialLayout:
        """Order rows by group (largest first) then time; ``by_order`` makes every gap 1 (AR(1))."""
        n = codes.shape[0]
        sizes = np.bincount(codes, minlength=ngroups)
        group_order = np.argsort(-sizes, kind="stable")
        rank = np.empty(ngroups, dtype=np.int64)
        rank[group_order] = np.arange(ngroups)
        srt = np.lexsort((np.arange(n), t, rank[codes]))
        sorted_sizes = sizes[group_order]
        starts = np.cumsum(sorted_sizes) - sorted_sizes
        pos = np.arange(n)
        pos -= np.repeat(starts, sorted_sizes)  # position within the group
        # gap to the group's previous observation, in the group-by-group order (0 at a first row)
        if by_order:
            gap_g = np.ones(n)
        else:
            gap_g = t[srt]
            gap_g[1:] -= gap_g[:-1].copy()
        gap_g[pos == 0] = 0.0
        # step order: stable sort by position within the group (O(n log n), whatever the group sizes)
        counts = np.bincount(pos, minlength=1) if n else np.zeros(0, dtype=np.int64)
        by_step = np.argsort(pos, kind="stable")
        del pos
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        perm = srt[by_step]
        gap_s = gap_g[by_step]
        del by_step, gap_g
        rows = [perm[bounds[k] : bounds[k + 1]] for k in range(counts.size)]
        gaps = [gap_s[bounds[k] : bounds[k + 1]] for k in range(counts.size)]
        nonempty = sorted_sizes > 0
        return cls(
            rows=rows,
            gaps=gaps,
            group_order=group_order[nonempty],
            order=srt,
            starts=starts[nonempty].astype(np.int64),
            bounds=bounds,
            perm=perm,
            gap_all=gap_s,
        )


@dataclass
class FilterResult:
    """Output of :func:`kalman_whiten`.

    ``white`` is ``(n, c)`` in the original row order; ``logdet`` is ``log|V_rel|``
    (``inf`` if some innovation variance vanished); ``a_b``/``P_b`` are the final filtered
    mean ``(G, q, c)`` and covariance ``(G, q, q)`` of ``b`` per group in filter order (the
    smoothed ones too, since ``b`` does not change in time).
    """

    white: np.ndarray
    logdet: float
    a_b: np.ndarray | None
    P_b: np.ndarray | None


def kalman_whiten(
    layout: SerialLayout,
    Y: np.ndarray,
    Z: np.ndarray | None,
    D_rel: np.ndarray | None,
    decay: float | None,
    var_w: float,
    kappa: float,
) -> FilterResult:
    """Whiten the columns of ``Y`` group by group.

    Parameters
    ----------
    layout
        Row order (:class:`SerialLayout`).
    Y
        ``(n, c)`` columns to whiten (``[X y]``).
    Z
        ``(n, q)`` random-effect columns of the process's grouping factor, or None.
    D_rel
        ``(q, q)`` covariance of ``b`` relative to ``s^2``.
    decay
        ``rho`` (OU, per unit of time) or ``phi`` (AR(1), per step); None: no process.
    var_w
        Stationary variance of the process relative to ``s^2``.
    kappa
        Measurement-error variance relative to ``s^2``.
    """
    n, c = Y.shape
    G = layout.rows[0].size if layout.rows else 0
    has_w = decay is not None
    q = 0 if Z is None else Z.shape[1]
    s = int(has_w) + q
    a = np.zeros((G, s, c))
    P = np.zeros((G, s, s))
    if has_w:
        P[:, 0, 0] = var_w
    if q:
        P[:, int(has_w) :, int(has_w) :] = D_rel
    Zq = Z if q else None  # the random-effect columns, None if there are none
    white = np.empty((n, c))
    logdet = 0.0
    for rows, gap in zip(layout.rows, layout.gaps):
        A = rows.size
        aa, PP = a[:A], P[:A]
        if decay is not None:
            r = np.power(decay, gap)  # (A,): 1 at the first step and at repeated times
            aa[:, 0, :] *= r[:, None]
            PP[:, 0, :] *= r[:, None]
            PP[:, :, 0] *= r[:, None]
            PP[:, 0, 0] += var_w * (1.0 - r * r)
        h = np.empty((A, s))
        if has_w:
            h[:, 0] = 1.0
        if Zq is not None:
            h[:, int(has_w) :] = Zq[rows]
        Ph = np.einsum("ast,at->as", PP, h)
        F = np.einsum("as,as->a", h, Ph) + kappa
        if np.any(F <= 1e-300):
            return FilterResult(white, np.inf, None, None)
        v = Y[rows] - np.einsum("as,asc->ac", h, aa)
        sqF = np.sqrt(F)
        white[rows] = v / sqF[:, None]
        logdet += float(np.sum(np.log(F)))
        K = Ph / F[:, None]
        aa += K[:, :, None] * v[:, None, :]
        PP -= K[:, :, None] * Ph[:, None, :]
    off = int(has_w)
    return FilterResult(white, logdet, a[:, off:, :] if q else None, P[:, off:, off:] if q else None)


def kalman_smooth(
    layout: SerialLayout,
    r: np.ndarray,
    observed: np.ndarray,
    Z: np.ndarray | None,
    D_rel: np.ndarray | None,
    decay: float,
    var_w: float,
    kappa: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Conditional mean and covariance of the state ``(w, b)`` at every row given a group's data.

    Rauch-Tung-Striebel smoothing of the residuals ``r = y - X beta`` (one column).
    Rows with ``observed`` False (new times to predict at) are passed through the
    prediction step without an update.

    Returns
    -------
    mean : ``(n, s)`` smoothed state per row; cov : ``(n, s, s)``, relative to ``s^2``.
    """
    n = r.shape[0]
    G = layout.rows[0].size if layout.rows else 0
    q = 0 if Z is None else Z.shape[1]
    s = 1 + q
    a = np.zeros((G, s))
    P = np.zeros((G, s, s))
    P[:, 0, 0] = var_w
    if q:
        P[:, 1:, 1:] = D_rel
    Zq = Z if q else None  # the random-effect columns, None if there are none
    pred_a, pred_P, filt_a, filt_P, decays = [], [], [], [], []
    for rows, gap in zip(layout.rows, layout.gaps):
        A = rows.size
        aa, PP = a[:A], P[:A]
        d = np.power(decay, gap)
        aa[:, 0] *= d
        PP[:, 0, :] *= d[:, None]
        PP[:, :, 0] *= d[:, None]
        PP[:, 0, 0] += var_w * (1.0 - d * d)
        pred_a.append(aa.copy())
        pred_P.append(PP.copy())
        decays.append(d)
        h = np.ones((A, s))
        if Zq is not None:
            h[:, 1:] = Zq[rows]
        Ph = np.einsum("ast,at->as", PP, h)
        F = np.einsum("as,as->a", h, Ph) + kappa
        obs = observed[rows] & (F > 1e-300)
        K = np.where(obs[:, None], Ph / np.where(obs, F, 1.0)[:, None], 0.0)
        v = np.where(obs, r[rows] - np.einsum("as,as->a", h, aa), 0.0)
        aa += K * v[:, None]
        PP -= K[:, :, None] * Ph[:, None, :]
        filt_a.append(aa.copy())
        filt_P.append(PP.copy())
    mean = np.empty((n, s))
    cov = np.empty((n, s, s))
    smoothed: tuple[np.ndarray, np.ndarray] | None = None  # mean and covariance at the next step
    for k in range(len(layout.rows) - 1, -1, -1):
        a_k, P_k = filt_a[k].copy(), filt_P[k].copy()
        if smoothed is not None:
            sm_a, sm_P = smoothed
            A1 = sm_a.shape[0]
            Tm = np.broadcast_to(np.eye(s), (A1, s, s)).copy()
            Tm[:, 0, 0] = decays[k + 1]
            J = P_k[:A1] @ np.swapaxes(Tm, 1, 2) @ np.linalg.pinv(pred_P[k + 1], hermitian=True)
            a_k[:A1] += np.einsum("ast,at->as", J, sm_a - pred_a[k + 1])
            P_k[:A1] += J @ (sm_P - pred_P[k + 1]) @ np.swapaxes(J, 1, 2)
        rows = layout.rows[k]
        mean[rows] = a_k
        cov[rows] = P_k
        smoothed = a_k, P_k
    return mean, cov


#: Above this many entries of the per-row products ``n q (q + c)``, group sums go column pair by pair.
_SMALL_GRAM = 1_000_000
#: Up to this many entries ``G q^2`` of the per-group Woodbury matrices, NumPy's stacked LAPACK is used.
_SMALL_STACK = 2_000


@dataclass
class GramResult:
    """Output of :class:`ProcessGram`: the pieces of the profiled criterion at one parameter value.

    ``logdet`` is ``log|V_rel|`` (``inf`` where ``V_rel`` is singular) and ``C`` the ``(c, c)``
    cross-products ``Y'V_rel^{-1}Y`` of the columns ``Y`` (``[X y]``). With random effects,
    ``T`` is the factor used (``D_rel = T T'``), ``L`` the ``(G, q, q)`` Cholesky factors of
    ``M_i = I + T'Z_i'R_i^-1 Z_i T`` and ``Lb`` the ``(G, q, c)`` solutions ``L_i^-1 T'Z_i'R_i^-1 Y_i``,
    groups in filter order; :meth:`blup` turns them into the conditional means and covariances of ``b``.
    """

    logdet: float
    C: np.ndarray
    T: np.ndarray | None = None
    L: np.ndarray | None = None
    Lb: np.ndarray | None = None

    def blup(self) -> tuple[np.ndarray, np.ndarray]:
        """``E(b | Y_i)`` per column ``(G, q, c)`` and ``cov(b | y_i) / s^2`` ``(G, q, q)``.

        ``T M_i^-1 T' Z_i'R_i^-1 Y_i`` and ``T M_i^-1 T'``, groups in filter order.
        """
        T, L, Lb = self.T, self.L, self.Lb
        if T is None or L is None or Lb is None:
            raise ValueError("no BLUPs: the model has no random effects (or V_rel is singular)")
        G, q, _ = L.shape
        Lt = np.swapaxes(L, 1, 2)
        u = np.linalg.solve(Lt, Lb)  # M^-1 T'Z'R^-1 Y
        Linv = np.linalg.solve(L, np.broadcast_to(np.eye(q), (G, q, q)))
        Minv = np.swapaxes(Linv, 1, 2) @ Linv
        return T @ u, T @ Minv @ T.T


class ProcessGram:
    """``log|V_rel|`` and ``Y'V_rel^{-1}Y`` for fixed data, as a function of the covariance parameters.

    Built once per data set (the rows are put in the order the kernel needs); each call
    then whitens ``[Z Y]`` by the process alone and adds the random effects by Woodbury's
    identity (module docstring).

    Parameters
    ----------
    layout
        Row order (:class:`SerialLayout`).
    Y
        ``(n, c)`` columns (``[X y]``).
    Z
        ``(n, q)`` random-effect columns of the process's grouping factor, or None.
    closed_form
        Whiten in closed form (AR(1) by order, or any process without a nugget): the call's
        ``kappa`` must then be 0. Otherwise the scalar Kalman filter runs step by step.
    """

    def __init__(
        self,
        layout: SerialLayout,
        Y: np.ndarray | None,
        Z: np.ndarray | None,
        closed_form: bool,
        *,
        U: np.ndarray | None = None,
        q: int | None = None,
    ) -> None:
        self.layout = layout
        self.closed_form = closed_form
        rows = self.row_order(layout, closed_form)
        self._rows = rows
        if U is None:  # [Z Y] in the kernel's row order (the only copy kept)
            if Y is None:
                raise ValueError("ProcessGram needs the columns Y, or U already in row_order()")
            self.q = 0 if Z is None else Z.shape[1]
            U = np.empty((Y.shape[0], self.q + Y.shape[1]))
            if Z is not None and self.q:
                U[:, : self.q] = Z[rows]
            U[:, self.q :] = Y[rows]
        else:  # already in row_order(): [Z Y] with q columns of Z
            self.q = int(q or 0)
        self.U = U
        self.n = U.shape[0]
        self.c = U.shape[1] - self.q
        self.G = int(layout.starts.size)
        if closed_form:
            first = np.zeros(self.n, dtype=bool)
            first[layout.starts] = True
            self.first = first
            gap = np.empty(self.n)
            inv = np.empty(self.n, dtype=np.int64)
            inv[layout.order] = np.arange(self.n)
            gap[inv[layout.perm]] = layout.gap_all  # gap to the previous row of the group, in this order
            self.gap = gap
            self.unit_gaps = bool(np.all(gap[~first] == 1.0))
        else:
            self.gap = layout.gap_all
            self.bounds = [(int(a), int(b)) for a, b in zip(layout.bounds[:-1], layout.bounds[1:])]

    @staticmethod
    def row_order(layout: SerialLayout, closed_form: bool) -> np.ndarray:
        """The rows of the data in the kernel's order (``U = [Z Y][row_order]``)."""
        return layout.order if closed_form else layout.perm

    @overload
    def columns(self, which: Literal["Y"]) -> np.ndarray: ...
    @overload
    def columns(self, which: Literal["Z"]) -> np.ndarray | None: ...

    def columns(self, which: Literal["Y", "Z"]) -> np.ndarray | None:
        """``Y`` (``"Y"``) or ``Z`` (``"Z"``) as given, rows in the original order (a new array)."""
        if which == "Z" and not self.q:
            return None
        sl = slice(0, self.q) if which == "Z" else slice(self.q, None)
        out = np.empty((self.n, sl.indices(self.U.shape[1])[1] - sl.indices(self.U.shape[1])[0]))
        out[self._rows] = self.U[:, sl]
        return out

    @cached_property
    def step_to_group(self) -> np.ndarray:
        """Step-order position of each row of ``layout.order`` (for the group sums of small problems)."""
        pos = np.empty(self.n, dtype=np.int64)
        pos[self.layout.perm] = np.arange(self.n)
        return pos[self.layout.order]

    @cached_property
    def step_group(self) -> np.ndarray:
        """Group (filter order) of each row in step order: step ``k`` holds groups ``0 .. A_k - 1``."""
        if not self.bounds:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(b - a) for a, b in self.bounds])

    # -- the process alone ---------------------------------------------------
    def _whiten_closed(self, decay: float, var_w: float) -> tuple[np.ndarray, float]:
        """``R^{-1/2}U`` group by group (rows in ``layout.order``) for a process without a nugget.

        Row ``t`` of a group becomes ``(u_t - r_t u_{t-1}) / sqrt(var_w (1 - r_t^2))`` with ``r_t`` the
        decay since the previous row (0 at a group's first row): the innovations of the process.
        """
        U = self.U
        n = self.n
        if self.unit_gaps:  # AR(1): one decay, first rows patched
            e1 = var_w * (1.0 - decay * decay)
            W = np.empty_like(U)
            if n:
                np.multiply(U[:-1], -decay, out=W[1:])
                W[1:] += U[1:]
                W *= 1.0 / np.sqrt(e1)
                st = self.layout.starts
                W[st] = U[st] * (1.0 / np.sqrt(var_w))
            return W, float(self.G * np.log(var_w) + (n - self.G) * np.log(e1))
        r = np.where(self.first, 0.0, np.power(decay, self.gap))
        e = var_w * (1.0 - r * r)
        s = 1.0 / np.sqrt(e)
        W = np.empty_like(U)
        if n:
            W[0] = U[0] * s[0]
            np.multiply(U[:-1], -r[1:, None], out=W[1:])
            W[1:] += U[1:]
            W[1:] *= s[1:, None]
        return W, float(np.sum(np.log(e)))

    def _whiten_steps(self, decay: float, var_w: float, kappa: float) -> tuple[np.ndarray, np.ndarray]:
        """``R^{-1/2}U`` (rows in step order) and the innovation variances, by the scalar filter.

        The variances and gains do not depend on the data: a first pass over the steps runs the
        Riccati recursion on ``(A_k,)`` vectors, the second whitens all columns of ``U`` at once.
        """
        U, n = self.U, self.n
        r = np.power(decay, self.gap)  # per row; 1 at a group's first row
        F = np.empty(n)
        P = np.full(self.G, float(var_w))  # filtered variance of w after the previous step
        for k, (o0, o1) in enumerate(self.bounds):
            A = o1 - o0
            Pk = P[:A]
            if k:
                rk = r[o0:o1]
                Pk -= var_w
                Pk *= rk * rk
                Pk += var_w
            Fk = F[o0:o1]
            np.add(Pk, kappa, out=Fk)
            Pk *= kappa / Fk
        W = np.empty_like(U)
        a = np.zeros((self.G, U.shape[1]))
        for k, (o0, o1) in enumerate(self.bounds):
            A = o1 - o0
            ak, Fk = a[:A], F[o0:o1]
            if k:
                ak *= r[o0:o1, None]
            v = U[o0:o1] - ak
            ak += (1.0 - kappa / Fk)[:, None] * v  # gain P_pred / F
            np.multiply(v, (1.0 / np.sqrt(Fk))[:, None], out=W[o0:o1])
        return W, F

    def _group_gram(self, W: np.ndarray, grouped: bool) -> np.ndarray:
        """``(G, q, q + c)`` sums over each group's rows of ``w_z w'`` (rows group by group, or in step order)."""
        q, m, G = self.q, W.shape[1], self.G
        if self.n * q * m <= _SMALL_GRAM:  # one product array: fewest calls
            Wg = W if grouped else W[self.step_to_group]
            return np.add.reduceat(Wg[:, :q, None] * Wg[:, None, :], self.layout.starts, axis=0)
        Gz = np.empty((G, q, m))  # column pair by column pair: one row-length temporary at a time
        for i in range(q):
            for j in range(m):
                if j < i:
                    Gz[:, i, j] = Gz[:, j, i]
                    continue
                prod = W[:, i] * W[:, j]
                Gz[:, i, j] = (
                    np.add.reduceat(prod, self.layout.starts)
                    if grouped
                    else np.bincount(self.step_group, weights=prod, minlength=G)
                )
        return Gz

    def __call__(self, T: np.ndarray | None, decay: float, var_w: float, kappa: float) -> GramResult:
        """The criterion's pieces at ``D_rel = T T'`` (``T`` any ``(q, q)`` factor) and the process.

        ``decay`` is ``rho`` per unit of time (OU) or ``phi`` per step (AR(1)), ``var_w`` the process's
        and ``kappa`` the nugget's variance, relative to ``s^2``. Returns ``logdet = inf`` where ``V_rel``
        is singular.
        """
        if self.closed_form:
            if kappa != 0.0:
                raise ValueError("the closed-form whitening holds for a process without a nugget")
            if not (var_w > 0.0 and abs(decay) < 1.0):
                return GramResult(np.inf, np.full((self.c, self.c), np.nan))
            W, logdet = self._whiten_closed(decay, var_w)
        else:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                W, F = self._whiten_steps(decay, var_w, kappa)
            if not np.all(F > 1e-300):
                return GramResult(np.inf, np.full((self.c, self.c), np.nan))
            logdet = float(np.log(F).sum())
        return self.woodbury(W, logdet, T, grouped=self.closed_form)

    def evaluate(self, T: np.ndarray | None, structure: Any, psi: np.ndarray) -> GramResult:
        """The criterion's pieces at ``D_rel = T T'`` and a Markov structure's parameters ``psi``."""
        return self(T, *structure.markov_process(psi))

    def filter(
        self, Y: np.ndarray, Z: np.ndarray | None, D_rel: np.ndarray | None, structure: Any, psi: np.ndarray
    ) -> FilterResult:
        """The full Kalman filter (state ``(w, b)``) of a Markov structure: whitened ``Y``, ``log|V_rel|``, BLUP
        states."""
        return kalman_whiten(self.layout, Y, Z, D_rel, *structure.markov_process(psi))

    def draw(self, structure: Any, psi: np.ndarray, scale2: float, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` residuals ``e ~ N(0, s^2 R)`` of a Markov structure: the nugget, then the process step by step."""
        decay, var_w, kappa = structure.markov_process(psi)
        lay = self.layout
        n = self.n
        s = np.sqrt(scale2)
        e = s * np.sqrt(kappa) * rng.standard_normal(n)
        w_prev = None
        for rows, gap in zip(lay.rows, lay.gaps):
            z = rng.standard_normal(rows.size)
            if w_prev is None:
                w = np.sqrt(var_w) * z
            else:
                r = np.power(decay, gap)
                w = r * w_prev[: rows.size] + np.sqrt(var_w * (1 - r * r)) * z
            e[rows] += s * w
            w_prev = w
        return e

    def woodbury(self, W: np.ndarray, logdet: float, T: np.ndarray | None, grouped: bool) -> GramResult:
        """Add the random effects to the process-whitened ``W = R^{-1/2}[Z Y]`` by Woodbury's identity.

        ``grouped``: the rows of ``W`` are group by group (``layout.order``), else in step order.
        """
        q, G = self.q, self.G
        if not q:
            return GramResult(logdet, W.T @ W)
        if T is None:
            raise ValueError("the factor T of D_rel is required with random effects")
        Gz = self._group_gram(W, grouped=grouped)
        Cw = W.T @ W
        Cyy = Cw[q:, q:]
        if q == 1:
            t = float(T[0, 0])
            g = Gz[:, 0, :]
            M = g[:, 0] * (t * t)
            M += 1.0
            sq = np.sqrt(M)
            Lb = g[:, 1:] * (t / sq)[:, None]
            logdet += float(np.log(M).sum())
            Lf = Lb
            L, Lb = sq[:, None, None], Lb[:, None, :]
        else:
            Wzz, Wzy = Gz[:, :, :q], Gz[:, :, q:]
            M = T.T @ Wzz @ T
            M[:, np.arange(q), np.arange(q)] += 1.0
            if G * q * q <= _SMALL_STACK:  # LAPACK per matrix: fewer calls
                L = np.linalg.cholesky(M)
                Lb = np.linalg.solve(L, T.T @ Wzy)
            else:  # many groups: loops over the small dimension, vectorised over the groups
                L = chol_batched(M)
                Lb = solve_lower_batched(L, T.T @ Wzy)
            logdet += 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
            Lf = Lb.reshape(G * q, self.c)
        return GramResult(logdet, Cyy - Lf.T @ Lf, np.asarray(T, dtype=float), L, Lb)
