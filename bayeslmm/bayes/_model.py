"""PyMC models from a :class:`ModelSpec`: the ``conditional`` (non-centred) parameterisation.

Model (the lecture's, with its prior on beta)::

    beta        ~ N(0, beta_prior_var I)                  (the lecture's theta; renamed here)
    sd_k        ~ HalfNormal(sd_scale)                    one per random-effect column of term k
    Corr_k      ~ LKJ(lkj_eta)                            terms with several columns
    z_k         ~ N(0, I)   (levels x q_k),   b_k = z_k L_k'   (L_k = diag(sd_k) chol(Corr_k))
    sigma       ~ HalfNormal(sd_scale)
    y           ~ N(X beta + sum_k Z_k b_k, sigma^2 I)

Default priors, scaled to the data: ``sd_scale = sd(y)`` (half-normal, so a standard
deviation as large as the response's is one prior sd away), ``beta_prior_var = 100 var(y)``
per coefficient, ``lkj_eta = 2`` (mildly favours small correlations). Every one is an
argument. The model has named coordinates from the specification (coefficient names, levels
of each factor), so ArviZ output is labelled, and a ``varcorr`` deterministic with the
variance components on the variance scale, one entry per row of ``LMMFit.varcorr()``.
PyMC is imported only when a model is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import OptionError
from ..spec import ModelSpec


def varcorr_labels(spec: ModelSpec) -> list[str]:
    """``grp|var1|var2`` labels of the variance components, in ``varcorr()`` row order."""
    out = []
    for t in spec.terms:
        out += [f"{t.name}|{c}" for c in t.coef_names]
        out += [f"{t.name}|{t.coef_names[j]}|{t.coef_names[i]}" for j in range(t.q) for i in range(j + 1, t.q)]
    return out + ["Residual"]


def default_priors(spec: ModelSpec) -> dict[str, float]:
    """The data-scaled defaults: ``sd_scale`` and ``beta_prior_var``."""
    sy = float(np.std(spec.y)) or 1.0
    return {"sd_scale": sy, "beta_prior_var": 100.0 * sy * sy}


PARAMS = ("conditional", "marginal", "restricted")


class GroupBlocks:
    """Per-level cross-products of a single-grouping-factor model (all terms on one factor).

    ``ZtZ (G, q, q)``, ``ZtX (G, q, p)``, ``Zty (G, q)`` with ``Z_i`` the level's rows of all terms'
    columns side by side, and the totals ``XtX``, ``Xty``, ``yty``: the marginal and restricted
    densities need nothing else (no pass over the rows per evaluation).
    """

    def __init__(self, spec: ModelSpec) -> None:
        from ..linalg._blocks import _by_level

        t0 = spec.terms[0]
        Z = np.hstack([t.Zraw for t in spec.terms])
        self.G, self.n, self.p = t0.nlevels, spec.n, spec.p
        self.ZtZ = _by_level(t0.codes, self.G, Z, Z)
        self.ZtX = _by_level(t0.codes, self.G, Z, spec.X)
        self.Zty = _by_level(t0.codes, self.G, Z, spec.y[:, None])[:, :, 0]
        self.XtX = spec.X.T @ spec.X
        self.Xty = spec.X.T @ spec.y
        self.yty = float(spec.y @ spec.y)
        # per level, for the per-group log-likelihood
        self.XtX_g = _by_level(t0.codes, self.G, spec.X, spec.X)
        self.Xty_g = _by_level(t0.codes, self.G, spec.X, spec.y[:, None])[:, :, 0]
        self.yty_g = np.bincount(t0.codes, weights=spec.y * spec.y, minlength=self.G)
        self.n_g = np.bincount(t0.codes, minlength=self.G)


def _check_single_factor(spec: ModelSpec, param: str) -> None:
    if not spec.terms:
        raise OptionError("a PyMC model needs at least one random-effect term")
    if param != "conditional" and any(t.factors != spec.terms[0].factors for t in spec.terms):
        raise OptionError(f"the {param!r} parameterisation integrates the random effects out group by group and "
                          "needs every term on one grouping factor; use param='conditional' for crossed or nested "
                          "factors")


def _woodbury_parts(gb: GroupBlocks, L: Any, sigma: Any) -> tuple[Any, Any]:
    """``S_i = I + L'Z_i'Z_i L / sigma^2`` per level and ``sum_i log|S_i|``.

    ``V_i = sigma^2 I + Z_i L L' Z_i'``: ``log|V_i| = n_i log sigma^2 + log|S_i|`` and
    ``V_i^-1 = sigma^-2 (I - Z_i L S_i^-1 L' Z_i' / sigma^2)`` (Woodbury; valid for singular ``L``).
    """
    import pytensor.tensor as pt

    q = L.shape[0]
    S = pt.eye(q) + pt.swapaxes(L, 0, 1) @ pt.as_tensor_variable(gb.ZtZ) @ L / sigma**2  # (G, q, q)
    return S, pt.sum(pt.log(pt.linalg.det(S)))


def _quad(gb: GroupBlocks, L: Any, S: Any, sigma: Any, left: Any, right: Any, total: Any) -> Any:
    """``sum_i left_i' V_i^-1 right_i`` from per-level ``Z_i'left_i`` (``left``), ``Z_i'right_i`` and the total."""
    import pytensor.tensor as pt

    Lt = pt.swapaxes(L, 0, 1)
    a = Lt @ left  # (G, q, k)
    c = Lt @ right  # (G, q, m)
    corr = pt.sum(pt.swapaxes(a, 1, 2) @ pt.linalg.solve(S, c), axis=0)
    return (total - corr / sigma**2) / sigma**2


def build_model(spec: ModelSpec, *, param: str = "conditional", beta_prior_var: float | None = None,
                sd_scale: float | None = None, lkj_eta: float = 2.0) -> Any:
    """A PyMC model of ``spec`` in one of three parameterisations (see the module docstring).

    * ``conditional``: random effects explicit and non-centred (any iid-error specification);
    * ``marginal``: random effects integrated out group by group,
      ``y_i ~ N(X_i beta, Z_i D Z_i' + sigma^2 I)`` (one grouping factor);
    * ``restricted``: beta integrated out as well, the density of :mod:`._marginal`.

    The priors on ``beta``, the standard deviations, the correlations and ``sigma`` are the
    same in all three, so their posteriors of the shared parameters agree.

    Returns
    -------
    pymc.Model with ``beta`` (dims ``coef``; not in ``restricted``), ``sigma``, per term
    ``sd_<term>`` or ``chol_<term>``, ``z_<term>``/``b_<term>`` (``conditional`` only; dims
    ``<term>_level``, ``<term>_coef``), ``varcorr`` (dims ``component``, labelled
    ``grp|var1|var2`` as ``varcorr()`` rows) and the likelihood term ``y``.
    """
    import pymc as pm
    import pytensor.tensor as pt
    from pytensor.tensor.slinalg import block_diag

    if param not in PARAMS:
        raise OptionError(f"unknown parameterisation {param!r}: use one of {', '.join(PARAMS)}")
    if spec.residual is not None:
        raise OptionError("PyMC models with a serial residual process are not built yet; fit them with lmm()")
    _check_single_factor(spec, param)
    d = default_priors(spec)
    tau = d["beta_prior_var"] if beta_prior_var is None else float(beta_prior_var)
    s = d["sd_scale"] if sd_scale is None else float(sd_scale)
    if tau <= 0 or s <= 0 or lkj_eta <= 0:
        raise OptionError("beta_prior_var, sd_scale and lkj_eta must be positive")
    coords: dict[str, Any] = {"coef": list(spec.fixef_names), "component": varcorr_labels(spec)}
    for t in spec.terms:
        coords[f"{t.name}_level"] = list(t.levels)
        coords[f"{t.name}_coef"] = list(t.coef_names)
    with pm.Model(coords=coords) as model:
        beta = pm.Normal("beta", 0.0, np.sqrt(tau), dims="coef") if param != "restricted" else None
        Ls, vc_parts = [], []
        for t in spec.terms:
            if t.q == 1:
                L = pt.diag(pm.HalfNormal(f"sd_{t.name}", s, dims=f"{t.name}_coef"))
            else:
                L, _, _ = pm.LKJCholeskyCov(f"chol_{t.name}", n=t.q, eta=lkj_eta,
                                            sd_dist=pm.HalfNormal.dist(s, shape=t.q), compute_corr=True)
            D = L @ L.T
            rows, cols = np.tril_indices(t.q, -1)
            order = np.lexsort((rows, cols))  # covariances by column, as varcorr()
            vc_parts += [pt.diagonal(D), D[rows[order], cols[order]]]
            Ls.append(L)
        sigma = pm.HalfNormal("sigma", s)
        pm.Deterministic("varcorr", pt.concatenate([*vc_parts, pt.stack([sigma**2])]), dims="component")
        if param == "conditional":
            mu = pt.as_tensor_variable(spec.X) @ beta
            for t, L in zip(spec.terms, Ls):
                lev, cf = f"{t.name}_level", f"{t.name}_coef"
                z = pm.Normal(f"z_{t.name}", 0.0, 1.0, dims=(lev, cf))
                b = pm.Deterministic(f"b_{t.name}", z @ L.T, dims=(lev, cf))
                mu = mu + pt.sum(pt.as_tensor_variable(t.Zraw) * b[t.codes], axis=1)
            model.add_coord("obs", np.arange(spec.n))
            pm.Normal("y", mu, sigma, observed=spec.y, dims="obs")
            return model
        gb = GroupBlocks(spec)
        Dfull_chol = block_diag(*Ls)  # blockdiag(L_k): D = Dfull_chol Dfull_chol'
        S, logdetS = _woodbury_parts(gb, Dfull_chol, sigma)
        logdetV = spec.n * pt.log(sigma**2) + logdetS
        ZtX, Zty = pt.as_tensor_variable(gb.ZtX), pt.as_tensor_variable(gb.Zty)[:, :, None]
        if param == "marginal":
            Ztr = Zty - ZtX @ beta[:, None]  # (G, q, 1): Z_i'(y_i - X_i beta)
            rr = gb.yty - 2 * beta @ gb.Xty + beta @ gb.XtX @ beta
            quad = _quad(gb, Dfull_chol, S, sigma, Ztr, Ztr, rr)[0, 0]
            pm.Potential("y", -0.5 * (spec.n * np.log(2 * np.pi) + logdetV + quad))
            return model
        A = _quad(gb, Dfull_chol, S, sigma, ZtX, ZtX, gb.XtX)  # X'V^-1 X
        bvec = _quad(gb, Dfull_chol, S, sigma, ZtX, Zty, gb.Xty[:, None])[:, 0]  # X'V^-1 y
        yy = _quad(gb, Dfull_chol, S, sigma, Zty, Zty, np.array([[gb.yty]]))[0, 0]  # y'V^-1 y
        M = A + np.eye(spec.p) / tau
        logdetM = pt.log(pt.linalg.det(M))
        neg2 = (spec.n * np.log(2 * np.pi) + logdetV + spec.p * np.log(tau) + logdetM
                + yy - bvec @ pt.linalg.solve(M, bvec))
        pm.Potential("y", -0.5 * neg2)
    return model


def _complete(spec: ModelSpec, idata: Any, param: str, tau: float, seed: int | None) -> None:
    """Add ``b_<term>`` (and ``beta`` for ``restricted``) drawn from their exact conditional Gaussians,
    one draw per posterior draw, and the per-group log-likelihood ``log N(y_i; X_i beta, V_i)``.

    With ``D = L L'`` and ``S_i = I + L'Z_i'Z_i L / sigma^2``: ``b_i | beta, psi, y ~ N(L S_i^-1 L'Z_i'r_i /
    sigma^2, L S_i^-1 L')``; for ``restricted`` first ``beta | psi, y ~ N(M^-1 X'V^-1 y, M^-1)``,
    ``M = X'V^-1 X + I / beta_prior_var``.
    """
    import xarray as xr

    gb = GroupBlocks(spec)
    post = idata.posterior
    vc = post["varcorr"].values
    C, Dn = vc.shape[:2]
    vc = vc.reshape(C * Dn, -1)
    rng = np.random.default_rng(seed)
    q = gb.ZtZ.shape[1]
    p = spec.p
    betas = np.empty((C * Dn, p)) if param == "restricted" else post["beta"].values.reshape(C * Dn, p)
    bs = np.empty((C * Dn, gb.G, q))
    ll = np.empty((C * Dn, gb.G))
    for k in range(C * Dn):
        D = np.zeros((q, q))
        i = j = 0
        for t in spec.terms:
            Dk = np.zeros((t.q, t.q))
            Dk[np.diag_indices(t.q)] = vc[k, i : i + t.q]
            i += t.q
            for b in range(t.q):
                for a in range(b + 1, t.q):
                    Dk[a, b] = Dk[b, a] = vc[k, i]
                    i += 1
            D[j : j + t.q, j : j + t.q] = Dk
            j += t.q
        s2 = vc[k, -1]
        w, U = np.linalg.eigh(D)
        L = U * np.sqrt(np.clip(w, 0, None))  # any square root of D works in Woodbury
        S = np.eye(q) + L.T @ gb.ZtZ @ L / s2
        Sinv = np.linalg.inv(S)
        LtZtX, LtZty = L.T @ gb.ZtX, L.T @ gb.Zty[:, :, None]
        if param == "restricted":
            A = (gb.XtX - np.sum(np.swapaxes(LtZtX, 1, 2) @ Sinv @ LtZtX, axis=0) / s2) / s2
            bv = (gb.Xty - np.sum(np.swapaxes(LtZtX, 1, 2) @ Sinv @ LtZty, axis=0)[:, 0] / s2) / s2
            Mi = np.linalg.inv(A + np.eye(p) / tau)
            betas[k] = rng.multivariate_normal(Mi @ bv, (Mi + Mi.T) / 2)
        beta = betas[k]
        tvec = (LtZty - LtZtX @ beta[:, None])[:, :, 0]  # L'Z_i'r_i
        mean = (L @ (Sinv @ tvec[:, :, None]))[:, :, 0] / s2
        R = np.linalg.cholesky((Sinv + np.swapaxes(Sinv, 1, 2)) / 2)
        bs[k] = mean + (L @ R @ rng.standard_normal((gb.G, q, 1)))[:, :, 0]
        rr = gb.yty_g - 2 * gb.Xty_g @ beta + np.einsum("p,gpq,q->g", beta, gb.XtX_g, beta)
        quad = (rr - np.einsum("gq,gq->g", tvec, (Sinv @ tvec[:, :, None])[:, :, 0]) / s2) / s2
        ll[k] = -0.5 * (gb.n_g * np.log(2 * np.pi * s2) + np.linalg.slogdet(S)[1] + quad)
    dims = ("chain", "draw")
    coords = {"chain": post["chain"].values, "draw": post["draw"].values}
    if param == "restricted":
        post["beta"] = xr.DataArray(betas.reshape(C, Dn, p), dims=(*dims, "coef"),
                                    coords={**coords, "coef": list(spec.fixef_names)})
    i = 0
    for t in spec.terms:
        post[f"b_{t.name}"] = xr.DataArray(
            bs[:, :, i : i + t.q].reshape(C, Dn, t.nlevels, t.q), dims=(*dims, f"{t.name}_level", f"{t.name}_coef"),
            coords={**coords, f"{t.name}_level": list(t.levels), f"{t.name}_coef": list(t.coef_names)})
        i += t.q
    group = f"{spec.terms[0].group}"
    idata["log_likelihood"] = xr.Dataset({"y": xr.DataArray(
        ll.reshape(C, Dn, gb.G), dims=(*dims, group), coords={**coords, group: list(spec.terms[0].levels)})})
    idata["observed_data"] = xr.Dataset({"y": xr.DataArray(spec.y, dims=("obs",))})


def _simulate_y(spec: ModelSpec, beta: np.ndarray, b: dict[str, np.ndarray], sigma: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """``(draws, n)`` responses ``X beta + sum_k Z_k b_k + sigma e`` for stacked draws."""
    y = beta @ spec.X.T + sigma[:, None] * rng.standard_normal((beta.shape[0], spec.n))
    for t in spec.terms:
        y += np.einsum("nq,dnq->dn", t.Zraw, b[t.name][:, t.codes, :])
    return y


def _predictive(spec: ModelSpec, group: Any, rng: np.random.Generator) -> Any:
    """A predictive Dataset ``y (chain, draw, obs)`` from the draws of ``beta``, ``b_<term>`` and ``sigma``."""
    import xarray as xr

    C, D = group["sigma"].shape[:2]
    beta = group["beta"].values.reshape(C * D, -1)
    b = {t.name: group[f"b_{t.name}"].values.reshape(C * D, t.nlevels, t.q) for t in spec.terms}
    y = _simulate_y(spec, beta, b, group["sigma"].values.reshape(C * D), rng)
    return xr.Dataset({"y": xr.DataArray(y.reshape(C, D, spec.n), dims=("chain", "draw", "obs"),
                                         coords={"chain": group["chain"].values, "draw": group["draw"].values})})


def _prior_draws(spec: ModelSpec, model: Any, draws: int, seed: int | None) -> tuple[Any, Any]:
    """Prior draws of the parameters (``b_<term>`` drawn from ``N(0, D)`` for the marginal models)
    and the prior predictive of ``y``."""
    import pymc as pm
    import xarray as xr

    rng = np.random.default_rng(None if seed is None else seed + 1)
    names = [v.name for v in model.free_RVs if not v.name.startswith("z_")] + ["varcorr"]
    with model:
        pri = pm.sample_prior_predictive(draws=draws, var_names=names, random_seed=rng)
    prior = pri.prior.to_dataset() if hasattr(pri.prior, "to_dataset") else pri.prior
    vc = prior["varcorr"].values.reshape(draws, -1)
    if "beta" not in prior:
        tau = default_priors(spec)["beta_prior_var"]
        prior["beta"] = xr.DataArray(rng.normal(0, np.sqrt(tau), (1, draws, spec.p)), dims=("chain", "draw", "coef"))
    i = 0
    for t in spec.terms:
        Dk = np.zeros((draws, t.q, t.q))
        Dk[:, np.arange(t.q), np.arange(t.q)] = vc[:, i : i + t.q]
        i += t.q
        for c in range(t.q):
            for r in range(c + 1, t.q):
                Dk[:, r, c] = Dk[:, c, r] = vc[:, i]
                i += 1
        w, U = np.linalg.eigh(Dk)
        L = U * np.sqrt(np.clip(w, 0, None))[:, None, :]
        b = np.einsum("dqr,dlr->dlq", L, rng.standard_normal((draws, t.nlevels, t.q)))
        prior[f"b_{t.name}"] = xr.DataArray(b[None], dims=("chain", "draw", f"{t.name}_level", f"{t.name}_coef"))
    return prior, _predictive(spec, prior, rng)


def sample(spec: ModelSpec, *, param: str = "conditional", draws: int = 1000, tune: int = 1000, chains: int = 2,
           seed: int | None = None, progressbar: bool = False, mode: str | None = "NUMBA",
           posterior_predictive: bool = True, prior: bool = False, **priors: Any) -> Any:
    """Sample a model of ``spec``; the same InferenceData layout for all three parameterisations.

    The posterior holds ``beta``, ``b_<term>``, ``varcorr``, ``sigma`` and the sd/LKJ variables;
    ``log_likelihood`` is pointwise per observation for ``conditional`` and per group
    (``log N(y_i; X_i beta, V_i)``) for ``marginal`` and ``restricted``.

    ``mode`` is PyTensor's compilation mode for the sampler's functions: ``"NUMBA"`` (default)
    compiles the batched small-matrix algebra far better than the C backend (sleepstudy
    ``marginal``, 2 x 1000 draws: 12 s in all against 158 s); ``None`` uses PyTensor's default.
    ``posterior_predictive`` adds ``y`` replicated from each draw's ``beta``, ``b`` and ``sigma``
    (group ``posterior_predictive``); ``prior`` adds ``prior`` and ``prior_predictive`` groups
    (as many draws as ``draws``).
    """
    import pymc as pm

    model = build_model(spec, param=param, **priors)
    kwargs = {} if mode is None else {"compile_kwargs": {"mode": mode}}
    with model:
        idata = pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar,
                          **kwargs)
        if param == "conditional":
            pm.compute_log_likelihood(idata, progressbar=False)
    if param != "conditional":
        tau = priors.get("beta_prior_var") or default_priors(spec)["beta_prior_var"]
        _complete(spec, idata, param, float(tau), seed)
    rng = np.random.default_rng(None if seed is None else seed + 2)
    if posterior_predictive:
        idata["posterior_predictive"] = _predictive(spec, idata.posterior, rng)
    if prior:
        pri, pri_pred = _prior_draws(spec, model, draws, seed)
        idata["prior"] = pri
        idata["prior_predictive"] = pri_pred
    return idata


def sample_summary(spec: ModelSpec, idata: Any) -> dict[str, Any]:
    """Rows of ``bayeslmm sample --json``: fixed effects and variance components with ArviZ diagnostics."""
    import arviz as az

    tab = az.summary(idata, var_names=["beta", "varcorr"], ci_kind="hdi", ci_prob=0.94, round_to="none")
    rows = []
    for (_, r), (kind, extra) in zip(tab.iterrows(), _row_kinds(spec)):
        rows.append({"kind": kind, **extra, "mean": float(r["mean"]), "sd": float(r["sd"]),
                     "hdi_low": float(r["hdi94_lb"]), "hdi_high": float(r["hdi94_ub"]),
                     "mcse_mean": float(r["mcse_mean"]), "ess_bulk": float(r["ess_bulk"]),
                     "ess_tail": float(r["ess_tail"]), "r_hat": float(r["r_hat"])})
    div = idata.sample_stats["diverging"] if "diverging" in idata.sample_stats else None
    return {"params": rows, "divergences": int(div.sum()) if div is not None else 0}


def _row_kinds(spec: ModelSpec) -> list[tuple[str, dict[str, Any]]]:
    out = [("fixef", {"name": n}) for n in spec.fixef_names]
    for t in spec.terms:
        out += [("varcorr", {"grp": t.name, "var1": c, "var2": None}) for c in t.coef_names]
        out += [("varcorr", {"grp": t.name, "var1": t.coef_names[j], "var2": t.coef_names[i]})
                for j in range(t.q) for i in range(j + 1, t.q)]
    return out + [("varcorr", {"grp": "Residual", "var1": None, "var2": None})]
