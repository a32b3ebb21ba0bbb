"""ML/REML: an engine gives the profiled criterion of psi -> optimise -> one fitted-model type."""

from ._bootstrap import BootstrapResult, bootstrap
from ._fit import LMMFit, fit_spec, lm, lmm, make_engine, one_blas_thread, optimize
from ._grouped import GroupedEngine
from ._linear import LinearFit
from ._lrt import LRTResult, fit_model, lrt, lrt_formulas
from ._objective import (
    GLS,
    BlockedEngine,
    Engine,
    Pieces,
    check_method,
    criterion_from_factor,
    profiled_criterion,
    varpar_deviance,
)
from ._optimize import SINGULAR_TOL, OptimizerRecord, minimize_bobyqa
from ._structures import compare_structures, marginal_cov, residual_report, variance_report
from ._variogram import Variogram, variogram

__all__ = [
    "GLS",
    "SINGULAR_TOL",
    "BlockedEngine",
    "BootstrapResult",
    "Engine",
    "GroupedEngine",
    "LMMFit",
    "LRTResult",
    "LinearFit",
    "OptimizerRecord",
    "Pieces",
    "Variogram",
    "bootstrap",
    "check_method",
    "compare_structures",
    "criterion_from_factor",
    "fit_model",
    "fit_spec",
    "lm",
    "lmm",
    "lrt",
    "lrt_formulas",
    "make_engine",
    "marginal_cov",
    "minimize_bobyqa",
    "one_blas_thread",
    "optimize",
    "profiled_criterion",
    "residual_report",
    "variogram",
    "varpar_deviance",
    "variance_report",
]
