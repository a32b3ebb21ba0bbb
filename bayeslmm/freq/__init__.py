"""ML/REML: objective(theta) -> optimise -> assemble the fit."""

from ._bootstrap import BootstrapResult, bootstrap
from ._fit import LMMFit, fit_spec, lm, lmm
from ._linear import LinearFit
from ._lrt import LRTResult, fit_model, lrt
from ._objective import Objective, criterion_from_factor
from ._optimize import OptimizerRecord, minimize_bobyqa

__all__ = [
    "BootstrapResult", "LMMFit", "LRTResult", "LinearFit", "Objective", "OptimizerRecord", "bootstrap",
    "criterion_from_factor", "fit_model", "fit_spec", "lm", "lmm", "lrt", "minimize_bobyqa",
]
