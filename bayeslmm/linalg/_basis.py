"""Working coordinates: the data shifted (and the random-effect columns scaled) before any cross-product.

Cross-products of raw columns lose the digits that matter when a column carries a large constant
(a response in grams, a year such as 2024 with a slope on it): ``y'y - y'X (X'X)^-1 X'y`` is then the
difference of two numbers that agree in most of their digits. Every engine therefore works with
shifted columns and maps its results back exactly.

Fixed effects. When ``X`` holds an intercept column (all ones), every other column is centred,
``X_w = X A`` with ``A = I - e_0 m'`` (``e_0`` the intercept, ``m`` the column centres, ``m_0 = 0``),
and the response is shifted by ``c_y``: ``y_w = y - c_y 1``. Then::

    beta = A beta_w + c_y e_0,   cov(beta) = A cov(beta_w) A',   X'V^-1X = A^-T (X_w'V^-1 X_w) A^-1

and ``det A = 1``, so the REML criterion is unchanged. Without an intercept column nothing is
shifted: no constant lies in the span of such an ``X`` by construction of the design, and shifting
``y`` would change the model.

Random effects. A term with ``q > 1`` columns has an unstructured covariance, so any invertible
``Z_w = Z A_z`` gives the same model with ``Lambda_w = A_z^-1 Lambda``. Its columns are centred on
the term's intercept column (if it has one) and every column is scaled by its root mean square,
``A_z = (I - e_0 m_z') S^-1``. A one-column term is only scaled. The optimiser works with ``T_w``
(lower triangular, ``T_w T_w' = A_z^-1 T T' A_z^-T``), so that neither shifts nor the units of a
covariate change its path; results are reported in the original ``T``.

The centres (lower medians, values of the data; :func:`bayeslmm.spec.column_centres`, which the
rank check of ``X`` uses too) and scales are fixed from the first rows an engine sees (all of them
in memory, the first chunk out of core). They need not be means: any value close to the data
removes the constant, and the same values are applied to every later chunk, so blocks from chunks
still add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import column_centres, intercept_column, lower_median


def _rms(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    s = float(np.sqrt(np.mean(v * v))) if v.size else 0.0
    return s if s > 0 and np.isfinite(s) else 1.0


@dataclass(frozen=True)
class FixedBasis:
    """Shift of ``[X y]`` (see the module docstring): ``X_w = X A``, ``y_w = y - c_y 1``."""

    intercept: int | None
    centres: np.ndarray  # (p,) m, zero at the intercept
    shift_y: float

    @classmethod
    def from_rows(cls, X: np.ndarray, y: np.ndarray) -> FixedBasis:
        """Centres from these rows (all of the data in memory, or the first chunk)."""
        j0 = intercept_column(X)
        if j0 is None:
            return cls(None, np.zeros(X.shape[1]), 0.0)
        return cls(j0, column_centres(X, j0), lower_median(np.asarray(y, dtype=float)))

    @classmethod
    def identity(cls, p: int) -> FixedBasis:
        """No shift (for designs without an intercept, or tests)."""
        return cls(None, np.zeros(p), 0.0)

    @property
    def p(self) -> int:
        return self.centres.shape[0]

    @property
    def A(self) -> np.ndarray:
        """``(p, p)`` map from working to original coefficients (without the shift of ``y``)."""
        A = np.eye(self.p)
        if self.intercept is not None:
            A[self.intercept, :] -= self.centres
        return A

    def apply(self, X: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(X_w, y_w)`` for these rows (new arrays; the inputs are not modified)."""
        Xw = X - self.centres[None, :] if self.intercept is not None else np.array(X, dtype=float)
        if y is None:
            return Xw, None
        return Xw, (np.asarray(y, dtype=float) - self.shift_y)

    def apply_y(self, y: np.ndarray) -> np.ndarray:
        """``y_w`` for a response on the same design."""
        return np.asarray(y, dtype=float) - self.shift_y

    def with_response(self, y: np.ndarray) -> FixedBasis:
        """The same centres of ``X`` with the shift of a new response."""
        if self.intercept is None:
            return self
        return FixedBasis(self.intercept, self.centres, lower_median(np.asarray(y, dtype=float)))

    def beta(self, beta_w: np.ndarray) -> np.ndarray:
        """Original coefficients from working ones."""
        b = np.array(beta_w, dtype=float)
        if self.intercept is not None:
            b[self.intercept] += self.shift_y - float(self.centres @ beta_w)
        return b

    def cov(self, cov_w: np.ndarray) -> np.ndarray:
        """``A cov_w A'``."""
        A = self.A
        return A @ cov_w @ A.T

    def original_cross(self, Sw: np.ndarray) -> np.ndarray:
        """``[X y]'W[X y]`` from the working ``[X_w y_w]'W[X_w y_w]`` (``(p+1, p+1)``, any symmetric ``W``).

        ``[X y] = [X_w y_w] H`` with ``H = [[A^-1, c_y e_0], [0, 1]]`` and ``A^-1 = I + e_0 m'``.
        """
        if self.intercept is None:
            return Sw
        p = self.p
        H = np.eye(p + 1)
        H[self.intercept, :p] += self.centres
        H[self.intercept, p] = self.shift_y
        return H.T @ Sw @ H

    def precision_factor(self, RXw: np.ndarray) -> np.ndarray:
        """A square ``R`` with ``R R' = X'V^-1X`` from the working lower factor ``RXw``: ``A^-T RXw``."""
        if self.intercept is None:
            return RXw
        return np.linalg.solve(self.A.T, RXw)


@dataclass(frozen=True)
class TermBasis:
    """Working columns of one random-effect term: ``Z_w = Z A_z``; ``Ainv = A_z^-1`` multiplies ``T``."""

    intercept: int | None
    centres: np.ndarray  # (q,)
    scales: np.ndarray  # (q,)

    @classmethod
    def from_rows(cls, Zraw: np.ndarray) -> TermBasis:
        """Centres and scales from these rows of the term's columns."""
        q = Zraw.shape[1]
        j0 = intercept_column(Zraw) if q > 1 else None
        m = column_centres(Zraw, j0)
        s = np.array([1.0 if j == j0 else _rms(Zraw[:, j] - m[j]) for j in range(q)])
        return cls(j0, m, s)

    @classmethod
    def identity(cls, q: int) -> TermBasis:
        return cls(None, np.zeros(q), np.ones(q))

    @property
    def q(self) -> int:
        return self.scales.shape[0]

    @property
    def is_identity(self) -> bool:
        return self.intercept is None and bool(np.all(self.scales == 1.0))

    def apply(self, Zraw: np.ndarray) -> np.ndarray:
        """``Z_w`` for these rows (a new array)."""
        return (Zraw - self.centres[None, :]) / self.scales[None, :]

    @property
    def Ainv(self) -> np.ndarray:
        """``A_z^-1 = S (I + e_0 m')``: ``Lambda_w = A_z^-1 Lambda`` acts on the working columns."""
        M = np.eye(self.q)
        if self.intercept is not None:
            M[self.intercept, :] += self.centres
        return self.scales[:, None] * M

    def to_working(self, T: np.ndarray) -> np.ndarray:
        """Lower-triangular ``T_w`` with ``T_w T_w' = A_z^-1 T T' A_z^-T``."""
        return _lower_factor(self.Ainv @ T)

    def from_working(self, Tw: np.ndarray) -> np.ndarray:
        """Lower-triangular ``T`` (non-negative diagonal) with ``T T' = A_z T_w T_w' A_z'``."""
        return _lower_factor(np.linalg.solve(self.Ainv, Tw))


def _lower_factor(B: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with non-negative diagonal and ``L L' = B B'`` (QR of ``B'``; any rank)."""
    q = B.shape[0]
    if q == 1:
        return np.abs(B)
    _, R = np.linalg.qr(B.T)
    L = R.T
    sign = np.where(np.diag(L) < 0, -1.0, 1.0)
    return L * sign[None, :]
