"""Priors of the PyMC models: the data-scaled defaults and user replacements, given as data.

A prior is a PyMC distribution name and keyword arguments, ``Prior("HalfStudentT", {"nu": 3,
"sigma": 10})``, or the same as text, ``"HalfStudentT(nu=3, sigma=10)"`` (parsed with
:mod:`ast`: a call of a distribution name with numeric keyword arguments and nothing else, so a
prior given on the command line cannot run code).

Which parameter gets which prior (keys of the ``priors`` argument of ``build_model``):

================= ============================================ ==================================
key               parameter                                    default
================= ============================================ ==================================
``sd_<term>``     standard deviations of term ``<term>``        ``HalfNormal(sd_scale)``
``sigma``         residual sd (the nugget's sd for ``ou``, the  ``HalfNormal(sd_scale)``
                  first visit's for structures by visit, the
                  sill's sd for spatial structures)
``sd_process``    OU process sd (``ou`` residuals)              ``HalfNormal(sd_scale)``
``rho``           OU correlation per unit of time, in (0, 1)    ``Uniform(0, 1)``
``phi``           AR(1) correlation, in (-1, 1)                 ``Uniform(-1, 1)``
``rho``           ``cs`` correlation, in (-1/(n_max - 1), 1)    ``Uniform(-1/(n_max - 1), 1)``
``sd(<visit>)``   sd at a visit after the first (``us``,        ``HalfNormal(sd_scale)``
                  ``csh``, ``ar1h``, ``toeph``, ``diag``)
(none)            ``us`` correlation over the ``m`` visits      ``LKJCorr(lkj_eta)`` (its Cholesky
                                                               factor ``us_corr_chol``)
``rho``           ``csh`` correlation, in (-1/(m - 1), 1)       ``Uniform(-1/(m - 1), 1)``
``rho``           ``ar1h`` correlation, in (-1, 1)              ``Uniform(-1, 1)``
``pacf(lag k)``   ``toep``/``toeph`` partial autocorrelation    ``Uniform(-1, 1)``
                  at visit lag k (makes ``rho(lag k)``)
``range``         spatial range (``exp``, ``gau``, ``sph``)     ``LogNormal(log d0, 1)``
``nugget``        the nugget's share of the sill, in (0, 1)     ``Beta(1, 2)``
``ratio(<lv>)``   ``ident(v)`` sd ratio of level ``lv``         ``LogNormal(0, 1)``
``delta``         ``power(x)`` / ``exp(x)`` exponent            ``Normal(0, 1)`` / ``Normal(0, 1/sd(x))``
``sigma [<a>]``   first sd of stratum ``a`` (``us(v | a/id)``)  ``HalfNormal(sd_scale)``
``<key> [<a>]``   stratum ``a``'s parameter ``<key>``           as ``<key>``
================= ============================================ ==================================

The keys besides ``sd_<term>`` and ``sigma`` and their defaults come from the residual structure
(:meth:`bayeslmm.cov.ResidualStructure.priors`); ``n_max`` is the largest group, ``m`` the number of
visits, ``d0`` the median distance between two observations of a group. The Toeplitz structures take
their priors on the partial autocorrelations, which make a positive definite matrix wherever they are in
(-1, 1) (independent correlations per lag need not); the posterior's ``process`` holds the correlations
``rho(lag k)``.

``beta ~ N(0, beta_prior_var I)`` is fixed in form (the marginalisation integrates it out
analytically, which needs a Gaussian); its variance is the ``beta_prior_var`` argument.
Correlation matrices get ``LKJ(lkj_eta)``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import OptionError

#: distributions a prior may name (PyMC class names); lower-case spellings are accepted
ALLOWED = (
    "HalfNormal",
    "HalfStudentT",
    "HalfCauchy",
    "Exponential",
    "Gamma",
    "InverseGamma",
    "LogNormal",
    "Weibull",
    "Uniform",
    "Beta",
    "TruncatedNormal",
    "Kumaraswamy",
)
#: distributions on the whole real line: for parameters that may take any real value only (``delta``
#: of ``power(x)``/``exp(x)``); another parameter refuses them as not available
REAL_LINE = ("Normal", "StudentT")
_LOWER = {a.lower(): a for a in (*ALLOWED, *REAL_LINE)}


@dataclass(frozen=True)
class Prior:
    """A PyMC distribution by name with keyword arguments: ``Prior("HalfNormal", {"sigma": 5})``."""

    dist: str
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = _LOWER.get(str(self.dist).lower())
        if name is None:
            raise OptionError(
                f"prior distribution {self.dist!r} is not available: use one of {', '.join(ALLOWED)} "
                f"(or, for a parameter on the real line, {', '.join(REAL_LINE)})"
            )
        object.__setattr__(self, "dist", name)
        params = {}
        for k, v in dict(self.params).items():
            try:
                params[str(k)] = float(v)
            except (TypeError, ValueError):
                raise OptionError(f"prior {name}: parameter {k}={v!r} must be a number") from None
        object.__setattr__(self, "params", params)

    def _cls(self) -> Any:
        import pymc as pm

        return getattr(pm, self.dist)

    def rv(self, name: str, **kwargs: Any) -> Any:
        """The model variable ``name`` with this prior (inside a model context)."""
        return self._cls()(name, **self.params, **kwargs)

    def dist_(self, **kwargs: Any) -> Any:
        """An unnamed distribution (``.dist``), e.g. the ``sd_dist`` of an LKJ Cholesky factor."""
        return self._cls().dist(**self.params, **kwargs)

    def check(self, key: str, support: tuple[tuple[float, ...], tuple[float, ...], str]) -> None:
        """Raise :class:`OptionError` unless the distribution can be built and has the ``support``:
        ``(points outside, points inside, the support in words)``."""
        import pymc as pm

        if self.dist in REAL_LINE and support[0]:
            raise OptionError(
                f"prior distribution {self.dist!r} is not available for {key} (a parameter on {support[2]}): "
                f"use one of {', '.join(ALLOWED)}"
            )
        try:
            d = self.dist_()
            outside, inside, need = support
            lp = pm.logp(d, np.array([*outside, *inside])).eval()
        except (TypeError, ValueError) as e:
            raise OptionError(f"prior {key}={self}: {e}") from None
        if np.any(np.isfinite(lp[: len(outside)])) or not np.all(np.isfinite(lp[len(outside) :])):
            raise OptionError(f"prior {key}={self} must put its mass on {need}")

    def __str__(self) -> str:
        return f"{self.dist}({', '.join(f'{k}={v:g}' for k, v in self.params.items())})"


def parse_prior(text: str) -> Prior:
    """``"HalfStudentT(nu=3, sigma=10)"`` -> :class:`Prior`; also ``"halfnormal:S"``.

    Only a call of a name with numeric keyword arguments is accepted; nothing is evaluated.
    """
    s = str(text).strip()
    if ":" in s and "(" not in s:
        name, _, val = s.partition(":")
        if name.strip().lower() != "halfnormal":
            raise OptionError(
                f"prior {text!r}: the short form is 'halfnormal:S'; otherwise write e.g. 'HalfStudentT(nu=3, sigma=10)'"
            )
        try:
            return Prior("HalfNormal", {"sigma": float(val)})
        except ValueError:
            raise OptionError(f"prior {text!r}: S in 'halfnormal:S' must be a positive number") from None
    try:
        node = ast.parse(s, mode="eval").body
    except SyntaxError:
        node = None
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and not node.args
        and all(k.arg for k in node.keywords)
    ):
        raise OptionError(
            f"prior {text!r} is not understood: write a distribution with keyword arguments, "
            "e.g. 'HalfStudentT(nu=3, sigma=10)' or 'Beta(alpha=2, beta=2)'"
        )
    params: dict[str, float] = {}
    for k in node.keywords:
        if k.arg is None:  # a **mapping: refused above
            raise OptionError(f"prior {text!r}: write the parameters as keyword arguments, not **")
        v = k.value
        num: int | float | None
        if isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.USub) and isinstance(v.operand, ast.Constant):
            num = -v.operand.value if isinstance(v.operand.value, int | float) else None
        else:
            num = v.value if isinstance(v, ast.Constant) and isinstance(v.value, int | float) else None
        if num is None or isinstance(num, bool):
            raise OptionError(f"prior {text!r}: {k.arg} must be a number")
        params[k.arg] = float(num)
    return Prior(node.func.id, params)


def as_prior(value: Prior | str | tuple[str, dict[str, float]]) -> Prior:
    """A :class:`Prior` from a Prior, its text, or a ``(name, params)`` pair."""
    if isinstance(value, Prior):
        return value
    if isinstance(value, str):
        return parse_prior(value)
    if isinstance(value, tuple) and len(value) == 2:
        return Prior(value[0], value[1])
    raise OptionError(
        f"prior {value!r} is not understood: give a Prior, a text like 'HalfNormal(sigma=5)' or a (name, params) pair"
    )
