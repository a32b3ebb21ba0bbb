"""Fitting from sufficient statistics: chunks in any order, merged in any order, and through Dask.

Three levels of agreement with the in-memory engine (``bayeslmm.lmm``):

1. the merged statistics give the same cross-product blocks as ``CrossProducts.from_spec``
   (to rounding, 1e-11 relative to each block's scale);
2. at the same theta every estimate (fixef, se, vcov, varcorr, loglik, BLUPs, conditional
   sds) agrees to 1e-8 relative;
3. end to end, each path runs its own optimisation: the criterion agrees to 1e-8 relative,
   the estimates to 1e-5, the precision the optimiser determines them to (BOBYQA stops when
   the criterion changes by < 1e-8; rounding differences of 1e-11 in the criterion steer its
   trajectory). With the rows in one chunk in their original order a single-term model is
   bit-for-bit the in-memory fit.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import DataError, FormulaError, LMMFit
from bayeslmm.linalg import CrossProducts
from bayeslmm.suff import DesignSchema, SuffStats, lmm_from_stats, suff_stats

DATA = Path(__file__).parent / "data"


def _simulated(seed: int = 3, n: int = 400) -> pd.DataFrame:
    """Random slopes in 25 groups, a crossed 6-level factor and a 3-level categorical fixed effect."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 25, n)
    h = rng.choice(list("uvwxyz"), n)
    x = rng.normal(size=n)
    f = rng.choice(["lo", "mid", "hi"], n)
    y = (
        1.0
        + 0.5 * x
        + 0.8 * (f == "hi")
        - 0.3 * (f == "lo")
        + rng.normal(size=25)[g]
        + 0.4 * rng.normal(size=25)[g] * x
        + 0.6 * rng.normal(size=6)[np.searchsorted(list("uvwxyz"), h)]
        + rng.normal(size=n)
    )
    return pd.DataFrame({"y": y, "x": x, "f": f, "g": g, "h": h})


CASES = {
    "pig": ("weight ~ num_weeks + (1 | id_num)", lambda: bayeslmm.datasets.load("pig_weights")),
    "sleep": ("Reaction ~ Days + (Days | Subject)", lambda: bayeslmm.datasets.load("sleepstudy")),
    "dyestuff": ("Yield ~ 1 + (1 | Batch)", lambda: bayeslmm.datasets.load("dyestuff")),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", lambda: pd.read_csv(DATA / "penicillin.csv")),
    "pastes": ("strength ~ 1 + (1 | batch/cask)", lambda: pd.read_csv(DATA / "pastes.csv")),
    "simulated": ("y ~ x + f + (1 + x | g) + (1 | h)", _simulated),
    "sleep_na": ("Reaction ~ Days + (1 | Subject)", lambda: pd.read_csv(DATA / "sleepstudy_na.csv")),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    formula, load = CASES[request.param]
    df = load()
    return request.param, formula, df, bayeslmm.lmm(formula, df)


def chunked(formula: str, df: pd.DataFrame, seed: int, nchunks: int = 5) -> SuffStats:
    """Shuffle the rows, cut them into random chunks, merge the chunks' statistics in a random tree."""
    rng = np.random.default_rng(seed)
    schema = DesignSchema.from_frame(formula, df)
    d = df.sample(frac=1.0, random_state=int(rng.integers(2**31)))
    cuts = np.sort(rng.choice(np.arange(1, len(d)), nchunks - 1, replace=False))
    edges = [0, *cuts.tolist(), len(d)]
    parts = [SuffStats.from_chunk(schema, d.iloc[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    order = rng.permutation(len(parts))
    parts = [parts[i] for i in order]
    while len(parts) > 1:
        i = int(rng.integers(len(parts) - 1))
        a, b = parts.pop(i), parts.pop(i)
        parts.insert(i, b + a if rng.random() < 0.5 else a + b)
    return parts[0]


def assert_blocks_equal(cp: CrossProducts, ref: CrossProducts, rtol: float = 1e-11) -> None:
    assert (cp.n, cp.p, cp.qs, cp.nlevels) == (ref.n, ref.p, ref.qs, ref.nlevels)
    for name in ("A11", "B1", "C", "D", "E", "F"):
        a, b = getattr(cp, name), getattr(ref, name)
        if b is None:
            assert a is None, name
            continue
        a = a.toarray() if hasattr(a, "toarray") else a
        b = b.toarray() if hasattr(b, "toarray") else b
        np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(np.abs(b).max(), 1.0), err_msg=name)


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) if a.size else 0.0


def assert_same_fit(fit: LMMFit, ref, rtol: float, rtol_crit: float = 1e-8) -> None:
    assert rel(fit.criterion, ref.criterion) < rtol_crit
    assert rel(fit.loglik, ref.loglik) < rtol_crit
    assert rel(fit.aic, ref.aic) < rtol_crit and rel(fit.bic, ref.bic) < rtol_crit
    assert list(fit.fixef.index) == list(ref.fixef.index)
    assert rel(fit.fixef, ref.fixef) < rtol
    assert rel(fit.se, ref.se) < rtol
    assert rel(fit.vcov, ref.vcov) < rtol
    vc, vr = fit.varcorr(), ref.varcorr()
    pd.testing.assert_frame_equal(vc[["grp", "var1", "var2"]], vr[["grp", "var1", "var2"]])
    assert rel(vc.vcov, vr.vcov) < rtol and rel(vc.sdcor, vr.sdcor) < rtol
    assert fit.sigma == pytest.approx(ref.sigma, rel=rtol)
    re, rr = fit.ranef(), ref.ranef()
    pd.testing.assert_frame_equal(re[["grpvar", "term", "grp"]], rr[["grpvar", "term", "grp"]])
    scale = np.abs(rr.condval).max()
    assert np.max(np.abs(re.condval - rr.condval)) < rtol * scale  # BLUPs near 0: relative to their scale
    assert rel(re.condsd, rr.condsd) < rtol
    assert fit.nobs == ref.nobs and fit.ngroups == ref.ngroups and fit.npar == ref.npar
    assert fit.spec.n_dropped == ref.spec.n_dropped


# ------------------------------------------------------------------ blocks and fits
def test_merged_blocks_equal_the_in_memory_blocks(case) -> None:
    name, formula, df, ref = case
    stats = chunked(formula, df, seed=1)
    cp, layout = stats.to_model()
    assert_blocks_equal(cp, ref.objective.blocks)
    assert layout.fixef_names == ref.spec.fixef_names
    for t, labels, counts in zip(ref.spec.terms, layout.labels, layout.counts):
        assert labels == t.levels
        np.testing.assert_array_equal(counts, t.counts())
    assert stats.n == ref.nobs and stats.n_dropped == ref.spec.n_dropped


def test_fit_at_the_same_theta_matches_to_1e_8(case) -> None:
    name, formula, df, ref = case
    for seed in (2, 3):
        fit = lmm_from_stats(chunked(formula, df, seed=seed, nchunks=3 + seed), theta=ref.theta)
        assert_same_fit(fit, ref, rtol=1e-8)
        assert not fit.converged and "theta was given" in fit.optimizer.messages[0]


def test_end_to_end_fit_matches_to_the_optimiser_precision(case) -> None:
    name, formula, df, ref = case
    fit = lmm_from_stats(chunked(formula, df, seed=4))
    assert fit.converged == ref.converged and fit.singular == ref.singular
    assert_same_fit(fit, ref, rtol=1e-5)
    assert fit.criterion <= ref.criterion + 1e-8 * abs(ref.criterion)  # not a worse optimum


@pytest.mark.parametrize("name", ["pig", "sleep", "dyestuff"])
def test_one_chunk_in_order_reproduces_the_single_term_fit_exactly(name) -> None:
    formula, load = CASES[name]
    df = load()
    ref = bayeslmm.lmm(formula, df)
    fit = lmm_from_stats(suff_stats(formula, df))
    assert_same_fit(fit, ref, rtol=1e-8)
    np.testing.assert_array_equal(fit.theta, ref.theta)


def test_ml_fit_matches() -> None:
    formula, load = CASES["simulated"]
    df = load()
    ref = bayeslmm.lmm(formula, df, method="ML")
    fit = lmm_from_stats(chunked(formula, df, seed=5), method="ML", theta=ref.theta)
    assert_same_fit(fit, ref, rtol=1e-8)
    assert fit.deviance == pytest.approx(ref.deviance, rel=1e-10) and fit.reml_criterion is None


def test_merge_is_associative_and_commutative() -> None:
    formula, load = CASES["simulated"]
    df = load()
    schema = DesignSchema.from_frame(formula, df)
    a, b, c = (SuffStats.from_chunk(schema, df.iloc[s]) for s in (slice(0, 90), slice(90, 250), slice(250, None)))
    ref, _ = SuffStats.merge([a, b, c]).to_model()
    for s in ((a + b) + c, a + (b + c), (c + a) + b, c + (b + a), sum([b, c, a])):
        assert_blocks_equal(s.to_model()[0], ref, rtol=1e-13)


def test_chunks_with_missing_levels_and_an_empty_chunk() -> None:
    """Chunks that hold a few levels each (rows sorted by level), one chunk of incomplete rows only."""
    formula = "y ~ x + f + (1 + x | g) + (1 | h)"
    df = _simulated().sort_values(["h", "g"])
    df = pd.concat(
        [df, pd.DataFrame({"y": [np.nan, 1.0], "x": [0.1, np.nan], "f": ["lo", "hi"], "g": [3, 4], "h": ["u", "v"]})],
        ignore_index=True,
    )
    ref = bayeslmm.lmm(formula, df)
    schema = DesignSchema.from_frame(formula, df)
    parts = [SuffStats.from_chunk(schema, df.iloc[i : min(i + 37, 400)]) for i in range(0, 400, 37)]
    parts.append(SuffStats.from_chunk(schema, df.iloc[400:]))  # no complete row
    assert parts[-1].n == 0 and parts[-1].n_dropped == 2
    assert max(len(p.terms[0].keys) for p in parts[:-1]) < 25  # each chunk lacks some groups
    assert max(len(p.terms[1].keys) for p in parts[:-1]) < 6
    stats = SuffStats.merge(parts[::-1])
    assert_blocks_equal(stats.to_model()[0], ref.objective.blocks)
    assert_same_fit(lmm_from_stats(stats, theta=ref.theta), ref, rtol=1e-8)


def test_categorical_levels_missing_from_a_chunk_keep_the_design() -> None:
    """A chunk without level 'hi' still builds the three-level design of the whole data."""
    formula = "y ~ x + f + (1 | g)"
    df = _simulated()
    schema = DesignSchema.from_frame(formula, df)
    assert schema.fixef_names == ("(Intercept)", "x", "f[T.lo]", "f[T.mid]")
    only_lo = df[df.f == "lo"]
    X = schema.prepare(only_lo).X
    assert X.shape == (len(only_lo), 4) and np.all(X[:, 3] == 0.0) and np.all(X[:, 2] == 1.0)
    st = SuffStats.from_chunk(schema, only_lo)
    assert st.F.shape == (5, 5) and st.n == len(only_lo)


def test_rank_deficient_columns_are_dropped_as_in_memory() -> None:
    df = _simulated()
    df["x2"] = 2.0 * df["x"]
    formula = "y ~ x + x2 + f + (1 | g)"
    with pytest.warns(UserWarning, match="dropping 1 column"):
        ref = bayeslmm.lmm(formula, df)
    with pytest.warns(UserWarning, match=r"rank deficient so dropping 1 column\(s\): x2"):
        fit = lmm_from_stats(chunked(formula, df, seed=6), theta=ref.theta)
    assert fit.spec.dropped_columns == ("x2",) == ref.spec.dropped_columns
    assert_same_fit(fit, ref, rtol=1e-8)


def test_numeric_grouping_levels_sort_by_value_and_interactions_by_factor() -> None:
    df = _simulated()
    df["g"] = df["g"] * 5  # labels 0, 5, ..., 120: sorted as numbers, not as text
    formula = "y ~ x + (1 | g:h)"
    ref = bayeslmm.lmm(formula, df)
    fit = lmm_from_stats(chunked(formula, df, seed=7), theta=ref.theta)
    assert fit.spec.terms[0].levels == ref.spec.terms[0].levels
    assert_same_fit(fit, ref, rtol=1e-8)


def _more_columns() -> pd.DataFrame:
    df = _simulated()
    return df.assign(
        yp=np.exp(df.y / 5),
        c=df.g % 4,
        fc=pd.Categorical(df.f, categories=["mid", "lo", "hi", "never"]),
        gc=pd.Categorical(df.g.astype(str)),
    )


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (1 + x || g)",  # two terms on one factor: g and g.1
        "log(yp) ~ x * f + (1 | g)",  # a transformed response, an interaction with a categorical
        "y ~ C(c) + I(x**2) + (0 + x | g) + (1 | g)",  # a numeric column coded as categorical
        "y ~ 0 + f + (1 | h:g)",  # no intercept, an interaction grouping factor
        "y ~ x + fc + (1 | gc)",  # pandas categoricals: category order, an unused category (dropped as aliased)
    ],
)
def test_more_formulas(formula) -> None:
    df = _more_columns()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the aliased unused category
        ref = bayeslmm.lmm(formula, df)
        fit = lmm_from_stats(chunked(formula, df, seed=10), theta=ref.theta)
    assert [t.name for t in fit.spec.terms] == [t.name for t in ref.spec.terms]
    assert_same_fit(fit, ref, rtol=1e-8)


def test_polars_input() -> None:
    pl = pytest.importorskip("polars")
    df = _simulated()
    ref = bayeslmm.lmm("y ~ x + f + (1 | g)", df)
    fit = lmm_from_stats(suff_stats("y ~ x + f + (1 | g)", pl.from_pandas(df), chunk_rows=77), theta=ref.theta)
    assert_same_fit(fit, ref, rtol=1e-8)


def test_user_supplied_levels_skip_the_first_pass() -> None:
    formula = "y ~ x + f + (1 | g)"
    df = _simulated()
    schema = DesignSchema.from_levels(formula, dict(df.dtypes), {"f": ["mid", "hi", "lo"]})
    assert schema.fixef_names == DesignSchema.from_frame(formula, df).fixef_names
    with pytest.raises(DataError, match="levels of 'f' are unknown|its levels are unknown"):
        DesignSchema.from_levels(formula, dict(df.dtypes), {})
    short = DesignSchema.from_levels(formula, dict(df.dtypes), {"f": ["lo", "mid"]})
    with pytest.raises(DataError, match=r"column 'f' has level\(s\) hi not among the levels"):
        SuffStats.from_chunk(short, df)


def test_results_api_without_rows() -> None:
    formula, load = CASES["sleep"]
    df = load()
    ref = bayeslmm.lmm(formula, df)
    fit = lmm_from_stats(suff_stats(formula, df, chunk_rows=50))
    text = str(fit.summary())
    assert "Scaled residuals: not computed" in text and "Subject" in text and "Days" in text
    d = fit.to_dict()
    assert d["nobs"] == 180 and d["fixef"].keys() == ref.to_dict()["fixef"].keys()
    np.testing.assert_allclose(fit.predict(df.head(20)), ref.predict(df.head(20)), rtol=1e-5)
    wald = fit.confint(method="wald")
    assert wald.shape[0] >= 2
    fr = fit.fitted_frame(df)
    np.testing.assert_allclose(fr.fitted, ref.fitted, rtol=1e-5)
    np.testing.assert_allclose(fr.residual, df.Reaction - fr.fitted, rtol=1e-12)
    for call in (
        lambda: fit.fitted,
        lambda: fit.residuals(),
        lambda: fit.simulate(),
        lambda: fit.predict(),
        lambda: fit.refit(df.Reaction.to_numpy()),
        lambda: fit.confint(method="profile"),
        lambda: fit.shrinkage(),
    ):
        with pytest.raises(DataError, match="sufficient statistics and holds no rows"):
            call()


# ----------------------------------------------------------------------- errors
def test_bad_input_errors() -> None:
    df = _simulated()
    with pytest.raises(FormulaError, match=r"scale\(\) learns its transform from all the rows"):
        suff_stats("y ~ scale(x) + (1 | g)", df)
    with pytest.raises(FormulaError, match=r"codes an expression as categorical"):
        suff_stats("y ~ C(np.round(x)) + (1 | g)", df)
    with pytest.raises(DataError, match="column 'nope' not found"):
        suff_stats("y ~ nope + (1 | g)", df)
    with pytest.raises(DataError, match="no random-effect term"):
        lmm_from_stats(suff_stats("y ~ x", df))
    with pytest.raises(DataError, match="has 1 level"):
        lmm_from_stats(suff_stats("y ~ x + (1 | k)", df.assign(k="one")))
    with pytest.raises(DataError, match="no row is complete"):
        lmm_from_stats(suff_stats("y ~ x + (1 | g)", df.assign(y=np.nan)))
    with pytest.raises(DataError, match="infinite value"):
        suff_stats("y ~ x + (1 | g)", df.assign(x=np.inf))
    with pytest.raises(DataError, match="chunk_rows must be a positive"):
        suff_stats("y ~ x + (1 | g)", df, chunk_rows=0)
    a = suff_stats("y ~ x + (1 | g)", df)
    b = suff_stats("y ~ x + f + (1 | g)", df)
    with pytest.raises(DataError, match="different schemas"):
        a + b
    with pytest.raises(DataError, match="nothing to merge"):
        SuffStats.merge([])
    with pytest.raises(DataError, match="must be a bayeslmm.suff.SuffStats"):
        lmm_from_stats(df)
    with pytest.raises(DataError, match="theta must have 1 values"):
        lmm_from_stats(a, theta=[1.0, 2.0])
    text = df.assign(g=df.g.astype(str))
    with pytest.raises(DataError, match="holds numbers in some chunks and text"):
        schema_num = DesignSchema.from_frame("y ~ x + (1 | g)", df)
        schema_txt = DesignSchema.from_levels("y ~ x + (1 | g)", dict(df.dtypes), {}).with_centres(df)
        SuffStats.from_chunk(schema_num, df) + SuffStats.from_chunk(schema_txt, text)


def test_importing_bayeslmm_does_not_import_dask() -> None:
    code = (
        "import bayeslmm, sys; bayeslmm.suff.lmm_from_stats; "
        "print(sorted(m for m in ('dask', 'distributed', 'pymc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # bayeslmm.suff is reachable from the package without an import of its own


def test_missing_dask_says_how_to_install(monkeypatch) -> None:
    from bayeslmm.suff import lmm_dask

    for mod in ("dask", "dask.dataframe"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r"pip install 'bayeslmm\[dask\]'"):
        lmm_dask("y ~ x + (1 | g)", _simulated())


# ------------------------------------------------------------------------- Dask
dd = pytest.importorskip("dask.dataframe")


def _dask_frame(df: pd.DataFrame, seed: int, npartitions: int = 6):
    return dd.from_pandas(df.sample(frac=1.0, random_state=seed), npartitions=npartitions, sort=False)


@pytest.mark.parametrize("name", ["sleep", "penicillin", "pastes", "simulated", "sleep_na"])
def test_dask_local_scheduler(name) -> None:
    from bayeslmm.suff import lmm_dask

    formula, load = CASES[name]
    df = load()
    ref = bayeslmm.lmm(formula, df)
    ddf = _dask_frame(df, seed=8)
    fit = lmm_dask(formula, ddf, split_every=2)
    assert_same_fit(fit, ref, rtol=1e-5)
    assert fit.timings["npartitions"] == ddf.npartitions
    at_theta = lmm_from_stats(_stats_dask(formula, ddf), theta=ref.theta)
    assert_same_fit(at_theta, ref, rtol=1e-8)


def _stats_dask(formula, ddf, **kw):
    from bayeslmm.suff import suff_stats_dask

    return suff_stats_dask(formula, ddf, split_every=3, **kw)


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # dask's Parquet reader on pandas 3.1
def test_dask_from_parquet_with_fitted_values(tmp_path) -> None:
    from bayeslmm.suff import lmm_dask

    formula, load = CASES["simulated"]
    df = load()
    ref = bayeslmm.lmm(formula, df)
    for i, part in enumerate(np.array_split(np.arange(len(df)), 4)):
        df.iloc[part].to_parquet(tmp_path / f"part{i}.parquet", index=False)
    fit, fv = lmm_dask(formula, str(tmp_path), fitted=True)
    assert_same_fit(fit, ref, rtol=1e-5)
    out = fv.compute()
    assert list(out.columns) == ["fitted", "residual"] and len(out) == len(df)
    np.testing.assert_allclose(out.fitted.to_numpy(), ref.fitted, rtol=1e-5)
    np.testing.assert_allclose(out.residual.to_numpy(), df.y.to_numpy() - out.fitted.to_numpy(), rtol=1e-12)
    glob = lmm_dask(formula, str(tmp_path / "part*.parquet"))
    assert glob.criterion == pytest.approx(fit.criterion, rel=1e-12)
    with pytest.raises(DataError, match="no such Parquet file or directory"):
        lmm_dask(formula, str(tmp_path / "missing"))


def test_dask_fitted_values_of_incomplete_rows_are_nan() -> None:
    from bayeslmm.suff import lmm_dask

    formula, load = CASES["sleep_na"]
    df = load()
    ref = bayeslmm.lmm(formula, df)
    fit, fv = lmm_dask(formula, dd.from_pandas(df, npartitions=4), fitted=True)
    out = fv.compute()
    complete = df[["Reaction", "Days", "Subject"]].notna().all(axis=1).to_numpy()
    assert out.fitted.isna().to_numpy().tolist() == (~complete).tolist()
    np.testing.assert_allclose(out.fitted.to_numpy()[complete], ref.fitted, rtol=1e-5)


def test_dask_distributed_local_cluster() -> None:
    distributed = pytest.importorskip("distributed")
    from bayeslmm.suff import lmm_dask

    formula, load = CASES["simulated"]
    df = load()
    ref = bayeslmm.lmm(formula, df)
    ddf = _dask_frame(df, seed=9, npartitions=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # distributed's start-up notices (ports, dashboard)
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            fit, fv = lmm_dask(formula, ddf, client=client, fitted=True)
            out = fv.compute()
            at_theta = lmm_from_stats(_stats_dask(formula, ddf, client=client), theta=ref.theta)
    assert_same_fit(fit, ref, rtol=1e-5)
    assert_same_fit(at_theta, ref, rtol=1e-8)
    np.testing.assert_allclose(out.sort_index().fitted.to_numpy(), ref.fitted, rtol=1e-5)
