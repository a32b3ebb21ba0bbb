"""PyMC models from a :class:`ModelSpec`, in three parameterisations.

Model (a Gaussian LMM with a Gaussian prior on beta)::

    beta        ~ N(0, beta_prior_var I)                  (often written theta; renamed here)
    sd_k        ~ HalfNormal(sd_scale)                    one per random-effect column of term k
    Corr_k      ~ LKJ(lkj_eta)                            terms with several columns
    b_k         ~ N(0, D_k) per level,  D_k = L_k L_k'    (L_k = diag(sd_k) chol(Corr_k))
    sigma       ~ HalfNormal(sd_scale)                    residual sd (the nugget's for ``ou``, the
                                                          first visit's for structures by visit)
    ou:  sd_process ~ HalfNormal(sd_scale), rho ~ Uniform(0, 1);   ar1: phi ~ Uniform(-1, 1)
    us:  sd(<visit>) ~ HalfNormal(sd_scale) (visits after the first), us_corr_chol ~ LKJCorr(lkj_eta)
    ...  the other structures' parameters: :mod:`._priors`
    y_i | b     ~ N(X_i beta + Z_i b_i, R_i)              R_i = sigma^2 I, or the residual structure

``conditional`` keeps ``b_k = z_k L_k'`` with ``z_k ~ N(0, I)`` (non-centred); ``marginal``
integrates ``b`` out and ``restricted`` integrates ``beta`` out as well (see
:mod:`._structure`). Default priors, scaled to the data: ``sd_scale = sd(y)`` (half-normal, so a
standard deviation as large as the response's is one prior sd away), ``beta_prior_var = 100
max(var(y), b_j^2)`` per coefficient (``b`` the least-squares coefficients: none is more than a
tenth of a prior sd from 0), ``lkj_eta = 2`` (mildly favours small correlations); every prior can be
replaced (:mod:`._priors`). The model has named coordinates from the specification (coefficient
names, levels of each factor), so ArviZ output is labelled, and a ``varcorr`` deterministic with
the variance components on the variance scale, one entry per row of ``LMMFit.varcorr()``, and for a
residual structure a ``process`` deterministic with its natural parameters (the rows of
``residual_params()`` besides the Residual one). PyMC is imported only when a model is built.

A residual structure makes its own variables (:meth:`bayeslmm.cov.ResidualStructure.pymc_variables`:
one per key of its ``priors()``, and any other, such as the LKJ correlation of ``us``) and maps them
to its natural parameters (``natural_from_draws``), so a new structure needs no change here.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import DataError, OptionError
from ..cov import PriorSpec, sd_prior
from ..spec import ModelSpec
from ._priors import Prior, as_prior
from ._structure import (
    RESPONSE_AS_DATA,
    Y_DATA,
    Y_SHIFT,
    Y_ZTY,
    DenseGroupStructure,
    WoodburyBase,
    pt_data,
    structure_for,
)


@dataclass(frozen=True)
class BuiltModel:
    """What :func:`build_model` recorded of a model: its parameterisation, the prior variance of beta
    it used, and the design's shape and labels (to refuse a specification of another design)."""

    param: str
    beta_prior_var: float
    n: int
    fixef_names: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]


#: the models made by :func:`build_model` (weakly held: a model that is dropped is forgotten)
_BUILT: weakref.WeakKeyDictionary[Any, BuiltModel] = weakref.WeakKeyDictionary()


def _design_key(spec: ModelSpec) -> tuple[int, tuple[str, ...], tuple[tuple[str, ...], ...]]:
    return spec.n, tuple(spec.fixef_names), tuple(tuple(t.levels) for t in spec.terms)


def built_model(model: Any, spec: ModelSpec) -> BuiltModel:
    """The record of a model made by :func:`build_model` from a specification of ``spec``'s design."""
    info = _BUILT.get(model)
    if info is None:
        raise OptionError("this model was not made by bayeslmm.bayes.build_model: build it with build_model(spec, ...)")
    if (info.n, info.fixef_names, info.levels) != _design_key(spec):
        raise OptionError(
            "the model was built for another design (rows, coefficients or levels differ from this "
            "specification's): build a model for this specification with build_model"
        )
    return info


def varcorr_labels(spec: ModelSpec) -> list[str]:
    """``grp|var1|var2`` labels of the variance components, in ``varcorr()`` row order."""
    return spec.varcorr_labels()


def default_priors(spec: ModelSpec) -> dict[str, float]:
    """The data-scaled defaults: ``sd_scale = sd(y)`` and ``beta_prior_var = 100 max(var(y), max_j b_j^2)``.

    ``b`` are the least-squares coefficients of ``y`` on ``X``: a prior centred at 0 must not
    pull a coefficient that the data put far from it (a response in grams around 1e6, an
    intercept at year 0 of a slope on calendar years). The least squares are solved in the
    working columns (:mod:`bayeslmm.linalg._basis`), so a large constant costs no digits. A
    specification from sufficient statistics carries ``sd(y)`` as ``y_sd`` and its blocks.
    """
    y_sd = None if spec.has_rows else spec.source.y_sd
    sy = (float(y_sd) if y_sd is not None else float(np.std(spec.y))) or 1.0
    b = _least_squares(spec)
    big = float(np.max(b * b)) if b.size and np.all(np.isfinite(b)) else 0.0
    return {"sd_scale": sy, "beta_prior_var": 100.0 * max(sy * sy, big)}


def _least_squares(spec: ModelSpec) -> np.ndarray:
    """``argmin |y - X b|`` from the rows, or from the blocks' ``[X y]'[X y]`` (working columns)."""
    from ..linalg import FixedBasis

    blocks = None if spec.has_rows else spec.source.blocks
    try:
        if blocks is not None:
            F, p = blocks.F, blocks.p
            return blocks.fixed_basis.beta(np.linalg.solve(F[:p, :p], F[:p, p]))
        basis = FixedBasis.from_rows(spec.X, spec.y)
        Xw, yw = basis.apply(spec.X, None)[0], basis.apply_y(spec.y)
        return basis.beta(np.linalg.lstsq(Xw, yw, rcond=None)[0])
    except np.linalg.LinAlgError:
        return np.zeros(0)


PARAMS = ("conditional", "marginal", "restricted")


def process_labels(spec: ModelSpec) -> list[str]:
    """Names of the residual structure's parameters in the posterior's ``process`` (as ``residual_params()``)."""
    return [] if spec.residual is None else list(spec.residual.structure.process_keys)


def _resolve_priors(spec: ModelSpec, s: float, priors: dict[str, Any] | None) -> dict[str, Prior]:
    """Every prior of the model by key (see :mod:`._priors`), user replacements checked."""
    specs: dict[str, PriorSpec] = {f"sd_{t.name}": sd_prior(s) for t in spec.terms}
    specs["sigma"] = sd_prior(s)
    if spec.residual is not None:
        specs |= spec.residual.structure.priors(s)
    out = {k: Prior(v.dist, dict(v.params)) for k, v in specs.items()}
    for key, value in (priors or {}).items():
        if key not in out:
            raise OptionError(f"no parameter {key!r} takes a prior in this model: use one of {', '.join(out)}")
        pr = as_prior(value)
        sp = specs[key]
        pr.check(key, (sp.outside, sp.inside, sp.need))
        out[key] = pr
    return out


def build_model(
    spec: ModelSpec,
    *,
    param: str = "conditional",
    beta_prior_var: float | None = None,
    sd_scale: float | None = None,
    lkj_eta: float = 2.0,
    priors: dict[str, Any] | None = None,
    mutable_response: bool = False,
) -> Any:
    """A PyMC model of ``spec`` in one of three parameterisations (see the module docstring).

    With ``mutable_response`` the response enters the model as PyMC data containers, so that
    :func:`set_response` can give the same compiled model another response on the same design
    (simulation-based calibration, parametric bootstrap); without it, as constants.

    * ``conditional``: random effects explicit and non-centred;
    * ``marginal``: random effects integrated out, ``y_i ~ N(X_i beta, Z_i D Z_i' + R_i)``;
    * ``restricted``: beta integrated out as well, the density of :mod:`._marginal`.

    Every random-effect structure of the REML engine is supported: one grouping factor
    (Woodbury per level), several nested or crossed factors (one Woodbury over all random
    effects, at most ``_structure.MAX_Q`` of them) and serial processes (``ou``/``ar1``: dense
    per-group ``V_i`` batched over groups). With a serial process the ``conditional`` model keeps
    ``b`` explicit and integrates the process out group by group, ``y_i | b_i ~ N(X_i beta + Z_i b_i, R_i)``.

    ``priors`` replaces priors by key (``sd_<term>``, ``sigma``, and the residual structure's:
    ``sd_process``, ``rho``, ``phi``, ``sd(<visit>)``, ``pacf(lag k)``, ``range``, ``nugget``, ...;
    values a :class:`~bayeslmm.bayes.Prior`, its text ``"HalfStudentT(nu=3, sigma=10)"`` or a
    ``(name, params)`` pair); see :mod:`bayeslmm.bayes._priors` for the defaults. ``lkj_eta`` is the
    LKJ shape of every correlation matrix: the terms' with several columns and ``us``'s over the visits.

    Returns
    -------
    pymc.Model with ``beta`` (dims ``coef``; not in ``restricted``), ``sigma``, per term
    ``sd_<term>`` or ``chol_<term>``, ``z_<term>``/``b_<term>`` (``conditional`` only; dims
    ``<term>_level``, ``<term>_coef``), ``varcorr`` (dims ``component``, labelled
    ``grp|var1|var2`` as ``varcorr()`` rows), for a residual structure ``process`` (dims
    ``process_param``, labelled by the structure's ``process_keys``: ``process_var, rho`` for ``ou``,
    ``phi`` for ``ar1``, the variances ``var(<visit>)`` and covariances ``cov(<a>,<b>)`` for ``us``,
    ``range, nugget`` for the spatial ones, ...; the ``Residual`` component is then the nugget, the
    AR(1) variance, the first visit's variance or the sill) and the likelihood term ``y``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    if param not in PARAMS:
        raise OptionError(f"unknown parameterisation {param!r}: use one of {', '.join(PARAMS)}")
    if not spec.terms and spec.residual is None:
        raise OptionError("a PyMC model needs at least one random-effect term or a serial residual process")
    if not spec.has_rows and param == "conditional":
        raise OptionError(
            "a model from sufficient statistics has no rows for the conditional parameterisation "
            "(y | b needs them): use param='marginal' or 'restricted'"
        )
    d = default_priors(spec)
    beta_prior_var = d["beta_prior_var"] if beta_prior_var is None else float(beta_prior_var)
    s = d["sd_scale"] if sd_scale is None else float(sd_scale)
    if not (beta_prior_var > 0 and s > 0 and lkj_eta > 0 and np.isfinite(beta_prior_var) and np.isfinite(s)):
        raise OptionError("beta_prior_var, sd_scale and lkj_eta must be positive and finite")
    pri = _resolve_priors(spec, s, priors)
    struct = structure_for(spec) if (param != "conditional" or spec.residual is not None) else None
    coords: dict[str, Any] = {"coef": list(spec.fixef_names), "component": varcorr_labels(spec)}
    for t in spec.terms:
        coords[f"{t.name}_level"] = list(t.levels)
        coords[f"{t.name}_coef"] = list(t.coef_names)
    if spec.residual is not None:
        coords["process_param"] = process_labels(spec)
    token = RESPONSE_AS_DATA.set(bool(mutable_response))
    try:
        with pm.Model(coords=coords) as model:
            beta = pm.Normal("beta", 0.0, np.sqrt(beta_prior_var), dims="coef") if param != "restricted" else None
            Ls, vc_parts = [], []
            for t in spec.terms:
                sd_prior = pri[f"sd_{t.name}"]
                if t.q == 1:
                    L = pt.reshape(sd_prior.rv(f"sd_{t.name}", dims=f"{t.name}_coef"), (1, 1))
                else:
                    L, _, _ = pm.LKJCholeskyCov(
                        f"chol_{t.name}", n=t.q, eta=lkj_eta, sd_dist=sd_prior.dist_(shape=t.q), compute_corr=True
                    )
                D = L @ L.T
                rows, cols = np.tril_indices(t.q, -1)
                order = np.lexsort((rows, cols))  # covariances by column, as varcorr()
                vc_parts += [pt.diagonal(D), D[rows[order], cols[order]]]
                Ls.append(L)
            sigma = pri["sigma"].rv("sigma")
            res: dict[str, Any] = {"sigma2": sigma**2}
            if spec.residual is not None:
                structure = spec.residual.structure
                draws = structure.pymc_variables(lambda k: pri[k].rv(k), s, lkj_eta)
                res = structure.natural_from_draws(draws, sigma**2)
                pm.Deterministic("process", pt.stack([res[k] for k in structure.process_keys]), dims="process_param")
            pm.Deterministic("varcorr", pt.concatenate([*vc_parts, pt.stack([sigma**2])]), dims="component")
            if param == "conditional":
                mu = pt.as_tensor_variable(spec.X) @ beta
                for t, L in zip(spec.terms, Ls):
                    lev, cf = f"{t.name}_level", f"{t.name}_coef"
                    z = pm.Normal(f"z_{t.name}", 0.0, 1.0, dims=(lev, cf))
                    b = pm.Deterministic(f"b_{t.name}", z @ L.T, dims=(lev, cf))
                    mu = mu + pt.sum(pt.as_tensor_variable(t.Zraw) * b[t.codes], axis=1)
                if isinstance(struct, DenseGroupStructure):  # y | b integrates the residual structure out
                    pm.Potential("y", struct.pt_conditional(mu, res, spec.n))
                else:
                    model.add_coord("obs", np.arange(spec.n))
                    pm.Normal(
                        "y", mu, sigma, observed=pt_data(Y_DATA, spec.y) if mutable_response else spec.y, dims="obs"
                    )
            elif struct is not None and param == "marginal":
                pm.Potential("y", struct.pt_marginal(Ls, res, beta, spec.n))
            elif struct is not None:
                pm.Potential("y", struct.pt_restricted(Ls, res, beta_prior_var, spec.n))
    finally:
        RESPONSE_AS_DATA.reset(token)
    _BUILT[model] = BuiltModel(param, beta_prior_var, *_design_key(spec))
    return model


def set_response(model: Any, spec: ModelSpec, y: Any) -> None:
    """Replace the response of a model made by :func:`build_model` by ``y`` ``(n,)``, in place.

    The response enters the model only through data containers (``y_data``: the rows; for the
    ``marginal``/``restricted`` models without a residual structure ``y_Zty``, ``y_Xty``, ``y_yty``
    in the working columns, ``Z_i'y_w``, ``X_w'y_w``, ``y_w'y_w``, ``y_w = y - c_y``); they are
    recomputed for ``y`` with the shift ``c_y`` the model was built with (``y_shift``), so the model
    then has the log density of a model built afresh from ``spec.with_response(y)``, and its
    compiled functions (a sampler's) stay valid. ``spec`` must have the design the model was built
    from (its response does not matter). The priors stay those the model was built with: the
    defaults scaled to the data (``sd(y)``) are not recomputed, so give ``beta_prior_var`` and
    ``sd_scale`` to ``build_model`` when the responses differ in scale.
    """
    import pymc as pm

    if not spec.has_rows:
        raise OptionError(
            "a specification from sufficient statistics has no rows to take a new response: "
            "build the model from a specification with the rows"
        )
    built_model(model, spec)
    if not ({Y_DATA, Y_ZTY} & {v.name for v in model.data_vars}):
        raise OptionError(
            "this model takes its response as constants: build it with build_model(spec, ..., mutable_response=True)"
        )
    y = np.asarray(y, dtype=float)
    if y.shape != (spec.n,):
        raise DataError(f"the response must have one value per row of the design, shape ({spec.n},); got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise DataError("the response has missing or infinite values: give a finite value for every row")
    names = {v.name for v in model.data_vars}
    new: dict[str, np.ndarray] = {}
    if Y_DATA in names:
        new[Y_DATA] = y
    if Y_ZTY in names:
        struct = structure_for(spec)
        if not isinstance(struct, WoodburyBase):
            raise OptionError("the model was built for another structure: build a model for this specification")
        new |= struct.response_data(y, float(model[Y_SHIFT].get_value()))
    for name, value in new.items():
        if model[name].get_value().shape != value.shape:
            raise OptionError(f"the model's {name} has another shape: build a model for this specification")
    pm.set_data(new, model=model)
