"""Sampling the PyMC models, and completing the draws so that all parameterisations look alike.

After ``marginal`` and ``restricted`` sampling, ``b`` (and ``beta`` for ``restricted``) are drawn
from their exact conditional Gaussians, one draw per posterior draw, so the three
parameterisations give the same InferenceData layout. The log-likelihood is stored per
observation for ``conditional`` with independent errors (``y_j | beta, b``) and otherwise per
independent block, ``log N(y_i; X_i beta, V_i)`` with the random effects (and any serial process)
integrated out: per level of the grouping factor, per level of the outermost factor for nested
factors; crossed factors have no independent blocks and get no ``log_likelihood`` group. LOO on
a per-block log-likelihood is leave-one-group-out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._errors import OptionError
from .._interrupt import Interrupted, sigint_guard
from ..spec import ModelSpec
from ._model import build_model, built_model, process_labels, set_response
from ._structure import DenseGroupStructure, psd_sqrt, structure_for

SAMPLERS = ("pymc", "nutpie", "numpyro", "blackjax")
#: posterior attribute set to 1 on an interrupted run returned with ``allow_partial=True``
PARTIAL_ATTR = "partial"
#: largest array of random-effect draws ``(chains * draws, levels, q)`` stored without ``ranef=True``
MAX_RANEF_BYTES = 2 * 1024**3
_NEEDS = {"nutpie": "nutpie", "numpyro": "numpyro", "blackjax": "blackjax"}
#: per model given to ``sample(model=...)``, by compilation mode: the compiled log density and
#: gradient of PyMC's NUTS and the jittered initial point function, reused by the next call
_COMPILED: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def _D_blocks(spec: ModelSpec, vc: np.ndarray) -> list[np.ndarray]:
    """``[(draws, q_k, q_k)]`` covariance matrices of the terms from ``(draws, components)`` varcorr draws."""
    out, i = [], 0
    for t in spec.terms:
        Dk = np.zeros((vc.shape[0], t.q, t.q))
        for a, b in t.covariance.components():
            Dk[:, a, b] = Dk[:, b, a] = vc[:, i]
            i += 1
        out.append(Dk)
    return out


def _res_draws(spec: ModelSpec, group: Any, k: int) -> dict[str, np.ndarray]:
    """``{"sigma2", "process_var", "rho" | "phi"}`` as ``(k,)`` arrays from a posterior or prior group."""
    res = {"sigma2": group["varcorr"].values.reshape(k, -1)[:, -1]}
    if spec.residual is not None:
        proc = group["process"].values.reshape(k, -1)
        res |= {name: proc[:, j] for j, name in enumerate(process_labels(spec))}
    return res


def _complete(
    spec: ModelSpec, idata: Any, param: str, beta_prior_var: float, seed: int | None, ranef: bool = True
) -> None:
    """Add ``b_<term>`` (and ``beta`` for ``restricted``) drawn exactly, and the per-block log-likelihood.

    ``restricted``: ``beta | psi, y ~ N(M^-1 X'V^-1 y, M^-1)``, ``M = X'V^-1 X + I / beta_prior_var``;
    then ``b | beta, psi, y ~ N(D Z'V^-1 (y - X beta), D - D Z'V^-1 Z D)``.
    """
    import xarray as xr

    struct = structure_for(spec)
    post = idata.posterior
    C, Dn = post["varcorr"].shape[:2]
    K = C * Dn
    rng = np.random.default_rng(seed)
    vc = post["varcorr"].values.reshape(K, -1)
    Ds = _D_blocks(spec, vc)
    Lks = [psd_sqrt(D) for D in Ds]
    res = _res_draws(spec, post, K)
    p = spec.p
    betas = np.empty((K, p)) if param == "restricted" else post["beta"].values.reshape(K, p)
    ranef = ranef and param != "conditional"
    bs = [np.empty((K, t.nlevels, t.q)) for t in spec.terms] if ranef else []
    ll = None
    if param == "marginal" and not ranef and not spec.has_rows:
        return  # nothing to draw: no random effects asked for, no per-block log-likelihood without rows
    for k in range(K):
        st = struct.np_state([L[k] for L in Lks], {key: float(v[k]) for key, v in res.items()})
        if param == "restricted":
            betas[k] = struct.np_draw_beta(st, beta_prior_var, rng)
        if ranef:
            for j, b in enumerate(struct.np_draw_b(st, betas[k], rng)):
                bs[j][k] = b
        llk = struct.np_loglik(st, betas[k])
        if llk is not None:
            if ll is None:
                ll = np.empty((K, llk.size))
            ll[k] = llk
    dims = ("chain", "draw")
    coords = {"chain": post["chain"].values, "draw": post["draw"].values}
    if param == "restricted":
        post["beta"] = xr.DataArray(
            betas.reshape(C, Dn, p), dims=(*dims, "coef"), coords={**coords, "coef": list(spec.fixef_names)}
        )
    if ranef:
        for t, b in zip(spec.terms, bs):
            post[f"b_{t.name}"] = xr.DataArray(
                b.reshape(C, Dn, t.nlevels, t.q),
                dims=(*dims, f"{t.name}_level", f"{t.name}_coef"),
                coords={**coords, f"{t.name}_level": list(t.levels), f"{t.name}_coef": list(t.coef_names)},
            )
    if ll is not None:
        dim = struct.loglik_dim
        idata["log_likelihood"] = xr.Dataset(
            {"y": xr.DataArray(ll.reshape(C, Dn, -1), dims=(*dims, dim), coords={**coords, dim: struct.loglik_labels})}
        )


def _simulate_y(spec: ModelSpec, group: Any, rng: np.random.Generator) -> np.ndarray:
    """``(draws, n)`` responses ``X beta + sum_k Z_k b_k + e`` with ``e ~ N(0, R)`` for each stacked draw."""
    C, D = group["varcorr"].shape[:2]
    K = C * D
    beta = group["beta"].values.reshape(K, -1)
    y = beta @ spec.X.T
    for t in spec.terms:
        b = group[f"b_{t.name}"].values.reshape(K, t.nlevels, t.q)
        y += np.einsum("nq,dnq->dn", t.Zraw, b[:, t.codes, :])
    res = _res_draws(spec, group, K)
    struct = structure_for(spec) if spec.residual is not None else None
    if isinstance(struct, DenseGroupStructure):
        return y + struct.np_residual_draws(res, rng)
    return y + np.sqrt(res["sigma2"])[:, None] * rng.standard_normal((K, spec.n))


def _predictive(spec: ModelSpec, group: Any, rng: np.random.Generator) -> Any:
    """A predictive Dataset ``y (chain, draw, obs)`` from a group's draws."""
    import xarray as xr

    C, D = group["varcorr"].shape[:2]
    y = _simulate_y(spec, group, rng)
    return xr.Dataset(
        {
            "y": xr.DataArray(
                y.reshape(C, D, spec.n),
                dims=("chain", "draw", "obs"),
                coords={"chain": group["chain"].values, "draw": group["draw"].values, "obs": np.arange(spec.n)},
            )
        }
    )


def _prior_draws(
    spec: ModelSpec,
    model: Any,
    draws: int,
    beta_prior_var: float,
    seed: int | None,
    predictive: bool = True,
    ranef: bool = True,
) -> tuple[Any, Any]:
    """Prior draws of the parameters (``b_<term>`` drawn from ``N(0, D)`` where the model has no ``z``)
    and the prior predictive of ``y``."""
    import pymc as pm
    import xarray as xr

    rng = np.random.default_rng(seed)
    names = [v.name for v in model.free_RVs if not v.name.startswith("z_")] + ["varcorr"]
    names += ["process"] if spec.residual is not None else []
    with model, warnings.catch_warnings():
        # the Potential is the likelihood of the marginal models; a prior draw must ignore it
        warnings.filterwarnings("ignore", message="The effect of Potentials", category=UserWarning)
        pri = pm.sample_prior_predictive(draws=draws, var_names=names, random_seed=rng)
    prior = pri.prior.to_dataset() if hasattr(pri.prior, "to_dataset") else pri.prior
    if "beta" not in prior:
        prior["beta"] = xr.DataArray(
            rng.normal(0, np.sqrt(beta_prior_var), (1, draws, spec.p)),
            dims=("chain", "draw", "coef"),
            coords={"coef": list(spec.fixef_names)},
        )
    vc = prior["varcorr"].values.reshape(draws, -1)
    for t, Dk in zip(spec.terms if ranef else [], _D_blocks(spec, vc)):
        b = np.einsum("dqr,dlr->dlq", psd_sqrt(Dk), rng.standard_normal((draws, t.nlevels, t.q)))
        prior[f"b_{t.name}"] = xr.DataArray(
            b[None],
            dims=("chain", "draw", f"{t.name}_level", f"{t.name}_coef"),
            coords={f"{t.name}_level": list(t.levels), f"{t.name}_coef": list(t.coef_names)},
        )
    return prior, (_predictive(spec, prior, rng) if predictive else None)


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise OptionError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    mod = _NEEDS.get(sampler)
    if mod and importlib.util.find_spec(mod) is None:
        raise OptionError(
            f"sampler {sampler!r} needs the {mod} package: pip install 'bayeslmm[jax]' "
            "(numpyro, blackjax) or pip install nutpie"
        )


def _seed_of(seed: Any, random_seed: Any) -> int | None:
    """One integer seed (or None) from ``seed`` and its PyMC-style alias ``random_seed``."""
    if seed is not None and random_seed is not None and seed is not random_seed:
        raise OptionError("give seed or random_seed (the same thing), not both")
    seed = random_seed if seed is None else seed
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63 - 1))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer, a numpy Generator or None, got {seed!r}")
    return int(seed)


def _streams(seed: int | None) -> dict[str, int | None]:
    """Independent seeds of every random stream of :func:`sample`, all derived from ``seed``."""
    names = ("sampler", "complete", "prior", "predictive")
    if seed is None:
        return dict.fromkeys(names)
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: int(c.generate_state(1, np.uint32)[0]) for n, c in zip(names, children)}


@contextlib.contextmanager
def _exact_float() -> Iterator[None]:
    """Compile with PyTensor's Numba fast-math off, here and in sampler processes started meanwhile.

    With fast-math (PyTensor's default) LLVM may reassociate and contract floating-point sums, and
    it does so differently when a function's operations are compiled afresh (inlined together) and
    when they are loaded from the on-disk cache: the log density differed in its last bit between a
    process that compiled the model (cold cache) and one that loaded it (warm cache), and NUTS turns
    one bit into a different chain (sleepstudy, same seed: Days variance 48.14 cold, 44.13 warm).
    IEEE arithmetic gives the same bits either way.
    """
    import pytensor

    old = os.environ.get("PYTENSOR_FLAGS")
    flags = [f for f in (old or "").split(",") if f.strip() and not f.strip().startswith("numba__fastmath")]
    os.environ["PYTENSOR_FLAGS"] = ",".join([*flags, "numba__fastmath=False"])  # spawned/forkserver children
    try:
        with pytensor.config.change_flags(numba__fastmath=False):
            yield
    finally:
        if old is None:
            os.environ.pop("PYTENSOR_FLAGS", None)
        else:
            os.environ["PYTENSOR_FLAGS"] = old


def sample(
    spec: ModelSpec,
    *,
    param: str = "conditional",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    seed: int | np.random.Generator | None = None,
    progressbar: bool = False,
    sampler: str = "pymc",
    mode: str | None = "NUMBA",
    target_accept: float | None = None,
    posterior_predictive: bool | None = None,
    prior: bool = False,
    ranef: bool | None = None,
    random_seed: int | np.random.Generator | None = None,
    allow_partial: bool = False,
    model: Any = None,
    **priors: Any,
) -> Any:
    """Sample a model of ``spec``; the same InferenceData layout for all three parameterisations.

    The posterior holds ``beta``, ``b_<term>``, ``varcorr``, ``sigma``, ``process`` (serial
    models) and the sd/LKJ variables; ``log_likelihood`` is described in the module docstring.

    ``sampler``: ``"pymc"`` (PyMC's NUTS, the default), ``"nutpie"`` (PyMC 6's default when
    installed), ``"numpyro"`` or ``"blackjax"`` (JAX; ``pip install 'bayeslmm[jax]'``). PyMC's own
    NUTS is the default because it was the fastest here for these small models: pig ``marginal``,
    2 x 1000 draws, 4.3 s for PyMC against 17-24 s for nutpie, whose compilation dominates.
    ``mode`` is PyTensor's compilation mode for ``pymc``/``nutpie``: ``"NUMBA"`` (default) compiles
    the batched small-matrix algebra far better than the C backend (sleepstudy ``marginal``: 12 s in
    all against 158 s); ``None`` uses PyTensor's default. Compiled code is cached on disk by
    PyTensor and Numba between runs. ``posterior_predictive`` adds ``y`` replicated from each draw's
    ``beta``, ``b`` and residual parameters (a new residual process for serial models); ``prior``
    adds ``prior`` and ``prior_predictive`` groups (as many draws as ``draws``). ``ranef``: draw
    ``b_<term>`` after ``marginal``/``restricted`` sampling (default: yes, unless the array of
    draws would exceed :data:`MAX_RANEF_BYTES`, which is an error that says so; ``False`` skips
    them, e.g. for a million levels). Other keyword arguments go to :func:`build_model`
    (``beta_prior_var``, ``sd_scale``, ``lkj_eta``, ``priors``).

    ``seed`` (or its PyMC spelling ``random_seed``; an integer, or a NumPy Generator from which one
    integer is drawn) determines the result: the sampler's per-chain seeds (and with them PyMC's
    jittered initial points), the exact draws of ``b``/``beta`` after ``marginal``/``restricted``
    sampling, the posterior predictive and the prior draws are separate streams derived from it
    with ``numpy.random.SeedSequence``. The same seed gives the same draws whether PyTensor's and
    Numba's compile caches are empty or warm: the model is compiled with Numba fast-math off (see
    :func:`_exact_float`). ``None`` draws fresh entropy.

    Ctrl-C (``KeyboardInterrupt``) stops sampling within about a second and propagates; no partial
    posterior is returned. PyMC and nutpie would otherwise end the current chain, run the remaining
    ones, and return what was drawn as if complete. With ``allow_partial=True`` the draws made so
    far are returned instead, marked by ``idata.posterior.attrs["partial"] == 1`` (with
    ``chains_requested`` and ``draws_requested``); fewer chains or draws than requested without
    that flag raise ``KeyboardInterrupt``. (JAX samplers see Ctrl-C only when their compiled loop
    returns.)

    A specification from sufficient statistics (``bayeslmm.suff.stats_model_spec`` or a
    a fit from sufficient statistics' ``spec``) samples the ``marginal`` and ``restricted`` models with no rows: each
    gradient costs O(levels) whatever the number of rows. It has no ``observed_data``,
    ``posterior_predictive``, ``prior_predictive`` or ``log_likelihood`` (they need the rows).

    ``target_accept`` defaults to PyMC's (0.8), and to 0.95 for serial processes, whose ``marginal``
    posterior gave divergences at 0.8 (the OU process variance and ``rho`` trade off).

    Sampling runs with one BLAS thread: PyTensor's and NumPy's thread pools were seen to make
    nested ``marginal`` models seven times slower on two cores.

    ``model``: a model made by :func:`build_model` from a specification with the same design as
    ``spec`` (same rows, coefficients and levels; the response may differ) and the same ``param``,
    sampled instead of a new one, for repeated runs on one design (simulation-based calibration,
    parametric bootstrap): its response is set to ``spec``'s (:func:`set_response`) and, with
    ``sampler="pymc"``, the log density and gradient compiled by the first such call are reused by
    the next ones (the pig or SBC ``marginal`` model: about half the time of a call). The priors are
    the model's, so ``beta_prior_var``, ``sd_scale``, ``lkj_eta`` and ``priors`` go to
    :func:`build_model`, not here. Not for a specification from sufficient statistics (no rows).
    """
    from threadpoolctl import threadpool_limits

    _check_sampler(sampler)
    seed = _seed_of(seed, random_seed)
    if draws < 1 or tune < 0 or chains < 1:
        raise OptionError("draws and chains must be at least 1 and tune at least 0")
    rowless = not spec.has_rows
    if model is not None:
        if priors:
            raise OptionError(
                f"{', '.join(sorted(priors))}: a given model has its priors; give them to build_model instead"
            )
        info = built_model(model, spec)
        if info.param != param:
            raise OptionError(f"the model was built with param={info.param!r}: pass param={info.param!r} to sample")
        if rowless:
            raise OptionError(
                "model= reuses a model for a new response; a specification from sufficient statistics has no rows"
            )
        set_response(model, spec, spec.y)
    if posterior_predictive is None:
        posterior_predictive = not rowless
    if rowless and posterior_predictive:
        raise OptionError(
            "a model from sufficient statistics has no rows to replicate: posterior_predictive "
            "needs the data (fit with the rows, or pass posterior_predictive=False)"
        )
    if param != "conditional" and spec.terms:
        nbytes = 8 * chains * draws * sum(t.nlevels * t.q for t in spec.terms)
        if ranef is None:
            ranef = nbytes <= MAX_RANEF_BYTES
            if not ranef:
                raise OptionError(
                    f"the random-effect draws would take {nbytes / 1024**3:.1f} GiB (more than "
                    f"{MAX_RANEF_BYTES / 1024**3:.0f} GiB): pass ranef=False to skip them, or "
                    "fewer draws"
                )
    ranef = True if ranef is None else bool(ranef)
    # Ctrl-C raises Interrupted, which PyMC and nutpie do not catch; within pm.sample with
    # allow_partial, KeyboardInterrupt, which they catch to return the draws so far
    mode_of = {"partial": False}
    try:
        with (
            threadpool_limits(limits=1, user_api="blas"),
            _exact_float(),
            sigint_guard(lambda: KeyboardInterrupt() if mode_of["partial"] else Interrupted()) as hit,
        ):
            return _sample(
                spec,
                param,
                draws,
                tune,
                chains,
                seed,
                progressbar,
                sampler,
                mode,
                target_accept,
                posterior_predictive,
                prior,
                ranef,
                bool(allow_partial),
                priors,
                hit,
                mode_of,
                model,
            )
    except Interrupted:
        raise KeyboardInterrupt("sampling interrupted") from None


def _run_sampler(
    model: Any,
    draws: int,
    tune: int,
    chains: int,
    seed: int | None,
    progressbar: bool,
    sampler: str,
    allow_partial: bool,
    kwargs: dict[str, Any],
    hit: dict[str, bool],
    mode_of: dict[str, bool],
    reuse: bool = False,
) -> Any:
    """``pm.sample`` that stops at Ctrl-C and never passes a partial posterior off as a complete one.

    ``reuse``: PyMC's NUTS is set up as ``pm.sample`` does (``jitter+adapt_diag``) but with the
    log density and gradient compiled by an earlier call on the same model (:func:`_reused_nuts`).
    """
    import pymc as pm

    if reuse and sampler == "pymc":
        init, step = _reused_nuts(model, chains, seed, kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k != "target_accept"} | {"step": step, "initvals": init}

    if sampler == "pymc" and allow_partial:

        def stop_other_chains(trace: Any, draw: Any) -> None:  # PyMC goes on with the next chain
            if hit["hit"]:
                raise KeyboardInterrupt

        kwargs = {**kwargs, "callback": stop_other_chains}
    mode_of["partial"] = allow_partial
    try:
        with model:
            idata = pm.sample(
                draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar, **kwargs
            )
    except Exception:
        if hit["hit"]:  # e.g. nothing drawn yet to return
            raise KeyboardInterrupt("sampling interrupted") from None
        raise
    finally:
        mode_of["partial"] = False
    post = idata.posterior
    got_chains, got_draws = int(post.sizes.get("chain", 0)), int(post.sizes.get("draw", 0))
    short = got_chains < chains or got_draws < draws
    if not (hit["hit"] or short):
        return idata
    if not allow_partial:
        raise KeyboardInterrupt(
            f"sampling stopped early ({got_chains} of {chains} chains, {got_draws} of {draws} "
            "draws); pass allow_partial=True to keep such draws"
        )
    post.attrs.update({PARTIAL_ATTR: 1, "chains_requested": int(chains), "draws_requested": int(draws)})
    idata["posterior"] = post
    return idata


def _reused_nuts(model: Any, chains: int, seed: int | None, kwargs: dict[str, Any]) -> tuple[list[Any], Any]:
    """Initial points and a NUTS step as ``pm.init_nuts(init="jitter+adapt_diag")`` makes them (each
    chain starts at the model's initial point jittered by ``U(-1, 1)`` on the unconstrained scale,
    redrawn while the log density is not finite; a diagonal mass matrix adapted from 1), with the
    compiled ``logp_dlogp`` function and initial point function cached per model and compilation
    mode. The compiled function reads the model's data containers when called, so it serves every
    response the model is given."""
    import pymc as pm
    from pymc.blocking import DictToArrayBijection
    from pymc.initial_point import make_initial_point_fn
    from pymc.step_methods.hmc.quadpotential import QuadPotentialDiagAdapt

    compile_kwargs = kwargs.get("compile_kwargs", {})
    key = repr(compile_kwargs.get("mode"))
    cache = _COMPILED.setdefault(model, {})
    if key not in cache:
        f = model.logp_dlogp_function(ravel_inputs=True, **compile_kwargs)
        f.trust_input = True
        ipfn = make_initial_point_fn(model=model, jitter_rvs=set(model.free_RVs), return_transformed=True)
        cache[key] = (f, ipfn)
    f, ipfn = cache[key]
    names = [v.name for v in model.value_vars]
    seeds = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(chains)]
    init = []
    for s in seeds:
        rng = np.random.default_rng(s)
        for _ in range(11):  # as PyMC's jitter_max_retries=10
            point = {k: v for k, v in ipfn(s).items() if k in names}
            if np.isfinite(f([DictToArrayBijection.map(point).data], extra_vars={})[0]):
                break
            s = int(rng.integers(2**30))
        init.append(point)
    mean = np.mean([DictToArrayBijection.map(p).data for p in init], axis=0)
    potential = QuadPotentialDiagAdapt(mean.size, mean, np.ones_like(mean), 10, rng=seeds[0])
    nuts_kwargs = {"target_accept": kwargs["target_accept"]} if "target_accept" in kwargs else {}
    step = pm.NUTS(
        potential=potential, model=model, rng=seeds[0], initial_point=init[0], logp_dlogp_func=f, **nuts_kwargs
    )
    return init, step


def _sample(
    spec: ModelSpec,
    param: str,
    draws: int,
    tune: int,
    chains: int,
    seed: int | None,
    progressbar: bool,
    sampler: str,
    mode: str | None,
    target_accept: float | None,
    posterior_predictive: bool,
    prior: bool,
    ranef: bool,
    allow_partial: bool,
    priors: dict[str, Any],
    hit: dict[str, bool],
    mode_of: dict[str, bool],
    model: Any = None,
) -> Any:
    import pymc as pm

    streams = _streams(seed)
    reuse = model is not None
    if model is None:
        model = build_model(spec, param=param, **priors)
    kwargs: dict[str, Any] = {"nuts_sampler": sampler}
    if sampler in ("pymc", "nutpie") and mode is not None:
        kwargs["compile_kwargs"] = {"mode": mode}
    if target_accept is None and spec.residual is not None:
        target_accept = 0.95  # OU/AR(1) posteriors have a funnel in (process variance, rho): smaller steps
    if target_accept is not None:
        kwargs["target_accept"] = float(target_accept)
    idata = _run_sampler(
        model,
        draws,
        tune,
        chains,
        streams["sampler"],
        progressbar,
        sampler,
        allow_partial,
        kwargs,
        hit,
        mode_of,
        reuse,
    )
    _drop_response_data(idata)
    if param == "conditional" and spec.residual is None:
        with model:
            pm.compute_log_likelihood(idata, progressbar=False)
    beta_prior_var = built_model(model, spec).beta_prior_var
    if param != "conditional" or spec.residual is not None:
        _complete(spec, idata, param, float(beta_prior_var), streams["complete"], ranef)
    if not spec.has_rows:
        if "observed_data" in idata.children and not idata["observed_data"].data_vars:
            del idata["observed_data"]  # PyMC leaves an empty group; there is no data to show
        if prior:
            idata["prior"] = _prior_draws(
                spec, model, draws, float(beta_prior_var), streams["prior"], predictive=False, ranef=ranef
            )[0]
        return idata
    idata["observed_data"] = _observed(spec)
    rng = np.random.default_rng(streams["predictive"])
    if posterior_predictive:
        idata["posterior_predictive"] = _predictive(spec, idata.posterior, rng)
    if prior:
        pri, pri_pred = _prior_draws(spec, model, draws, float(beta_prior_var), streams["prior"])
        idata["prior"] = pri
        idata["prior_predictive"] = pri_pred
    return idata


def _drop_response_data(idata: Any) -> None:
    """Remove the model's response containers (``y_Zty``, ... : working-column sums, internal) from
    ``constant_data``, and the group if nothing else is left; the response is in ``observed_data``."""
    if "constant_data" not in idata.children:
        return
    ds = idata["constant_data"].to_dataset()
    keep = [v for v in ds.data_vars if not str(v).startswith("y_")]
    if keep:
        idata["constant_data"] = ds[keep]
    else:
        del idata["constant_data"]


def _observed(spec: ModelSpec) -> Any:
    import xarray as xr

    return xr.Dataset({"y": xr.DataArray(spec.y, dims=("obs",), coords={"obs": np.arange(spec.n)})})


def sample_summary(spec: ModelSpec, idata: Any) -> dict[str, Any]:
    """Rows of ``bayeslmm sample --json``: fixed effects, variance components and process parameters."""
    import arviz as az

    names = ["beta", "varcorr"] + (["process"] if spec.residual is not None else [])
    tab = az.summary(idata, var_names=names, ci_kind="hdi", ci_prob=0.94, round_to="none")
    rows = []
    for (_, r), (kind, extra) in zip(tab.iterrows(), _row_kinds(spec)):
        rows.append(
            {
                "kind": kind,
                **extra,
                "mean": float(r["mean"]),
                "sd": float(r["sd"]),
                "hdi_low": float(r["hdi94_lb"]),
                "hdi_high": float(r["hdi94_ub"]),
                "mcse_mean": float(r["mcse_mean"]),
                "ess_bulk": float(r["ess_bulk"]),
                "ess_tail": float(r["ess_tail"]),
                "r_hat": float(r["r_hat"]),
            }
        )
    div = idata.sample_stats["diverging"] if "diverging" in idata.sample_stats else None
    return {"params": rows, "divergences": int(div.sum()) if div is not None else 0}


def _row_kinds(spec: ModelSpec) -> list[tuple[str, dict[str, str | None]]]:
    out: list[tuple[str, dict[str, str | None]]] = [("fixef", {"name": n}) for n in spec.fixef_names]
    for t in spec.terms:
        out += [("varcorr", {"grp": t.name, "var1": v1, "var2": v2}) for v1, v2 in t.covariance.component_names()]
    out.append(("varcorr", {"grp": "Residual", "var1": None, "var2": None}))
    return out + [("process", {"name": n}) for n in process_labels(spec)]
