"""bayeslmm: Gaussian linear mixed models, frequentist (ML/REML) and Bayesian side by side.

Notation (one name per quantity, used throughout the code and docs)
-------------------------------------------------------------------
y       (n,) response
X       (n, p) fixed-effects design; beta (p,) fixed effects
Z       (n, q) random-effects design, ``[Z_1 ... Z_K]`` one block per term, columns level by level
b       (q,) random effects, ``b ~ N(0, D)``; ``D = blockdiag(I_{l_k} (x) D_k)``
u       (q,) spherical random effects, ``b = Lambda u``, ``u ~ N(0, sigma^2 I)``
theta   covariance parameters: the lower triangles of the relative factors ``T_k``,
        ``D_k = sigma^2 T_k T_k'``, ``Lambda = blockdiag(I_{l_k} (x) T_k)`` (lme4's parameterisation)
sigma   residual standard deviation; ``R = sigma^2 I`` for independent errors
R       residual covariance, block diagonal by the groups of a residual structure (``bayeslmm.cov``:
        ``ou``, ``ar1``, ``cs``); ``R_i = s^2 R_rel,i``
psi     every covariance parameter the optimiser sees: theta, then the residual structure's parameters
s^2     the scale profiled out of the likelihood, ``V = s^2 V_rel`` (``scale2``; ``sigma^2`` itself for
        independent errors, ``sigma^2 = s^2 nu`` the nugget of ``ou``)
V       marginal covariance ``Z D Z' + R``

The prior of the fixed effects is often written ``beta ~ N(0, theta I)``; to avoid
a clash with the covariance parameters the library calls that prior variance
``beta_prior_var``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import BayesLMMError, DataError, FormulaError, MissingValuesWarning, OptionError, StructureError

if TYPE_CHECKING:
    from . import datasets
    from .freq import LMMFit, bootstrap, compare_structures, lm, lmm, lrt, variogram
    from .spec import ALLOWED_FUNCTIONS, ModelSpec, parse_formula
    from .spec import build_spec as model_spec

__version__ = "0.1.0"

#: submodules imported on first use (``bayeslmm.bayes`` pulls in PyMC, ``bayeslmm.suff`` imports Dask only
#: inside its Dask functions)
_LAZY = ("bayes", "compare", "suff", "datasets", "freq", "spec", "linalg")
#: public names and the submodule that defines them, imported on first use as well: ``import bayeslmm``
#: imports neither NumPy nor pandas, so the command line installs its Ctrl-C handling before they load
_NAMES = {
    "LMMFit": "freq",
    "bootstrap": "freq",
    "compare_structures": "freq",
    "lm": "freq",
    "lmm": "freq",
    "lrt": "freq",
    "variogram": "freq",
    "ALLOWED_FUNCTIONS": "spec",
    "ModelSpec": "spec",
    "parse_formula": "spec",
    "model_spec": "spec",
}


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        mod = importlib.import_module(f".{_NAMES[name]}", __name__)
        value = getattr(mod, "build_spec" if name == "model_spec" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayeslmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_LAZY))


__all__ = [
    "ALLOWED_FUNCTIONS",
    "BayesLMMError",
    "DataError",
    "FormulaError",
    "LMMFit",
    "MissingValuesWarning",
    "ModelSpec",
    "OptionError",
    "StructureError",
    "bootstrap",
    "compare_structures",
    "datasets",
    "lm",
    "lmm",
    "lrt",
    "model_spec",
    "parse_formula",
    "variogram",
]
