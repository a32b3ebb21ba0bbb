"""Batched dense kernels for many small matrices (one per level of a grouping factor).

Random-effect blocks are ``q x q`` with ``q`` small (1 for an intercept, 2 for
intercept + slope) and there may be millions of them. NumPy's stacked LAPACK
calls pay a fixed cost per matrix, so for small ``q`` the loops below run over
the small dimension and are vectorised over the batch.
"""

from __future__ import annotations

import numpy as np

#: Largest block size handled by the vectorised loops; larger blocks use LAPACK.
SMALL_Q = 4
#: Up to this many entries in the stack, NumPy's stacked LAPACK is faster than the loops (fixed costs).
SMALL_STACK = 2000


def chol_batched(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of SPD matrices.

    Parameters
    ----------
    A
        ``(m, q, q)`` symmetric positive definite matrices.

    Returns
    -------
    ``(m, q, q)`` lower-triangular ``L`` with ``L @ L.T == A``.

    Raises
    ------
    numpy.linalg.LinAlgError
        If a matrix is not positive definite.
    """
    m, q, _ = A.shape
    if q == 1:
        if np.any(A[:, 0, 0] <= 0):
            raise np.linalg.LinAlgError("matrix not positive definite")
        return np.sqrt(A)
    if q > SMALL_Q or m * q * q <= SMALL_STACK:
        return np.linalg.cholesky(A)
    L = np.zeros_like(A)
    for j in range(q):
        s = A[:, j, j] - np.einsum("mk,mk->m", L[:, j, :j], L[:, j, :j])
        if np.any(s <= 0):
            raise np.linalg.LinAlgError("matrix not positive definite")
        d = np.sqrt(s)
        L[:, j, j] = d
        for i in range(j + 1, q):
            L[:, i, j] = (A[:, i, j] - np.einsum("mk,mk->m", L[:, i, :j], L[:, j, :j])) / d
    return L


def solve_lower_batched(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve ``L_i X_i = B_i`` for a stack of lower-triangular ``L``.

    Parameters
    ----------
    L
        ``(m, q, q)`` lower triangular.
    B
        ``(m, q, k)`` right-hand sides.

    Returns
    -------
    ``(m, q, k)`` solutions.
    """
    m, q, _ = L.shape
    if q == 1:
        return B / L
    X = np.empty(np.broadcast_shapes(B.shape, (m, q, B.shape[-1])))
    for i in range(q):
        r = B[:, i, :] - np.einsum("mj,mjk->mk", L[:, i, :i], X[:, :i, :])
        X[:, i, :] = r / L[:, i, i][:, None]
    return X


def solve_upper_batched(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve ``L_i^T X_i = B_i`` for a stack of lower-triangular ``L``.

    Parameters
    ----------
    L
        ``(m, q, q)`` lower triangular (its transpose is used).
    B
        ``(m, q, k)`` right-hand sides.

    Returns
    -------
    ``(m, q, k)`` solutions.
    """
    m, q, _ = L.shape
    if q == 1:
        return B / L
    X = np.empty(np.broadcast_shapes(B.shape, (m, q, B.shape[-1])))
    for i in range(q - 1, -1, -1):
        r = B[:, i, :] - np.einsum("mj,mjk->mk", L[:, i + 1 :, i], X[:, i + 1 :, :])
        X[:, i, :] = r / L[:, i, i][:, None]
    return X


def logdet_chol_batched(L: np.ndarray) -> float:
    """``sum_i log|L_i L_i^T|`` for a stack of Cholesky factors."""
    return 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
