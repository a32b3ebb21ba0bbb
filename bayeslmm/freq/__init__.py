"""ML/REML: objective(theta) -> optimise -> assemble the fit."""

from ._fit import LMMFit, fit_spec, lmm
from ._objective import Objective, criterion_from_factor
from ._optimize import OptimizerRecord, minimize_bobyqa

__all__ = ["LMMFit", "Objective", "OptimizerRecord", "criterion_from_factor", "fit_spec", "lmm",
           "minimize_bobyqa"]
