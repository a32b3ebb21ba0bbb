"""Numerical kernels: cross-product blocks, batched small-block kernels, blocked Cholesky."""

from ._batched import chol_batched, solve_lower_batched, solve_upper_batched
from ._blocks import CrossProducts, term_matrix
from ._factor import BlockedFactor, factorize, lambda_blocks

__all__ = ["BlockedFactor", "CrossProducts", "chol_batched", "factorize", "lambda_blocks",
           "solve_lower_batched", "solve_upper_batched", "term_matrix"]
