"""Numerical kernels: cross-product blocks, batched small-block kernels, blocked Cholesky."""

from ._basis import FixedBasis, TermBasis
from ._batched import chol_batched, solve_lower_batched, solve_upper_batched
from ._blocks import CrossProducts, term_matrix
from ._factor import BlockedFactor, factorize, lambda_blocks, pack_theta, theta_from_working, theta_to_working

__all__ = ["BlockedFactor", "CrossProducts", "FixedBasis", "TermBasis", "chol_batched", "factorize", "lambda_blocks",
           "pack_theta", "solve_lower_batched", "solve_upper_batched", "term_matrix", "theta_from_working",
           "theta_to_working"]
