"""The residual structures by visit, spatial, with variance functions and strata: the engine's criterion
against a dense N x N formula written independently of the structure classes, the analytic gradient
against central differences, equivalences between structures, and invariances of the fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.freq._fit import make_engine
from bayeslmm.spec import build_spec

VISITS = ("V1", "V2", "V3", "V4")


def trial(seed: int = 3, n_sub: int = 36) -> pd.DataFrame:
    """A small simulated trial: 4 visits, 2 arms, dropout, a covariate, and coordinates per row."""
    rng = np.random.default_rng(seed)
    sd = np.array([1.0, 1.3, 1.6, 2.0])
    corr = np.array([[1, 0.6, 0.4, 0.3], [0.6, 1, 0.6, 0.4], [0.4, 0.6, 1, 0.6], [0.3, 0.4, 0.6, 1.0]])
    L = np.linalg.cholesky(corr * np.outer(sd, sd))
    rows = []
    for i in range(n_sub):
        arm = "active" if i % 2 else "placebo"
        base = rng.normal()
        e = L @ rng.standard_normal(4)
        last = 4 if rng.random() < 0.7 else int(rng.integers(2, 4))
        for v in range(last):
            rows.append((f"s{i:02d}", arm, VISITS[v], 2.0 * v, base, 10 + 0.5 * v + 0.8 * base + e[v]))
    d = pd.DataFrame(rows, columns=["id", "arm", "visit", "week", "base", "y"])
    d["x"] = rng.uniform(0, 10, len(d))
    d["z"] = rng.uniform(0, 10, len(d))
    return d.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def field(seed: int = 4, n: int = 120) -> pd.DataFrame:
    """A field with exponential spatial correlation (range 2, nugget share 0.2) and a covariate."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, (n, 2))
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    R = 4.0 * (0.8 * np.exp(-d / 2.0) + 0.2 * np.eye(n))
    base = rng.normal(size=n)
    y = 5 + 0.7 * base + np.linalg.cholesky(R) @ rng.standard_normal(n)
    return pd.DataFrame({"x": xy[:, 0], "z": xy[:, 1], "base": base, "y": y, "id": "one", "visit": "V1"})


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return trial()


FORMULA = "y ~ arm * visit + base"

# (residual, variance, formula) cases; the formula's random effects must be on the structure's group
CASES = [
    ("us(visit | id)", None, FORMULA),
    ("cs(visit | id)", None, FORMULA),
    ("csh(visit | id)", None, FORMULA),
    ("ar1h(visit | id)", None, FORMULA),
    ("toep(visit | id)", None, FORMULA),
    ("toeph(visit | id)", None, FORMULA),
    ("diag(visit | id)", None, FORMULA),
    ("us(visit | arm/id)", None, FORMULA),
    ("exp(x + z | 1)", None, "y ~ base"),
    ("gau(x + z | id)", None, "y ~ base"),
    ("sph(x + z | 1, nugget=false)", None, "y ~ base"),
    ("ar1h(visit | id)", "power(week1)", FORMULA),
    ("csh(visit | id)", "exp(base)", FORMULA),
    (None, "ident(visit)", FORMULA),
    (None, "ident(visit)", FORMULA + " + (1 | id)"),
    ("ar1(week | id)", "ident(arm)", FORMULA + " + (1 | id)"),
    ("exp(week | id)", None, FORMULA + " + (1 + week | id)"),
]
IDS = [f"{r}-{v}-{'re' if '|' in f else 'gls'}" for r, v, f in CASES]


def reference_R(res, spec, nat: dict[str, float]) -> np.ndarray:
    """``(n, n)`` block-diagonal ``R`` written from the definitions (SAS/nlme), not from the classes."""
    d = res.spec
    kind = d.kind
    n = spec.n
    R = np.zeros((n, n))
    same = res.codes[:, None] == res.codes[None, :]
    eye = np.eye(n)
    if kind in ("us", "cs", "csh", "ar1h", "toep", "toeph", "diag"):
        v = res.feats.get("visit", res.t).astype(int)  # cs reads its factor's codes as "t"
        labels = res.labels["visit"]
        m = len(labels)

        def var(j: int, nat: dict[str, float]) -> float:
            return nat["sigma2"] if j == 0 else nat.get(f"var({labels[j]})", nat["sigma2"])

        def block(nat: dict[str, float]) -> np.ndarray:
            S = np.zeros((m, m))
            for j in range(m):
                for k in range(m):
                    sj, sk = np.sqrt(var(j, nat)), np.sqrt(var(k, nat))
                    lag = abs(j - k)
                    if j == k:
                        c = 1.0
                    elif kind in ("cs", "csh"):
                        c = nat["rho"]
                    elif kind == "ar1h":
                        c = nat["rho"] ** lag
                    elif kind in ("toep", "toeph"):
                        c = nat[f"rho(lag {lag})"]
                    elif kind == "diag":
                        c = 0.0
                    else:  # us: the covariance itself
                        a, b = sorted((j, k))
                        S[j, k] = nat[f"cov({labels[a]},{labels[b]})"]
                        continue
                    S[j, k] = sj * sk * c
            return S

        if d.strata:
            st = res.feats["stratum"].astype(int)
            strata = res.labels["stratum"]
            for a, lab in enumerate(strata):
                sub = {k[: -len(f" [{lab}]")]: x for k, x in nat.items() if k.endswith(f" [{lab}]")}
                sub["sigma2"] = nat["sigma2"] if a == 0 else nat[f"sigma2 [{lab}]"]
                S = block(sub)
                rows = st == a
                R += np.where(rows[:, None] & rows[None, :] & same, S[v[:, None], v[None, :]], 0.0)
        else:
            S = block(nat)
            R = np.where(same, S[v[:, None], v[None, :]], 0.0)
    elif kind in ("exp", "gau", "sph"):
        c = res.feats["coords"]
        dist = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
        u = dist / nat["range"]
        corr = {"exp": np.exp(-u), "gau": np.exp(-(u**2)), "sph": np.where(u < 1, 1 - 1.5 * u + 0.5 * u**3, 0.0)}[kind]
        nug = nat.get("nugget", 0.0)
        R = np.where(same, nat["sigma2"] * ((1 - nug) * corr * (1 - eye) + eye), 0.0)
    elif kind == "ar1":
        t = res.t
        order = np.lexsort((np.arange(n), t, res.codes))
        pos = np.empty(n)
        for g in np.unique(res.codes):
            rows = order[res.codes[order] == g]
            pos[rows] = np.arange(rows.size)
        R = np.where(same, nat["sigma2"] * nat["phi"] ** np.abs(pos[:, None] - pos[None, :]), 0.0)
    elif kind == "iid":
        R = nat["sigma2"] * eye
    else:
        raise AssertionError(kind)
    vf = d.variance
    if vf is not None:
        x = res.feats["vf"]
        if vf.kind == "ident":
            labs = res.labels["vf"]
            w = np.array([1.0] + [nat[f"ratio({lab})"] for lab in labs[1:]])[x.astype(int)]
        elif vf.kind == "power":
            w = np.abs(x) ** nat["delta"]
        else:
            w = np.exp(nat["delta"] * x)
        R = R * np.outer(w, w)
    return R


def dense_criterion(spec, V: np.ndarray, reml: bool) -> float:
    """Minus twice the profiled (restricted) log-likelihood with ``V = s^2 V``, ``s^2`` profiled."""
    X, y = spec.X, spec.y
    n, p = X.shape
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    k = n - p if reml else n
    s2 = float(r @ Vi @ r) / k
    out = np.linalg.slogdet(s2 * V)[1] + k + k * np.log(2 * np.pi)
    if reml:
        out += np.linalg.slogdet(X.T @ Vi @ X / s2)[1]
    return float(out)


def _frame(data: pd.DataFrame) -> pd.DataFrame:
    return data.assign(week1=data.week + 1.0)


@pytest.mark.parametrize(("residual", "variance", "formula"), CASES, ids=IDS)
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_criterion_and_gradient_against_dense_formulas(data, residual, variance, formula, method) -> None:
    spec = build_spec(formula, _frame(data), residual=residual, variance=variance)
    eng = make_engine(spec, method)
    rng = np.random.default_rng(7)
    lo, hi = eng.bounds()
    for start in eng.start_candidates()[:2]:
        psi = np.clip(start + 0.1 * rng.standard_normal(start.size), np.maximum(lo, -5), np.minimum(hi, 5))
        res = spec.residual
        nat = res.structure.natural(eng.split(psi)[1], 1.0)
        V = reference_R(res, spec, nat)
        D = eng.D_rel(psi)
        if D is not None:
            V = V + eng.Z @ D @ eng.Z.T * (res.codes[:, None] == res.codes[None, :])
        assert eng(psi) == pytest.approx(dense_criterion(spec, V, method == "REML"), rel=1e-10, abs=1e-8)
        fg = eng.working_gradient
        assert fg is not None
        f, g = fg(psi)
        assert f == pytest.approx(eng.working(psi), rel=1e-12, abs=1e-9)
        h = 1e-6
        num = np.array([(eng.working(psi + e) - eng.working(psi - e)) / (2 * h) for e in h * np.eye(psi.size)])
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(num).max()))


@pytest.fixture(scope="module")
def fits(data) -> dict[str, bayeslmm.LMMFit]:
    d = _frame(data)
    out = {}
    for name, (res, var) in {
        "us": ("us(visit | id)", None),
        "cs": ("cs(visit | id)", None),
        "csh": ("csh(visit | id)", None),
        "cs+ident": ("cs(visit | id)", "ident(visit)"),
        "diag": ("diag(visit | id)", None),
        "iid+ident": (None, "ident(visit)"),
        "toeph": ("toeph(visit | id)", None),
    }.items():
        out[name] = bayeslmm.lmm(FORMULA, d, residual=res, variance=var)
    out["exp"] = bayeslmm.lmm("y ~ base", field(), residual="exp(x + z | 1)")
    return out


def test_every_fit_converges(fits) -> None:
    for name, f in fits.items():
        assert f.converged, (name, f.optimizer.messages)


def test_equivalent_structures_give_one_likelihood(fits) -> None:
    """csh is cs with a variance per visit; diag is independent errors with a variance per visit."""
    assert fits["csh"].loglik == pytest.approx(fits["cs+ident"].loglik, abs=1e-6)
    assert fits["diag"].loglik == pytest.approx(fits["iid+ident"].loglik, abs=1e-6)
    for a, b in (("csh", "cs+ident"), ("diag", "iid+ident")):
        np.testing.assert_allclose(fits[a].fixef, fits[b].fixef, rtol=1e-5, atol=1e-7)


def test_nested_structures_order_the_likelihoods(fits) -> None:
    """cs is inside csh inside us; toeph is inside us: the larger model's maximum is at least as high."""
    assert fits["cs"].loglik <= fits["csh"].loglik + 1e-8
    assert fits["csh"].loglik <= fits["us"].loglik + 1e-8
    assert fits["toeph"].loglik <= fits["us"].loglik + 1e-8
    assert fits["diag"].loglik <= fits["csh"].loglik + 1e-8


def test_spatial_estimates_near_the_simulated_field(fits) -> None:
    rp = fits["exp"].residual_params()
    assert 0.5 < rp["range"] < 8.0 and 0.0 <= rp["nugget"] < 0.6 and 1.0 < rp["sill"] < 10.0


def test_us_with_two_visits_is_toeph(data) -> None:
    d = data[data.visit.isin(["V1", "V2"])]
    a = bayeslmm.lmm("y ~ arm + base", d, residual="us(visit | id)")
    b = bayeslmm.lmm("y ~ arm + base", d, residual="toeph(visit | id)")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-6)


def test_one_stratum_is_the_plain_structure(data) -> None:
    d = data.assign(one="all")
    a = bayeslmm.lmm(FORMULA, d, residual="us(visit | one/id)")
    b = bayeslmm.lmm(FORMULA, d, residual="us(visit | id)")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-6)


def test_us_estimate_is_the_empirical_covariance_for_complete_balanced_data() -> None:
    """With every subject at every visit and a saturated mean per visit, the ML estimate of an
    unstructured covariance is the sample covariance of the residuals (divided by n)."""
    rng = np.random.default_rng(11)
    n, m = 60, 3
    S = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, 0.7], [0.2, 0.7, 1.5]])
    Y = rng.standard_normal((n, m)) @ np.linalg.cholesky(S).T + np.array([1.0, 2.0, 3.0])
    d = pd.DataFrame({"id": np.repeat(np.arange(n), m), "visit": np.tile(["a", "b", "c"], n), "y": Y.ravel()})
    f = bayeslmm.lmm("y ~ 0 + visit", d, residual="us(visit | id)", method="ML")
    E = Y - Y.mean(axis=0)
    nat = f.spec.residual.structure.natural(f.objective.split(f.psi)[1], f.scale2)
    got = f.spec.residual.structure.sigma(nat)
    np.testing.assert_allclose(got, E.T @ E / n, rtol=1e-6)


@pytest.mark.parametrize(("residual", "formula"), [("us(visit | id)", FORMULA), ("exp(x + z | 1)", "y ~ base")])
def test_invariances(data, residual, formula) -> None:
    """Permuting rows, relabelling subjects, shifting the response and the coordinates by a large constant,
    and changing units leave the fit as it was (scaled where the units scale it)."""
    if residual.startswith("exp"):
        data = field()
    ref = bayeslmm.lmm(formula, data, residual=residual)
    assert ref.converged
    perm = data.sample(frac=1.0, random_state=5).reset_index(drop=True)
    relab = data.assign(id="p" + data["id"].str[::-1])
    shifted = data.assign(y=data.y + 1e6, x=data.x + 1e6, z=data.z - 5e5)
    scaled = data.assign(y=data.y * 1000.0, x=data.x * 0.01, z=data.z * 0.01)
    k = ref.nobs - len(ref.fixef)  # REML: the likelihood of n - p error contrasts
    for other, dll in ((perm, 0.0), (relab, 0.0), (shifted, 0.0), (scaled, -k * np.log(1000.0))):
        f = bayeslmm.lmm(formula, other, residual=residual)
        assert f.loglik == pytest.approx(ref.loglik + dll, abs=1e-5), residual
    rp, rs = ref.residual_params(), bayeslmm.lmm(formula, scaled, residual=residual).residual_params()
    if "range" in rp:
        assert rs["range"] == pytest.approx(0.01 * rp["range"], rel=1e-4)
        assert rs["sill"] == pytest.approx(1e6 * rp["sill"], rel=1e-4)
    else:
        assert rs["sigma2"] == pytest.approx(1e6 * rp["sigma2"], rel=1e-4)
