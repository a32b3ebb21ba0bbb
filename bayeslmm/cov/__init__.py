"""Covariance structures: one class per structure, shared by the REML engines and the PyMC models.

* residual structures within a grouping factor (:class:`ResidualStructure`): in time ``ou``,
  ``ar1``; by visit ``us``, ``cs``, ``csh``, ``ar1h``, ``toep``, ``toeph``, ``diag``; spatial
  ``exp``, ``gau``, ``sph``; a new one is a new subclass in a file of its own, registered by its
  ``name``;
* variance functions (``ident``, ``power``, ``exp``) and strata (a structure per level of a
  factor) that wrap any of them (:mod:`._variance`);
* the unstructured covariance of a random-effect term (:class:`Unstructured`, lme4's).
"""

from ._ar1 import AR1
from ._base import (
    STRUCTURES,
    LagStructure,
    MarkovStructure,
    PriorSpec,
    ResidualStructure,
    Rows,
    residual_structure,
    sd_prior,
)
from ._cs import CompoundSymmetry
from ._ou import OrnsteinUhlenbeck
from ._spatial import Exponential, Gaussian, SpatialStructure, Spherical
from ._terms import Unstructured
from ._variance import (
    VARIANCE_FUNCTIONS,
    Heteroscedastic,
    Independent,
    Stratified,
    VarExp,
    VarianceFunction,
    VarIdent,
    VarPower,
)
from ._visit import Diagonal, HeterogeneousAR1, HeterogeneousCS, HeterogeneousToeplitz, Toeplitz, VisitStructure
from ._visit import Unstructured as UnstructuredVisits

__all__ = [
    "AR1",
    "Diagonal",
    "Exponential",
    "Gaussian",
    "Heteroscedastic",
    "HeterogeneousAR1",
    "HeterogeneousCS",
    "HeterogeneousToeplitz",
    "Independent",
    "LagStructure",
    "Rows",
    "SpatialStructure",
    "Spherical",
    "Stratified",
    "Toeplitz",
    "UnstructuredVisits",
    "VarExp",
    "VarIdent",
    "VarPower",
    "VarianceFunction",
    "VisitStructure",
    "STRUCTURES",
    "VARIANCE_FUNCTIONS",
    "CompoundSymmetry",
    "MarkovStructure",
    "OrnsteinUhlenbeck",
    "PriorSpec",
    "ResidualStructure",
    "Unstructured",
    "residual_structure",
    "sd_prior",
]
