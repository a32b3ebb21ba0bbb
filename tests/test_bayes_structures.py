"""The PyMC densities and the exact post-sampling draws of every covariance structure equal dense formulas.

For random parameter values: ``marginal`` is ``log N(y; X beta, V)`` with the dense ``n x n``
``V = Z D Z' + R``, ``restricted`` is ``log N(y; 0, V + tau X X')``, the ``conditional`` serial
model is ``log N(y; X beta + Z b, R)``; the NumPy pieces used after sampling give the dense
``X'V^-1 X``, ``X'V^-1 y``, per-block log-likelihoods that add up to the dense density, and draws
of ``b`` whose mean and covariance are ``D Z'V^-1 (y - X beta)`` and ``D - D Z'V^-1 Z D``.
No sampling; the graphs are evaluated in PyTensor's FAST_COMPILE mode.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import bayeslmm
from bayeslmm.bayes import build_model
from bayeslmm.bayes._sample import _D_blocks, _res_draws
from bayeslmm.bayes._structure import DenseGroupStructure, FullStructure, GroupStructure, psd_sqrt, structure_for
from bayeslmm.linalg import term_matrix

from .conftest import random_frame

CASES = [
    ("y ~ x + (1 | a)", None, GroupStructure),  # q = 1: the elementwise path
    ("y ~ x + (x | a)", None, GroupStructure),  # q = 2: the elementwise path
    ("y ~ x + (1 | a) + (0 + x | a)", None, GroupStructure),  # q = 2, block-diagonal L
    ("y ~ x + (x + f | a)", None, GroupStructure),  # q = 4: batched Cholesky factors
    ("y ~ x + (1 | a) + (1 | b)", None, FullStructure),
    ("y ~ x + (1 | a/c)", None, FullStructure),
    ("y ~ x + (1 | a)", "ou(t | a)", DenseGroupStructure),
    ("y ~ x + (x | a)", "ar1(t | a)", DenseGroupStructure),
    ("y ~ x", "ou(t | a)", DenseGroupStructure),
]


@pytest.fixture(scope="module")
def data():
    df = random_frame(5, 90)
    rng = np.random.default_rng(7)
    df["t"] = rng.choice([0.0, 0.5, 1.3, 2.0, 3.7, 5.1], len(df))  # repeated times within groups too
    return df


def _dense(spec, vc, proc):
    """Dense ``Z``, ``D`` and ``R`` at the parameter values ``vc`` (varcorr) and ``proc`` (process)."""
    Z = np.hstack([term_matrix(t).toarray() for t in spec.terms]) if spec.terms else np.zeros((spec.n, 0))
    Ds = [Dk[0] for Dk in _D_blocks(spec, vc[None])]
    D = (
        scipy.linalg.block_diag(*[np.kron(np.eye(t.nlevels), Dk) for t, Dk in zip(spec.terms, Ds)])
        if spec.terms
        else np.zeros((0, 0))
    )
    s2 = vc[-1]
    res = spec.residual
    if res is None:
        R = s2 * np.eye(spec.n)
    else:
        same = res.codes[:, None] == res.codes[None, :]
        if res.kind == "ou":
            R = same * proc[0] * proc[1] ** np.abs(res.t[:, None] - res.t[None, :]) + s2 * np.eye(spec.n)
        else:
            order = np.lexsort((np.arange(spec.n), res.t, res.codes))
            pos = np.empty(spec.n)
            for g in np.unique(res.codes):
                rows = order[res.codes[order] == g]
                pos[rows] = np.arange(rows.size)
            R = same * s2 * proc[0] ** np.abs(pos[:, None] - pos[None, :])
    return Z, D, R


def _point(m, seed):
    """A random point of the model's value variables and the parameters there."""
    import pytensor

    rng = np.random.default_rng(seed)
    ip = {k: v + rng.normal(scale=0.4, size=np.shape(v)) for k, v in m.initial_point().items()}
    if "beta" in ip:
        ip["beta"] = rng.normal(size=ip["beta"].shape)
    names = [n for n in ("varcorr", "process", "beta") if n in m.named_vars]
    names += [n for n in m.named_vars if n.startswith("b_")]
    outs = m.replace_rvs_by_values([m[n] for n in names] + [m.potentials[0]])
    f = pytensor.function(m.value_vars, outs, on_unused_input="ignore", mode="FAST_COMPILE")
    vals = f(*[ip[v.name] for v in m.value_vars])
    return dict(zip([*names, "potential"], vals))


# serial structures run with blocks of exactly equal size (12 size classes) and padded into two
WITH_BUCKETS = [
    pytest.param(*c, nb, id=f"{c[0]}|{c[1]}|{'padded' if nb == 2 else 'exact-sizes'}")
    for c in CASES
    for nb in ((12, 2) if c[1] else (12,))
]


@pytest.fixture
def buckets(request, monkeypatch):
    """Serial blocks in groups of exactly equal size, or padded into two size classes."""
    import bayeslmm.bayes._structure as s

    monkeypatch.setattr(s, "MAX_BUCKETS", request.param)
    return request.param


@pytest.mark.parametrize("formula,residual,cls,buckets", WITH_BUCKETS, indirect=["buckets"])
def test_marginal_and_restricted_potentials_equal_dense_densities(data, formula, residual, cls, buckets) -> None:
    spec = bayeslmm.model_spec(formula, data, residual=residual)
    assert isinstance(structure_for(spec), cls)
    if cls is DenseGroupStructure:
        sizes = np.unique(np.bincount(spec.residual.codes))
        assert len(structure_for(spec).buckets) == (2 if buckets == 2 else sizes.size) and sizes.size > 2
    tau = 7.0
    for param in ("marginal", "restricted"):
        m = build_model(spec, param=param, beta_prior_var=tau)
        pt = _point(m, seed=hash((formula, param)) % 1000)
        Z, D, R = _dense(spec, pt["varcorr"], pt.get("process"))
        V = Z @ D @ Z.T + R
        if param == "marginal":
            ref = scipy.stats.multivariate_normal(spec.X @ pt["beta"], V).logpdf(spec.y)
        else:
            ref = scipy.stats.multivariate_normal(np.zeros(spec.n), V + tau * spec.X @ spec.X.T).logpdf(spec.y)
        assert pt["potential"] == pytest.approx(ref, rel=1e-10, abs=1e-8), param


@pytest.mark.parametrize(
    "formula,residual,buckets", [(*c[:2], nb) for c in CASES if c[1] for nb in (12, 2)], indirect=["buckets"]
)
def test_conditional_serial_potential_equals_dense(data, formula, residual, buckets) -> None:
    spec = bayeslmm.model_spec(formula, data, residual=residual)
    assert len(structure_for(spec).buckets) <= buckets
    m = build_model(spec, param="conditional")
    pt = _point(m, seed=3)
    Z, D, R = _dense(spec, pt["varcorr"], pt.get("process"))
    mu = spec.X @ pt["beta"]
    off = 0
    for t in spec.terms:
        mu = mu + Z[:, off : off + t.ncols] @ pt[f"b_{t.name}"].ravel()
        off += t.ncols
    assert pt["potential"] == pytest.approx(scipy.stats.multivariate_normal(mu, R).logpdf(spec.y), rel=1e-10)


@pytest.mark.parametrize("formula,residual,cls,buckets", WITH_BUCKETS, indirect=["buckets"])
def test_post_sampling_pieces_equal_dense_formulas(data, formula, residual, cls, buckets) -> None:
    spec = bayeslmm.model_spec(formula, data, residual=residual)
    m = build_model(spec, param="marginal")
    pt = _point(m, seed=11)
    vc, beta = pt["varcorr"], pt["beta"]
    Z, D, R = _dense(spec, vc, pt.get("process"))
    V = Z @ D @ Z.T + R
    Vi = np.linalg.inv(V)
    struct = structure_for(spec)
    group = {"varcorr": _Arr(vc[None, None])}
    if "process" in pt:
        group["process"] = _Arr(pt["process"][None, None])
    res = {k: float(v[0]) for k, v in _res_draws(spec, group, 1).items()}
    st = struct.np_state([psd_sqrt(Dk[0]) for Dk in _D_blocks(spec, vc[None])], res)
    A, bv = struct.np_gls(st)
    np.testing.assert_allclose(A, spec.X.T @ Vi @ spec.X, rtol=1e-9)
    np.testing.assert_allclose(bv, spec.X.T @ Vi @ spec.y, rtol=1e-9)
    ll = struct.np_loglik(st, beta)
    total = scipy.stats.multivariate_normal(spec.X @ beta, V).logpdf(spec.y)
    if cls is FullStructure and len({t.factors for t in spec.terms}) == 2 and "/" not in formula:
        assert ll is None  # crossed: the density does not factorise
    else:
        assert ll.sum() == pytest.approx(total, rel=1e-10)
    if not spec.terms:
        return
    rng = np.random.default_rng(0)
    K = 3000
    draws = np.array([np.concatenate([b.ravel() for b in struct.np_draw_b(st, beta, rng)]) for _ in range(K)])
    mean = D @ Z.T @ Vi @ (spec.y - spec.X @ beta)
    cov = D - D @ Z.T @ Vi @ Z @ D
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    assert np.all(np.abs(draws.mean(0) - mean) <= 4.5 * sd / np.sqrt(K) + 1e-9)
    emp = np.cov(draws.T)
    assert np.max(np.abs(emp - cov)) <= 0.15 * np.max(np.abs(cov))


class _Arr:
    """The ``.values`` of a posterior variable, for ``_res_draws``."""

    def __init__(self, a: np.ndarray) -> None:
        self.values = a


def test_priors_can_be_replaced_and_are_checked(data) -> None:
    spec = bayeslmm.model_spec("y ~ x + (1 | a)", data, residual="ou(t | a)")
    m = build_model(
        spec,
        param="marginal",
        priors={"sigma": "HalfStudentT(nu=3, sigma=2)", "rho": ("Beta", {"alpha": 2, "beta": 2})},
    )
    assert type(m["sigma"].owner.op).__name__.startswith("HalfStudentT")
    assert "Beta" in type(m["rho"].owner.op).__name__
    with pytest.raises(bayeslmm.OptionError, match="must put its mass on"):
        build_model(spec, priors={"rho": "HalfNormal(sigma=1)"})
    with pytest.raises(bayeslmm.OptionError, match="no parameter 'phi'"):
        build_model(spec, priors={"phi": "Uniform(lower=-1, upper=1)"})
    with pytest.raises(bayeslmm.OptionError, match="not available"):
        build_model(spec, priors={"sigma": "Normal(mu=0, sigma=1)"})
    with pytest.raises(bayeslmm.OptionError, match="not understood"):
        build_model(spec, priors={"sigma": "__import__('os').system('true')"})
    with pytest.raises(bayeslmm.OptionError, match="no parameter"):
        build_model(spec, priors={"sd_b": "HalfNormal(sigma=1)"})


def test_structure_limits_and_mismatches(data) -> None:
    spec = bayeslmm.model_spec("y ~ x + (1 | b)", data, residual="ou(t | a)")
    with pytest.raises(bayeslmm.OptionError, match="own grouping factor"):
        build_model(spec, param="marginal")
    with pytest.raises(bayeslmm.OptionError, match="unknown sampler"):
        bayeslmm.bayes.sample(bayeslmm.model_spec("y ~ x + (1 | a)", data), sampler="gibbs")
