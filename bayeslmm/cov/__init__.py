"""Covariance structures: one class per structure, shared by the REML engines and the PyMC models.

* residual structures within a grouping factor (:class:`ResidualStructure`): ``ou``, ``ar1``,
  ``cs``; a new one is a new subclass in a file of its own, registered by its ``name``;
* the unstructured covariance of a random-effect term (:class:`Unstructured`, lme4's).
"""

from ._ar1 import AR1
from ._base import STRUCTURES, MarkovStructure, PriorSpec, ResidualStructure, residual_structure, sd_prior
from ._cs import CompoundSymmetry
from ._ou import OrnsteinUhlenbeck
from ._terms import Unstructured

__all__ = [
    "AR1",
    "STRUCTURES",
    "CompoundSymmetry",
    "MarkovStructure",
    "OrnsteinUhlenbeck",
    "PriorSpec",
    "ResidualStructure",
    "Unstructured",
    "residual_structure",
    "sd_prior",
]
