"""Numerical kernels: cross-product blocks, batched small-block kernels, blocked Cholesky, and the per-group
kernels of residual structures (the Kalman filter for Markov ones, a dense Cholesky otherwise)."""

from ._basis import FixedBasis, TermBasis
from ._batched import chol_batched, solve_lower_batched, solve_upper_batched
from ._blocks import CrossProducts, by_level, term_matrix
from ._dense import DenseGram
from ._factor import BlockedFactor, factorize, lambda_blocks, pack_theta, theta_from_working, theta_to_working
from ._kalman import FilterResult, GramResult, ProcessGram, SerialLayout, kalman_smooth, kalman_whiten
from ._pairs import PairOperator

__all__ = [
    "BlockedFactor",
    "CrossProducts",
    "DenseGram",
    "FilterResult",
    "FixedBasis",
    "GramResult",
    "PairOperator",
    "ProcessGram",
    "SerialLayout",
    "TermBasis",
    "by_level",
    "chol_batched",
    "factorize",
    "kalman_smooth",
    "kalman_whiten",
    "lambda_blocks",
    "pack_theta",
    "solve_lower_batched",
    "solve_upper_batched",
    "term_matrix",
    "theta_from_working",
    "theta_to_working",
]
