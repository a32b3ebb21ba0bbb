"""Helpers shared by the structures: arrays in NumPy or PyTensor, the identity of a group's rows."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_array(xp: Any, a: np.ndarray) -> Any:
    """``a`` as an array of ``xp`` (a PyTensor constant when ``xp`` is :mod:`pytensor.tensor`)."""
    return a if xp is np else xp.as_tensor_variable(a)


def identity_like(lag: np.ndarray) -> np.ndarray:
    """``(s, s)`` identity for lags of shape ``(..., s, s)``: the diagonal is the identity of the rows."""
    return np.eye(np.shape(lag)[-1])


def power(xp: Any, base: Any, lag: np.ndarray) -> Any:
    """``base ** lag`` (``base`` in (0, 1]); in PyTensor as ``exp(lag log base)``, whose gradient is finite."""
    if xp is np:
        return np.power(base, lag)
    return xp.exp(as_array(xp, lag) * xp.log(base))


def power_derivative(base: float, lag: np.ndarray) -> np.ndarray:
    """``d base^lag / d base = lag base^(lag - 1)`` (0 at lag 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lag > 0, lag * np.power(base, lag - 1), 0.0)
