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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """

    rows: list[np.ndarray]
    gaps: list[np.ndarray]
    group_order: np.ndarray

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
        pos = np.arange(n) - np.repeat(starts, sorted_sizes)
        rows, gaps = [], []
        kmax = int(sorted_sizes.max()) if n else 0
        prev = None
        for k in range(kmax):
            r = srt[pos == k]
            rows.append(r)
            if prev is None:
                gaps.append(np.zeros(r.size))
            else:
                gaps.append(np.ones(r.size) if by_order else t[r] - t[prev[: r.size]])
            prev = r
        return cls(rows=rows, gaps=gaps, group_order=group_order[sorted_sizes > 0])


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


def kalman_whiten(layout: SerialLayout, Y: np.ndarray, Z: np.ndarray | None, D_rel: np.ndarray | None,
                  decay: float | None, var_w: float, kappa: float) -> FilterResult:
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
        P[:, int(has_w):, int(has_w):] = D_rel
    white = np.empty((n, c))
    logdet = 0.0
    for rows, gap in zip(layout.rows, layout.gaps):
        A = rows.size
        aa, PP = a[:A], P[:A]
        if has_w:
            r = np.power(decay, gap)  # (A,): 1 at the first step and at repeated times
            aa[:, 0, :] *= r[:, None]
            PP[:, 0, :] *= r[:, None]
            PP[:, :, 0] *= r[:, None]
            PP[:, 0, 0] += var_w * (1.0 - r * r)
        h = np.empty((A, s))
        if has_w:
            h[:, 0] = 1.0
        if q:
            h[:, int(has_w):] = Z[rows]
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


def kalman_smooth(layout: SerialLayout, r: np.ndarray, observed: np.ndarray, Z: np.ndarray | None,
                  D_rel: np.ndarray | None, decay: float, var_w: float, kappa: float
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
        if q:
            h[:, 1:] = Z[rows]
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
    sm_a, sm_P = None, None
    for k in range(len(layout.rows) - 1, -1, -1):
        a_k, P_k = filt_a[k].copy(), filt_P[k].copy()
        if sm_a is not None:
            A1 = sm_a.shape[0]
            Tm = np.broadcast_to(np.eye(s), (A1, s, s)).copy()
            Tm[:, 0, 0] = decays[k + 1]
            J = P_k[:A1] @ np.swapaxes(Tm, 1, 2) @ np.linalg.pinv(pred_P[k + 1], hermitian=True)
            a_k[:A1] += np.einsum("ast,at->as", J, sm_a - pred_a[k + 1])
            P_k[:A1] += J @ (sm_P - pred_P[k + 1]) @ np.swapaxes(J, 1, 2)
        rows = layout.rows[k]
        mean[rows] = a_k
        cov[rows] = P_k
        sm_a, sm_P = a_k, P_k
    return mean, cov
