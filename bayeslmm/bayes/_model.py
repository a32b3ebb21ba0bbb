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


def build_model(spec: ModelSpec, *, beta_prior_var: float | None = None, sd_scale: float | None = None,
                lkj_eta: float = 2.0) -> Any:
    """The ``conditional`` PyMC model of ``spec`` (see the module docstring).

    Returns
    -------
    pymc.Model with variables ``beta`` (dims ``coef``), ``sigma``, per term ``sd_<term>`` and
    ``z_<term>`` / ``b_<term>`` (dims ``<term>_level``, ``<term>_coef``), ``varcorr`` (dims
    and the observed ``y`` (dims ``obs``).
    """
    import pymc as pm
    import pytensor.tensor as pt

    if spec.residual is not None:
        raise OptionError("PyMC models with a serial residual process are not built yet; fit them with lmm()")
    d = default_priors(spec)
    tau = d["beta_prior_var"] if beta_prior_var is None else float(beta_prior_var)
    s = d["sd_scale"] if sd_scale is None else float(sd_scale)
    if tau <= 0 or s <= 0 or lkj_eta <= 0:
        raise OptionError("beta_prior_var, sd_scale and lkj_eta must be positive")
    coords: dict[str, Any] = {"coef": list(spec.fixef_names), "obs": np.arange(spec.n),
                              "component": varcorr_labels(spec)}
    for t in spec.terms:
        coords[f"{t.name}_level"] = list(t.levels)
        coords[f"{t.name}_coef"] = list(t.coef_names)
    with pm.Model(coords=coords) as model:
        beta = pm.Normal("beta", 0.0, np.sqrt(tau), dims="coef")
        mu = pt.as_tensor_variable(spec.X) @ beta
        vc_parts = []
        for t in spec.terms:
            lev, cf = f"{t.name}_level", f"{t.name}_coef"
            z = pm.Normal(f"z_{t.name}", 0.0, 1.0, dims=(lev, cf))
            if t.q == 1:
                sd = pm.HalfNormal(f"sd_{t.name}", s, dims=cf)
                L = pt.diag(sd)
                D = L @ L.T
            else:
                L, _, _ = pm.LKJCholeskyCov(f"chol_{t.name}", n=t.q, eta=lkj_eta,
                                            sd_dist=pm.HalfNormal.dist(s, shape=t.q), compute_corr=True)
                D = L @ L.T
            b = pm.Deterministic(f"b_{t.name}", z @ L.T, dims=(lev, cf))
            mu = mu + pt.sum(pt.as_tensor_variable(t.Zraw) * b[t.codes], axis=1)
            rows, cols = np.tril_indices(t.q, -1)
            order = np.lexsort((rows, cols))  # covariances by column, as varcorr()
            vc_parts += [pt.diagonal(D), D[rows[order], cols[order]]]
        sigma = pm.HalfNormal("sigma", s)
        pm.Deterministic("varcorr", pt.concatenate([*vc_parts, pt.stack([sigma**2])]), dims="component")
        pm.Normal("y", mu, sigma, observed=spec.y, dims="obs")
    return model


def sample(spec: ModelSpec, *, draws: int = 1000, tune: int = 1000, chains: int = 2, seed: int | None = None,
           progressbar: bool = False, **priors: Any) -> Any:
    """Sample the ``conditional`` model; InferenceData with ``log_likelihood`` (pointwise per observation)."""
    import pymc as pm

    model = build_model(spec, **priors)
    with model:
        idata = pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar)
        pm.compute_log_likelihood(idata, progressbar=False)
    return idata
