"""Expected information of the covariance parameters and their standard errors.

Parameters ``psi``: for each term the entries of ``D_k`` (variances, then covariances, in
``varcorr()`` row order), then the residual variance ``sigma^2``. With
``V = Z D Z' + sigma^2 I`` and ``A_j = dV/dpsi_j``::

    ML:   I_jk = 1/2 tr(V^-1 A_j V^-1 A_k)
    REML: I_jk = 1/2 tr(P A_j P A_k),   P = V^-1 - V^-1 X (X'V^-1 X)^-1 X'V^-1

``A_j = Z_k (I (x) S_j) Z_k'`` for an entry of ``D_k`` (``S_j`` the symmetric 0/1 pattern) and
``I`` for ``sigma^2``, so every trace reduces to ``G = Z'PZ`` and ``H = Z'P^2 Z`` (``Q x Q``) and
``tr(P^2)``. They are formed from the cross-products ``Z'Z``, ``Z'X``, ``X'X`` through
``V^-1 = sigma^-2 (I - Z K Z')``, ``K = Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda'``: no ``n x n``
matrix, ``O(Q^3)`` work for ``Q`` random effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ._objective import BlockedEngine

if TYPE_CHECKING:
    from ..linalg import CrossProducts
    from ._fit import LMMFit


def _sym(q: int, a: int, b: int) -> np.ndarray:
    S = np.zeros((q, q))
    S[a, b] = S[b, a] = 1.0
    return S


#: Largest number of random effects for the dense ``Q x Q`` information computation (about ten
#: ``Q^3`` products: a few seconds at 1,500; InstEval's 4,114 took half a minute and 1.8 GB).
MAX_Q = 1500


def _blocks(fit: LMMFit) -> CrossProducts:
    """The cross-product blocks of a fit with independent errors (its engine is a :class:`BlockedEngine`)."""
    obj = fit.objective
    if not isinstance(obj, BlockedEngine):
        raise TypeError(
            f"the expected information from cross products needs a fit with independent errors "
            f"(a BlockedEngine), not a {type(obj).__name__}: use expected_information_grouped"
        )
    return obj.blocks


def _cross_products(cp: CrossProducts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``Z'Z``, ``Z'X`` and ``X'X`` of the working columns, from a fit's cross-product blocks (no rows)."""
    p = cp.p
    l1, q1, _ = cp.A11.shape
    Q1 = l1 * q1
    Q = Q1 + cp.Qr
    A = np.zeros((Q, Q))
    idx = np.arange(Q1).reshape(l1, q1)
    A[idx[:, :, None], idx[:, None, :]] = cp.A11
    B = np.zeros((Q, p))
    B[:Q1] = cp.B1[:, :, :p].reshape(Q1, p)
    if cp.C is not None:
        if cp.D is None or cp.E is None:
            raise ValueError("cross products of several terms need the blocks D and E")
        C = cp.C.toarray()
        A[Q1:, :Q1] = C
        A[:Q1, Q1:] = C.T
        A[Q1:, Q1:] = cp.D
        B[Q1:] = cp.E[:, :p]
    return A, B, cp.F[:p, :p]


def expected_information(fit: LMMFit) -> tuple[np.ndarray, list[str]]:
    """``(k, k)`` expected information of ``psi`` (REML or ML, as the fit) and the names of ``psi``."""
    spec = fit.spec
    s2 = fit.sigma2
    cp = _blocks(fit)
    A, B, Cx = _cross_products(cp)
    n = spec.n
    Lam = np.zeros_like(A)
    i0 = 0
    for t, T in zip(spec.terms, cp.working_factors(fit._Ts)):  # blocks: Z_w = Z A_z
        Lam[i0 : i0 + t.ncols, i0 : i0 + t.ncols] = np.kron(np.eye(t.nlevels), T)
        i0 += t.ncols
    M = Lam.T @ A @ Lam + np.eye(A.shape[0])
    K = Lam @ np.linalg.solve(M, Lam.T)
    KA, KB = K @ A, K @ B
    # blocks of V^-1, V^-2 and V^-3 against Z and X (times sigma^2, sigma^4, sigma^6)
    ZV1Z = A - A @ KA
    ZV1X = B - A @ KB
    XV1X = Cx - B.T @ KB
    ZV2Z = A - 2 * A @ KA + A @ KA @ KA
    ZV2X = B - 2 * A @ KB + A @ KA @ KB
    XV2X = Cx - 2 * B.T @ KB + B.T @ KA @ KB
    XV3X = Cx - 3 * B.T @ KB + 3 * B.T @ KA @ KB - B.T @ KA @ KA @ KB
    trV1 = n - np.trace(KA)
    trV2 = n - 2 * np.trace(KA) + np.trace(KA @ KA)
    G, H, trP2 = ZV1Z / s2, ZV2Z / s2**2, trV2 / s2**2
    if fit.reml:
        C = np.linalg.inv(XV1X / s2)
        U1 = ZV1X / s2  # Z'V^-1 X
        U2 = ZV2X / s2**2  # Z'V^-2 X
        G = G - U1 @ C @ U1.T
        H = H - U2 @ C @ U1.T - U1 @ C @ U2.T + U1 @ C @ (XV2X / s2**2) @ C @ U1.T
        trP2 = trP2 - 2 * np.trace(C @ XV3X / s2**3) + np.trace(C @ (XV2X / s2**2) @ C @ (XV2X / s2**2))
    del trV1
    # psi entries: (term index, slice of the term in Q, pattern matrix)
    entries, names, offsets = [], [], []
    i0 = 0
    zb = cp.term_bases
    for k, t in enumerate(spec.terms):
        offsets.append(i0)
        Ainv = zb[k].Ainv  # dV/dD_ab = Z (I (x) S_ab) Z' = Z_w (I (x) A_z^-1 S_ab A_z^-T) Z_w'
        for (a, b), label in zip(t.covariance.components(), t.covariance.labels(t.name)):
            entries.append((k, Ainv @ _sym(t.q, a, b) @ Ainv.T))
            names.append(label)
        i0 += t.ncols
    m = len(entries)
    info = np.zeros((m + 1, m + 1))
    blocks = {}
    for k, t in enumerate(spec.terms):
        for j, u in enumerate(spec.terms):
            Gkj = G[offsets[k] : offsets[k] + t.ncols, offsets[j] : offsets[j] + u.ncols]
            G4 = Gkj.reshape(t.nlevels, t.q, u.nlevels, u.q)
            blocks[k, j] = np.einsum("iyju,ixjv->yuxv", G4, G4)  # sums over level pairs
    for r, (k, Sr) in enumerate(entries):
        for c, (j, Sc) in enumerate(entries):
            info[r, c] = 0.5 * np.einsum("xy,uv,yuxv->", Sr, Sc, blocks[k, j])
        t = spec.terms[k]
        Hkk = H[offsets[k] : offsets[k] + t.ncols, offsets[k] : offsets[k] + t.ncols].reshape(
            t.nlevels, t.q, t.nlevels, t.q
        )
        diag = np.einsum("iyix->yx", Hkk)
        info[r, m] = info[m, r] = 0.5 * np.sum(Sr * diag)
    info[m, m] = 0.5 * trP2
    return info, names + ["Residual"]


def vc_standard_errors(fit: LMMFit) -> pd.DataFrame:
    """Standard errors of the variance components, their sds and correlations (``varcorr()`` rows).

    SEs of variances and covariances from the inverse expected information; of standard
    deviations and correlations by the delta method. For serial-process models the
    "Residual" row is the nugget (``ou``) or the AR(1) variance, and rows with ``grp`` =
    "process" add ``process_var`` and ``rho`` (``ou``) or ``phi`` (``ar1``). ``wald_lower`` and
    ``wald_upper`` are 95% Wald limits on the sd/correlation scale (the value itself for
    process rows); :meth:`LMMFit.confint` gives profile intervals, better near a boundary.
    ``unreliable`` marks rows of a fit on the boundary (a variance near 0 or a correlation
    near +-1), where the Wald theory fails.
    """
    vc = fit.varcorr().copy()
    res = fit.spec.residual
    if res is not None:
        info, names = expected_information_grouped(fit)
        rp = fit.residual_params()
        nterm = len(vc) - 1
        extra = list(res.structure.process_keys)
        order = list(range(nterm)) + [names.index("sigma2")] + [names.index(e) for e in extra]
        cov = np.linalg.pinv(info)[np.ix_(order, order)]
        vc = pd.concat(
            [
                vc,
                pd.DataFrame(
                    {"grp": "process", "var1": extra, "var2": None, "vcov": [rp[e] for e in extra], "sdcor": np.nan}
                ),
            ],
            ignore_index=True,
        )
        vc["var2"] = vc["var2"].astype(object).where(vc["var2"].notna(), None)
    else:
        if sum(t.ncols for t in fit.spec.terms) > MAX_Q:
            raise DataError(
                f"more than {MAX_Q} random effects: the dense expected information is not computed; "
                "use a parametric bootstrap (bayeslmm.bootstrap) for the variance components"
            )
        info, _ = expected_information(fit)
        cov = np.linalg.pinv(info)
    var_idx = {}  # (grp, name) -> psi index of that variance
    for i, r in enumerate(vc.itertuples(index=False)):
        if r.var2 is None:
            var_idx[(r.grp, r.var1)] = i
    se_v, se_s, flag = [], [], []
    for i, r in enumerate(vc.itertuples(index=False)):
        se = float(np.sqrt(max(cov[i, i], 0.0)))
        se_v.append(se)
        if r.grp == "process":  # rho, phi, process_var: no sd/correlation scale
            se_s.append(np.nan)
            flag.append(bool(fit.singular))
        elif r.var2 is None:  # a variance: sd = sqrt(var)
            se_s.append(se / (2 * r.sdcor) if r.sdcor > 0 else np.nan)
            flag.append(bool(fit.singular or r.sdcor < 1e-4 * max(np.sqrt(fit.sigma2), 1e-300)))
        else:  # a covariance: corr = cov / (sd_a sd_b)
            a, b = var_idx[(r.grp, r.var1)], var_idx[(r.grp, r.var2)]
            va, vb = vc.vcov[a], vc.vcov[b]
            g = np.zeros(len(vc))
            g[i] = 1 / np.sqrt(va * vb)
            g[a] = -r.sdcor / (2 * va)
            g[b] = -r.sdcor / (2 * vb)
            se_s.append(float(np.sqrt(max(float(g @ cov @ g), 0.0))))
            flag.append(bool(fit.singular or abs(r.sdcor) > 0.99))
    vc["se_vcov"] = se_v
    vc["se_sdcor"] = se_s
    # 95% Wald intervals on the sd/correlation scale (on the value itself for process rows)
    z = 1.959963984540054
    centre = np.where(vc.grp == "process", vc.vcov, vc.sdcor)
    half = z * np.where(vc.grp == "process", vc.se_vcov, vc.se_sdcor)
    vc["wald_lower"] = centre - half
    vc["wald_upper"] = centre + half
    vc["unreliable"] = flag
    return vc


#: Largest group size for the per-group (padded dense) information of serial-process models.
MAX_GROUP = 1000


def expected_information_grouped(fit: Any) -> tuple[np.ndarray, list[str]]:
    """Expected information of a fit with a residual structure, group by group (``V`` is block diagonal).

    ``psi``: the entries of each ``D_k`` (as :func:`expected_information`), then the natural
    parameters of the structure (its ``process_keys`` and ``sigma2``, the Residual row), with
    ``dR_i/dpsi_j`` from the structure. With per-group ``V_i`` (groups padded to the largest size)
    and ``Y_j = V_i^-1 dV_i/dpsi_j``::

        tr(V^-1 A_j V^-1 A_l) = sum_i tr(Y_j Y_l)
        REML: - 2 tr(C N_jl) + tr(C M_j C M_l),  M_j = sum_i X_i'Y_j V_i^-1 X_i,
              N_jl = sum_i X_i'Y_j Y_l V_i^-1 X_i,  C = (X'V^-1 X)^-1
    """
    spec, res = fit.spec, fit.spec.residual
    structure = res.structure
    sizes = np.bincount(res.codes, minlength=len(res.levels))
    nmax = int(sizes.max())
    if nmax > MAX_GROUP:
        raise DataError(
            f"groups of up to {nmax} observations: the per-group information is computed for groups "
            f"of at most {MAX_GROUP}; use a parametric bootstrap (bayeslmm.bootstrap)"
        )
    G = sizes.size
    order = np.lexsort((np.arange(spec.n), res.t, res.codes))
    starts = np.cumsum(sizes) - sizes
    pos = np.arange(spec.n) - np.repeat(starts, sizes)
    idx = np.full((G, nmax), -1)
    idx[res.codes[order], pos] = order
    mask = idx >= 0
    safe = np.where(mask, idx, 0)
    mm = (mask[:, :, None] & mask[:, None, :]).astype(float)
    # padding rows repeat the group's first row: every feature stays valid (a visit, a covariate), and
    # the padding is masked out below
    first = np.where(mask, idx, idx[:, :1])
    feats = {k: v[first] for k, v in res.feats.items()}
    # working columns (bayeslmm.linalg._basis): a large constant in a covariate costs no digits; REML's
    # projection does not depend on the basis of X, and Z_w D_w Z_w' = Z D Z' with D_w = A_z^-1 D A_z^-T
    obj = fit.objective
    Zw = obj.Zw
    offs = np.cumsum([0] + [tm.q for tm in spec.terms])
    Zs = [np.where(mask[:, :, None], Zw[:, offs[k] : offs[k + 1]][safe], 0.0) for k, tm in enumerate(spec.terms)]
    Ainvs = [b.Ainv for b in obj.term_bases]
    X = np.where(mask[:, :, None], obj.Y[:, : spec.p][safe], 0.0)
    s2 = fit.scale2
    dV, names = [], []
    V = np.zeros((G, nmax, nmax))
    for tm, Zk, T, Ai in zip(spec.terms, Zs, fit._Ts, Ainvs):
        D = s2 * (Ai @ T @ T.T @ Ai.T)
        V += Zk @ D @ np.swapaxes(Zk, 1, 2)
        for (a, b), label in zip(tm.covariance.components(), tm.covariance.labels(tm.name)):
            S = Ai @ _sym(tm.q, a, b) @ Ai.T
            dV.append(Zk @ S @ np.swapaxes(Zk, 1, 2))
            names.append(label)
    nat = structure.natural(obj.split(fit.psi)[1], s2)
    V += structure.matrix(feats, nat) * mm
    for key, dR in structure.derivatives(feats, nat).items():
        dV.append(dR * mm)
        names.append(key)
    V += np.eye(nmax) * (1 - mm)  # padding: identity, uncorrelated with the data, zero derivatives
    Vi = np.linalg.inv(V)
    Y = np.stack([Vi @ A for A in dV])  # (k, G, nmax, nmax)
    k = Y.shape[0]
    # sum_i tr(Y_j Y_l) for every pair at once (one matrix product, not k^2 small einsums)
    info = Y.reshape(k, -1) @ np.swapaxes(Y, 2, 3).reshape(k, -1).T
    if fit.reml:
        ViX = Vi @ X  # (G, nmax, p)
        C = np.linalg.inv(np.einsum("gap,gaq->pq", X, ViX))
        p = C.shape[0]
        XY = np.einsum("gap,jgab->jpgb", X, Y).reshape(k, p, -1)  # X_i'Y_j, groups side by side
        YViX = (Y @ ViX).reshape(k, -1, p)  # Y_j V_i^-1 X_i, groups stacked
        CM = C @ (XY @ ViX.reshape(-1, p))  # C M_j
        trCN = np.einsum("jqb,mbq->jm", C @ XY, YViX)  # tr(C N_jl)
        info += -2 * trCN + np.einsum("jab,mba->jm", CM, CM)
    return 0.5 * info, names
