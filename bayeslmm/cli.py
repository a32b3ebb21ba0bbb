"""The command line: a thin layer over the public API.

User errors print one line (``bayeslmm: error: ...``) and exit with status 2; Ctrl-C prints
``bayeslmm: interrupted`` and exits with status 130 (:mod:`bayeslmm._interrupt`). Output paths are
checked before the work, and results are printed before files are written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from typing import Any, NoReturn

EXIT_USER_ERROR = 2
#: exit status when stdout's reader has gone (``| head``): 128 + SIGPIPE, as a shell reports it
EXIT_BROKEN_PIPE = 141
#: seconds ``fit --scheduler ADDRESS`` waits to reach a distributed scheduler
SCHEDULER_TIMEOUT_S = 5.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, status 2 (argparse's own usage dump is noise)
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


#: what was read last (:class:`bayeslmm._io.ReadInfo`): names the tokens read as missing in the dropped-rows note
_LAST_READ: list[Any] = []


def _note(message: str) -> None:
    print(f"bayeslmm: note: {message}", file=sys.stderr, flush=True)


def parse_na_values(text: str | None) -> list[str]:
    """``--na-values 'None,-'`` as a list of tokens (spaces around each are dropped)."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def read_data(source: str, na_values: list[str] | None = None) -> Any:
    """A CSV or Parquet path, or the name of a bundled dataset.

    A CSV file is read as R's ``read.csv`` reads it (:func:`bayeslmm._io.read_csv`): only
    ``NA``, empty fields and ``na_values`` are missing, so ``None``, ``null`` or ``nan`` in a
    text column are levels; a column whose other entries are all numbers is numeric. The
    separator (``,``, ``;``, tab, ``|``) is read from the header line, with a note on stderr
    when it is not the one the file name suggests; a ``;`` file may use decimal commas.
    ``na_values`` also applies to the text columns of Parquet files and bundled datasets.
    """
    from . import _io, datasets
    from ._errors import DataError

    tokens = list(na_values or [])
    _LAST_READ.clear()
    if source in datasets.names() and not os.path.exists(source):
        df, masked = _io.mask_tokens(datasets.load(source), tokens)
        info = _io.ReadInfo(df, masked=masked)
    elif not os.path.exists(source):
        if _io.has_glob(source):
            raise DataError(
                f"{source!r} is a glob; give a CSV or Parquet file (only 'bayeslmm fit' reads a glob "
                "of Parquet files, out of core)"
            )
        raise DataError(
            f"data file {source!r} not found; give a CSV or Parquet path or a bundled dataset "
            f"({', '.join(datasets.names())})"
        )
    elif os.path.isdir(source):
        raise DataError(
            f"{source!r} is a directory; give a CSV or Parquet file (only 'bayeslmm fit' reads a "
            "directory of Parquet files, out of core)"
        )
    else:
        info = _io.read_table(source, tokens)
        note = info.separator_note()
        if note is not None:
            _note(note)
    _LAST_READ.append(info)
    return info.frame


def _fit_out_of_core(args: argparse.Namespace, source: str | list[str]) -> tuple[Any, dict[str, Any]]:
    """Fit through :func:`bayeslmm.suff.fit_out_of_core`; the fit and what the ``out_of_core`` JSON key reports."""
    from ._errors import OptionError
    from .freq import check_method
    from .spec import parse_residual
    from .suff import fit_out_of_core

    method = check_method(args.method)
    if parse_residual(args.residual, args.variance) is not None:
        what = f"--residual {args.residual!r}" if args.residual else f"--variance {args.variance!r}"
        raise OptionError(
            f"{what}: a serial residual process needs the rows of each group in order and in memory (as does any "
            "residual structure or variance function), but a Parquet directory or glob (or --scheduler) is fitted "
            "out of core from sufficient statistics, with independent errors only; fit one CSV or Parquet file "
            "without --scheduler, or drop --residual and --variance"
        )
    if parse_na_values(args.na_values):
        raise OptionError(
            "--na-values applies to data read into memory (a CSV or Parquet file without "
            "--scheduler); out of core, Parquet nulls are the missing values"
        )
    fit, info = fit_out_of_core(args.formula, source, method, scheduler=args.scheduler, timeout=SCHEDULER_TIMEOUT_S)
    spec = fit.spec
    if spec.n_dropped:  # counted per partition, not per column
        _note(
            f"dropped {spec.n_dropped} of {spec.n + spec.n_dropped} rows with missing values in the columns "
            "the formula uses (out of core: not counted per column)"
        )
    return fit, info


def _finite(obj: Any) -> Any:
    """``obj`` with NumPy scalars and arrays as Python values and every NaN or infinity as None (null)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer, np.floating, np.bool_, np.ndarray)):
        return _finite(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def to_json(obj: Any) -> str:
    """One-line JSON with NumPy scalars and arrays converted and NaN or infinity written as null."""
    return json.dumps(_finite(obj), default=_json_default, allow_nan=False)


def _cmd_fit(args: argparse.Namespace) -> int:
    from .freq import lmm
    from .suff import out_of_core_source

    source = out_of_core_source(args.data, args.scheduler)
    if source is None:
        fit = lmm(
            args.formula,
            read_data(args.data[0], parse_na_values(args.na_values)),
            method=args.method,
            residual=args.residual,
            variance=args.variance,
        )
        info = None
    else:
        fit, info = _fit_out_of_core(args, source)
    if args.json:
        out = fit.to_dict()
        if info is not None:
            out["out_of_core"] = info
        print(to_json(out))
    else:
        print(fit.summary())
        if info is not None:
            n = info["npartitions"]
            print(
                f"\nOut of core with Dask ({info['scheduler']} scheduler, {n} partition{'s' * (n != 1)}): levels "
                f"pass {info['levels_s']:.2f} s, statistics pass {info['pass_s']:.2f} s, fit {info['fit_s']:.2f} s."
                "\nFitted values and residuals were not computed (a second pass over the rows: "
                "bayeslmm.suff.fitted_dask)."
            )
    return 0


def _cmd_lrt(args: argparse.Namespace) -> int:
    from ._errors import OptionError
    from .freq import lrt_formulas

    if args.bootstrap < 0:
        raise OptionError("--bootstrap must be 0 or a positive number of samples")
    data = read_data(args.data, parse_na_values(args.na_values))
    res = lrt_formulas(
        data,
        args.null,
        args.alt,
        method=args.method,
        residual=args.residual,
        variance=args.variance,
        null_residual=args.null_residual,
        alt_residual=args.alt_residual,
        null_variance=args.null_variance,
        alt_variance=args.alt_variance,
        bootstrap=args.bootstrap,
        seed=args.seed,
        progress=not args.json and sys.stderr.isatty(),
    )
    print(to_json(res.to_dict()) if args.json else res)
    return 0


def _cmd_limit(args: argparse.Namespace) -> int:
    from ._errors import OptionError
    from .bayes import reml_limit
    from .freq import lmm

    try:
        tvals = [float(v) for v in args.beta_prior_vars.split(",") if v.strip()]
    except ValueError:
        raise OptionError(f"--beta-prior-vars must be comma-separated numbers, got {args.beta_prior_vars!r}") from None
    fit = lmm(
        args.formula,
        read_data(args.data, parse_na_values(args.na_values)),
        method="REML",
        residual=args.residual,
        variance=args.variance,
    )
    path = reml_limit(fit, tvals)
    if args.json:
        print(to_json(path.to_dict()))
    else:
        print("Posterior mode of the variance components, beta ~ N(0, beta_prior_var I) integrated out,")
        print("flat prior on the variance parameters; the last row is REML:\n")
        print(path.table().to_string(float_format=lambda v: f"{v:.8g}"))
    return 0


def _sample_options(args: argparse.Namespace) -> dict[str, Any]:
    """Prior and sampler options shared by ``sample`` and ``compare``."""
    from ._errors import OptionError

    priors: dict[str, Any] = {"lkj_eta": args.lkj_eta}
    if args.beta_prior_var is not None:
        priors["beta_prior_var"] = args.beta_prior_var
    if args.sd_prior is not None:
        dist, _, scale = args.sd_prior.partition(":")
        try:
            if dist != "halfnormal":
                raise ValueError
            priors["sd_scale"] = float(scale)
        except ValueError:
            raise OptionError(f"--sd-prior must be 'halfnormal:S' with a number S, got {args.sd_prior!r}") from None
    user: dict[str, str] = {}
    for item in args.prior or []:
        key, eq, dist = item.partition("=")
        if not eq or not key.strip() or not dist.strip():
            raise OptionError(
                f"--prior must be KEY=DISTRIBUTION, e.g. 'sigma=HalfStudentT(nu=3, sigma=10)'; got {item!r}"
            )
        user[key.strip()] = dist.strip()
    if user:
        priors["priors"] = user
    for name in ("draws", "tune", "chains"):
        if getattr(args, name) < 1:
            raise OptionError(f"--{name} must be a positive integer")
    return priors


def _cmd_sample(args: argparse.Namespace) -> int:
    from . import bayes  # bayes.sample looked up at call time (tests replace it)
    from ._paths import check_file
    from .bayes import sample_summary
    from .spec import build_spec

    t_start = time.perf_counter()
    if args.out:
        check_file(args.out, "--out", "posterior.nc")
    priors = _sample_options(args)
    spec = build_spec(
        args.formula,
        read_data(args.data, parse_na_values(args.na_values)),
        residual=args.residual,
        variance=args.variance,
    )
    t0 = time.perf_counter()
    idata = bayes.sample(
        spec,
        param=args.param,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=args.seed,
        sampler=args.sampler,
        progressbar=not args.json and sys.stderr.isatty(),
        **priors,
    )
    sampling = time.perf_counter() - t0
    out = sample_summary(spec, idata)
    out.update(
        param=args.param,
        draws=args.draws,
        chains=args.chains,
        sampling_seconds=sampling,
        seconds=time.perf_counter() - t_start,
    )
    if args.out:
        out["out"] = args.out
    try:
        if args.json:
            print(to_json(out), flush=True)
        else:
            import pandas as pd

            print(pd.DataFrame(out["params"]).to_string(index=False, float_format=lambda v: f"{v:.5g}"))
            print(f"divergences: {out['divergences']}; sampling {sampling:.1f} s", flush=True)
    except BrokenPipeError:  # the reader of stdout left (| head): the file is still wanted
        if args.out:
            _write_netcdf(idata, args.out)
        raise
    if args.out:  # after the results are printed: a failed write loses nothing
        _write_netcdf(idata, args.out)
        if not args.json:
            print(f"wrote {args.out}")
    return 0


def _write_netcdf(idata: Any, path: str) -> None:
    """``idata.to_netcdf(path)``, failing with one line (:class:`OptionError`, status 2)."""
    from ._errors import OptionError

    try:
        idata.to_netcdf(path)
    except (OSError, RuntimeError, ValueError) as e:
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                os.unlink(path)
        why = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise OptionError(f"the results are above, but --out {path!r} could not be written: {why}") from None


def _parse_limit(text: str | None) -> list[float] | None:
    from ._errors import OptionError

    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OptionError(f"--limit must be comma-separated numbers, got {text!r}") from None


def _side_by_side(
    args: argparse.Namespace,
    data: Any,
    formula: str,
    residual: str | None,
    method: str,
    limit: list[float] | None,
    out_dir: str | None,
    html_path: str | None,
    priors: dict[str, Any],
    title: str | None = None,
) -> Any:
    """Fit, sample, compare; figures and report when asked. Returns the :class:`SideBySide`."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    from . import bayes  # bayes.sample looked up at call time (tests replace it)
    from .bayes import reml_limit
    from .compare import side_by_side
    from .freq import lmm

    fit = lmm(formula, data, method=method, residual=residual, variance=getattr(args, "variance", None))
    show = not getattr(args, "json", False) and sys.stderr.isatty()
    if not getattr(args, "json", False):
        print(
            f"sampling the {args.param} model: {args.chains} chains x {args.draws} draws after {args.tune} "
            "tuning steps ...",
            file=sys.stderr,
            flush=True,
        )
    idata = bayes.sample(
        fit.spec,
        param=args.param,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=args.seed,
        sampler=getattr(args, "sampler", "pymc"),
        progressbar=show,
        **priors,
    )
    path = reml_limit(fit, limit) if limit else None
    return side_by_side(fit, idata, limit=path, out_dir=out_dir, html_path=html_path, title=title, write=False)


def _check_report_paths(out_dir: str | None, html_path: str | None) -> None:
    """``--out DIR`` and ``--html FILE`` can be written: checked before the sampling, not after it."""
    from ._paths import check_dir, check_file
    from .compare import FIGURES, REPORT

    if out_dir is not None:
        check_dir(out_dir, "--out", tuple(f"{n}.png" for n in FIGURES) + ((REPORT,) if html_path is None else ()))
    if html_path is not None:
        check_file(html_path, "--html", REPORT)


def _write_report(res: Any) -> None:
    """Write the figures and report of ``res`` after its results were printed (one-line error, status 2)."""
    from ._errors import OptionError

    try:
        res.write()
    except OptionError as e:
        raise OptionError(f"the results are above, but {e}") from None


def _cmd_compare(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _check_report_paths(args.out, args.html)
    priors = _sample_options(args)
    data = read_data(args.data, parse_na_values(args.na_values))
    res = _side_by_side(
        args, data, args.formula, args.residual, args.method, _parse_limit(args.limit), args.out, args.html, priors
    )
    res.data["seconds"] = time.perf_counter() - t0
    try:
        if args.json:  # "files" lists what is written next
            print(to_json(res.data), flush=True)
        else:
            print(res.text, flush=True)
    except BrokenPipeError:  # the reader of stdout left (| head): the files are still wanted
        _write_report(res)
        raise
    _write_report(res)
    if not args.json:
        for f in res.files:
            print(f"wrote {f}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import datasets
    from ._errors import OptionError
    from .freq import lmm

    t0 = time.perf_counter()
    if args.draws < 1 or args.tune < 1:
        raise OptionError("--draws and --tune must be positive integers")
    _check_report_paths(args.out, None)
    pig = datasets.load("pig_weights")
    formula = "weight ~ num_weeks + (1 | id_num)"
    print("bayeslmm demo: 48 pigs weighed weekly for 9 weeks (bundled dataset 'pig_weights')")
    print(f"model {formula}: REML (lme4's algorithm) and the Bayesian model in PyMC, side by side\n")
    fit = lmm(formula, pig, method="REML")
    shr = fit.shrinkage()
    print("== BLUP = closed-form shrinkage n_i s_u^2 / (s^2 + n_i s_u^2) x mean residual (first 5 pigs) ==")
    print(shr.head().to_string(float_format=lambda v: f"{v:.4f}"))
    gap = float((shr.factor * shr.mean_resid - shr.blup).abs().max())
    print(f"max |factor x mean residual - BLUP| over all {len(shr)} pigs: {gap:.2e}\n")
    args.param, args.chains = "marginal", 2
    res = _side_by_side(
        args,
        pig,
        formula,
        None,
        "REML",
        [1.0, 10.0, 1e3, 1e5, 1e8],
        args.out,
        None,
        {"beta_prior_var": 1e4},
        title="bayeslmm demo: pig weights, REML and Bayes side by side",
    )
    print(res.text, flush=True)
    _write_report(res)
    print(f"\nfigures and a self-contained HTML report written to {os.path.abspath(args.out)}/:")
    for f in res.files:
        print(f"  {os.path.basename(f)}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _add_sampling(sp: argparse.ArgumentParser, param_default: str) -> None:
    sp.add_argument(
        "--param",
        default=param_default,
        choices=["conditional", "marginal", "restricted"],
        help=f"parameterisation (default {param_default}): random effects explicit, integrated out, "
        "or beta integrated out as well",
    )
    sp.add_argument(
        "--beta-prior-var",
        type=float,
        default=None,
        help="prior variance of each fixed effect; default 100 max(var(y), b_j^2), b the least-squares coefficients",
    )
    sp.add_argument("--sd-prior", default=None, help="'halfnormal:S': HalfNormal(S) on every standard deviation")
    sp.add_argument("--lkj-eta", type=float, default=2.0, help="LKJ shape of the correlation matrices")
    sp.add_argument(
        "--prior",
        action="append",
        metavar="KEY=DIST",
        help="replace one prior, e.g. 'sigma=HalfStudentT(nu=3, sigma=10)', 'rho=Beta(alpha=2, beta=2)'; "
        "keys sd_<term>, sigma, sd_process, rho, phi; repeatable",
    )
    sp.add_argument(
        "--sampler",
        default="pymc",
        choices=["pymc", "nutpie", "numpyro", "blackjax"],
        help="NUTS implementation (default pymc; numpyro/blackjax need pip install 'bayeslmm[jax]')",
    )
    sp.add_argument("--draws", type=int, default=1000)
    sp.add_argument("--tune", type=int, default=1000)
    sp.add_argument("--chains", type=int, default=2)
    sp.add_argument("--seed", type=int, default=None)


def _add_na_values(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--na-values",
        default=None,
        metavar="TOKENS",
        help="comma-separated extra missing-value markers, e.g. 'None,-,.'; a CSV is read as R's "
        "read.csv reads it, where only NA and empty fields are missing",
    )


#: what --residual accepts
RESIDUAL_HELP = (
    "residual structure within groups (default iid, independent errors): in time 'ou(t | g)' (Ornstein-"
    "Uhlenbeck plus a nugget), 'ar1(t | g)' (AR(1) by order of t); by visit (a factor) 'us(visit | id)' "
    "(unstructured), 'cs', 'csh', 'ar1h', 'toep', 'toeph', 'diag', and 'us(visit | arm/id)' for one matrix "
    "per arm; spatial 'exp(x + y | g)', 'gau', 'sph' (with a nugget; 'exp(x + y | g, nugget=false)' "
    "without; '| 1' for one group over the whole field)"
)
#: what --variance accepts
VARIANCE_HELP = (
    "variance function of the residual: 'ident(v)' (a standard deviation per level of v, nlme's varIdent), "
    "'power(x)' (|x|^delta, varPower) or 'exp(x)' (exp(delta x), varExp); with or without --residual "
    "(without random effects and --residual: nlme's gls)"
)


def _add_residual(sp: argparse.ArgumentParser, both: bool = False) -> None:
    """``--residual`` and ``--variance`` (``both``: of the two models of a test)."""
    whose = "both models: " if both else ""
    sp.add_argument("--residual", default=None, metavar="STRUCTURE", help=whose + RESIDUAL_HELP)
    sp.add_argument("--variance", default=None, metavar="FUNCTION", help=whose + VARIANCE_HELP)


def split_structures(text: str) -> list[str]:
    """``"us, toeph, exp(x + y | 1, nugget=false)"`` as a list: commas inside parentheses stay."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    out.append(cur.strip())
    return [s for s in out if s]


def _cmd_structures(args: argparse.Namespace) -> int:
    from ._errors import OptionError
    from .freq import compare_structures

    names = split_structures(args.structures)
    if not names:
        raise OptionError("--structures must list at least one structure, e.g. 'us,toeph,ar1h,cs'")
    visit: Any = args.visit
    if visit and "+" in visit:  # coordinates, 'x + y'
        visit = [c.strip() for c in visit.split("+") if c.strip()]
    data = read_data(args.data, parse_na_values(args.na_values))
    table = compare_structures(
        args.formula,
        data,
        names,
        visit=visit,
        group=args.group,
        method=args.method,
        variance=args.variance,
        lrt=args.lrt,
    )
    if args.json:
        print(to_json({"method": args.method.upper(), "formula": args.formula, "structures": table.to_dict("records")}))
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayeslmm`` command."""
    from . import __version__

    p = _Parser(prog="bayeslmm", description="Linear mixed models: ML/REML (lme4-compatible) and Bayesian.")
    p.add_argument("--version", action="version", version=f"bayeslmm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    f = sub.add_parser(
        "fit",
        help="fit a model by REML or ML and print the summary (or JSON)",
        description="Fit a linear mixed model by REML or ML. A CSV or Parquet file is read into memory. A "
        "directory or glob of Parquet files (or any Parquet data with --scheduler) is fitted out of "
        "core with Dask: one pass computes the sufficient statistics of each partition and merges "
        "them, and the fit gives the same estimates as in memory. Out of core needs pip install "
        "'bayeslmm[dask]', allows independent errors only, and computes no fitted values or "
        "residuals.",
        epilog="examples: bayeslmm fit sleepstudy -f 'Reaction ~ Days + (Days | Subject)'; "
        "bayeslmm fit 'data/*.parquet' -f 'y ~ x + (1 | g)' --json; "
        "bayeslmm fit data/ -f 'y ~ x + (1 | g)' --scheduler tcp://10.0.0.5:8786",
    )
    f.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="CSV or Parquet file, or a bundled dataset name (pig_weights, sleepstudy, dyestuff); or, "
        "read out of core, a directory of Parquet files, a glob such as 'data/part.*.parquet' "
        "(quote it, or let the shell expand it into several files) or a URL",
    )
    _add_na_values(f)
    f.add_argument("--formula", "-f", required=True, help="lme4 formula, e.g. 'y ~ x + (1 | g)'")
    f.add_argument("--method", default="REML", help="REML (default) or ML")
    _add_residual(f)
    f.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    f.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="fit out of core on this Dask scheduler: a distributed address such as tcp://host:8786 "
        f"(reached within {SCHEDULER_TIMEOUT_S:g} s; workers must be able to read DATA), or "
        "threads, processes or synchronous for a local scheduler (default for a Parquet directory "
        "or glob: Dask's threaded scheduler)",
    )
    f.set_defaults(func=_cmd_fit)
    t = sub.add_parser("lrt", help="likelihood-ratio test of two nested models (boundary-corrected, bootstrap)")
    t.add_argument("data", help="CSV or Parquet file, or a bundled dataset name")
    _add_na_values(t)
    t.add_argument("--null", required=True, help="formula of the null model (may have no random effects)")
    t.add_argument("--alt", required=True, help="formula of the alternative model")
    t.add_argument(
        "--method", default="REML", help="REML (default) or ML; REML fits whose fixed effects differ are refitted by ML"
    )
    _add_residual(t, both=True)
    for who in ("null", "alt"):
        t.add_argument(
            f"--{who}-residual",
            default=None,
            metavar="STRUCTURE",
            help=f"residual structure of the {who} model only (replaces --residual for it), e.g. --null-residual "
            "'cs(visit | id)' --alt-residual 'us(visit | id)' with one formula: a test of the covariance structure",
        )
        t.add_argument(
            f"--{who}-variance",
            default=None,
            metavar="FUNCTION",
            help=f"variance function of the {who} model only (replaces --variance for it)",
        )
    t.add_argument("--bootstrap", type=int, default=0, help="parametric-bootstrap samples (default 0: none)")
    t.add_argument("--seed", type=int, default=None, help="seed of the bootstrap")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=_cmd_lrt)
    st = sub.add_parser(
        "structures",
        help="compare residual structures for one mean model: npar, loglik, AIC, BIC, LRTs of nested pairs",
        description="Fit one formula with each residual structure (REML by default: the fixed effects are the "
        "same, so the restricted likelihoods compare) and print one row per structure, in the order given.",
        epilog="example: bayeslmm structures trial.csv -f 'y ~ arm * visit + base' --structures us,toeph,ar1h,cs "
        "--visit visit --group id --lrt",
    )
    st.add_argument("data", help="CSV or Parquet file, or a bundled dataset name")
    _add_na_values(st)
    st.add_argument("--formula", "-f", required=True, help="lme4 formula (random-effect terms optional)")
    st.add_argument(
        "--structures",
        required=True,
        help="comma-separated structures: bare names ('us,toeph,ar1h,cs', with --visit and --group) or full "
        "texts ('us(visit | id),cs(visit | id)'); iid for independent errors. " + RESIDUAL_HELP,
    )
    st.add_argument("--visit", default=None, help="left of '|' for bare names: the visit factor, a time, or 'x + y'")
    st.add_argument("--group", default=None, help="right of '|' for bare names: the subject factor, 'arm/id', or 1")
    st.add_argument("--variance", default=None, metavar="FUNCTION", help=VARIANCE_HELP + "; for every structure")
    st.add_argument("--method", default="REML", help="REML (default) or ML")
    st.add_argument(
        "--lrt",
        action="store_true",
        help="test each structure against the one before it where that one is nested in it",
    )
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=_cmd_structures)
    lm_ = sub.add_parser("limit", help="the REML limit: posterior modes as the prior variance of beta grows")
    lm_.add_argument("data", help="CSV or Parquet file, or a bundled dataset name")
    _add_na_values(lm_)
    lm_.add_argument("--formula", "-f", required=True, help="lme4 formula")
    _add_residual(lm_)
    lm_.add_argument(
        "--beta-prior-vars",
        default="10,1e3,1e8",
        help="comma-separated prior variances of the fixed effects (default 10,1e3,1e8)",
    )
    lm_.add_argument("--json", action="store_true", help="print one JSON object")
    lm_.set_defaults(func=_cmd_limit)
    sm = sub.add_parser("sample", help="sample the Bayesian model (PyMC) and summarise the posterior")
    sm.add_argument("data", help="CSV or Parquet file, or a bundled dataset name")
    _add_na_values(sm)
    sm.add_argument("--formula", "-f", required=True, help="lme4 formula")
    _add_residual(sm)
    _add_sampling(sm, "conditional")
    sm.add_argument("--out", default=None, help="write the InferenceData to this netCDF file")
    sm.add_argument("--json", action="store_true", help="print one JSON object")
    sm.set_defaults(func=_cmd_sample)
    c = sub.add_parser("compare", help="REML and the posterior side by side: tables, diagnostics, figures, report")
    c.add_argument("data", help="CSV or Parquet file, or a bundled dataset name")
    _add_na_values(c)
    c.add_argument("--formula", "-f", required=True, help="lme4 formula")
    _add_residual(c)
    c.add_argument("--method", default="REML", help="REML (default) or ML for the frequentist fit")
    _add_sampling(c, "marginal")
    c.add_argument(
        "--limit",
        default=None,
        metavar="V1,V2,...",
        help="also show the REML-limit path at these beta_prior_var values, e.g. 10,1e3,1e8",
    )
    c.add_argument("--out", default=None, metavar="DIR", help="write the figures (PNG) and report.html to DIR")
    c.add_argument("--html", default=None, metavar="FILE", help="write the self-contained HTML report to FILE")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=_cmd_compare)
    d = sub.add_parser("demo", help="the pig-weights example end to end: REML and Bayes side by side, with a report")
    d.add_argument(
        "--out",
        default="bayeslmm-demo",
        metavar="DIR",
        help="folder for the figures and report.html (default ./bayeslmm-demo)",
    )
    d.add_argument("--draws", type=int, default=1000, help="posterior draws per chain (default 1000)")
    d.add_argument("--tune", type=int, default=1000, help="tuning steps per chain (default 1000)")
    d.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    d.set_defaults(func=_cmd_demo)
    return p


def _show_warnings(shown: set[str]) -> Any:
    """A ``warnings.showwarning`` that prints the dropped-rows warning as a note naming the tokens read as missing.

    Other warnings go to the original function; a note is printed once per command.
    """
    from ._errors import MissingValuesWarning

    original = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if not isinstance(message, MissingValuesWarning):
            original(message, category, filename, lineno, file, line)
            return
        tokens = _LAST_READ[0].describe_tokens(message.counts) if _LAST_READ else {}
        text = message.describe(tokens)
        if text not in shown:
            shown.add(text)
            _note(text)

    return show


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bayeslmm`` command; returns the exit status.

    0: done; 2 (:data:`EXIT_USER_ERROR`): a user error, one line on stderr; 1: a bug;
    141 (:data:`EXIT_BROKEN_PIPE`, as a process killed by SIGPIPE): stdout was closed
    by its reader (``bayeslmm fit ... | head -3``), quietly, with nothing on stderr;
    130 (``bayeslmm._interrupt.EXIT_INTERRUPTED``): Ctrl-C, ``bayeslmm: interrupted`` on stderr.
    """
    from ._errors import BayesLMMError, MissingValuesWarning

    args = build_parser().parse_args(argv)
    _LAST_READ.clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", MissingValuesWarning)
            warnings.showwarning = _show_warnings(set())
            return int(args.func(args))
    except BrokenPipeError:  # the reader of stdout is gone: stop quietly
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # Ctrl-C: one line, status 130, no worker process left (bayeslmm._interrupt)
        from ._interrupt import report

        return report()
    except BayesLMMError as e:
        print(f"bayeslmm: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print("bayeslmm: error: out of memory; try a smaller model or data set", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:  # a bug, not a user error: one line, the traceback on request
        if os.environ.get("BAYESLMM_DEBUG"):
            raise
        print(
            f"bayeslmm: internal error: {type(e).__name__}: {e} (set BAYESLMM_DEBUG=1 for the traceback "
            "and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        _LAST_READ.clear()


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null, so that flushing what is left of stdout cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def entry() -> None:
    """Console-script entry: run :func:`main`, flush, and exit without interpreter teardown.

    Tearing down NumPy, pandas and SciPy takes a noticeable share of a short
    command's wall time; nothing is left to clean up once the output is flushed.
    A closed stdout (``bayeslmm fit ... | head -3``) ends quietly with status 141
    (:data:`EXIT_BROKEN_PIPE`), what a shell reports for a command killed by SIGPIPE.
    Ctrl-C ends the command within :data:`bayeslmm._interrupt.GRACE_S` seconds even in native
    code, with status 130 (:func:`bayeslmm._interrupt.install`).
    """
    from ._interrupt import install

    install()
    code = main()
    if code == EXIT_BROKEN_PIPE:
        _stdout_to_devnull()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the output was buffered and the reader left before the flush
        _stdout_to_devnull()
        code = EXIT_BROKEN_PIPE
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
