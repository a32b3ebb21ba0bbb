"""The covariance of a random-effect term: unstructured, in lme4's parameterisation.

``D_k = sigma^2 T_k T_k'`` with ``T_k`` lower triangular; ``theta`` holds the lower triangle
column by column (lme4's order). The variance components are reported as R's
``as.data.frame(VarCorr(fit))``: the variances, then the covariances column by column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Unstructured:
    """The ``q x q`` unstructured covariance of a term with columns ``coef_names``."""

    coef_names: tuple[str, ...]

    @property
    def q(self) -> int:
        return len(self.coef_names)

    @property
    def ntheta(self) -> int:
        """Number of parameters: the lower triangle of ``T_k``."""
        return self.q * (self.q + 1) // 2

    def theta_pairs(self) -> list[tuple[int, int]]:
        """``(row, column)`` of ``T_k`` of each parameter, column by column."""
        return [(i, j) for j in range(self.q) for i in range(j, self.q)]

    def theta_lower(self) -> np.ndarray:
        """0 for the diagonal of ``T_k`` (a standard deviation), -inf elsewhere."""
        return np.array([0.0 if i == j else -np.inf for i, j in self.theta_pairs()])

    def theta_names(self, term: str) -> list[str]:
        """lme4's names: ``"Subject.(Intercept)"``, ``"Subject.Days.(Intercept)"``."""
        c = self.coef_names
        return [f"{term}.{c[i]}" if i == j else f"{term}.{c[i]}.{c[j]}" for i, j in self.theta_pairs()]

    def components(self) -> list[tuple[int, int]]:
        """``(a, b)`` entries of ``D_k`` in ``varcorr()`` order: the variances, then the covariances by column."""
        q = self.q
        return [(a, a) for a in range(q)] + [(j, i) for j in range(q) for i in range(j + 1, q)]

    def component_names(self) -> list[tuple[str, str | None]]:
        """``(var1, var2)`` of each component (``var2`` None for a variance)."""
        c = self.coef_names
        return [(c[a], None if a == b else c[b]) for a, b in self.components()]

    def labels(self, term: str) -> list[str]:
        """``grp|var1|var2`` labels (the PyMC ``component`` coordinate)."""
        return [f"{term}|{v1}" if v2 is None else f"{term}|{v1}|{v2}" for v1, v2 in self.component_names()]

    def component_values(self, D: np.ndarray) -> list[tuple[float, float]]:
        """``(vcov, sdcor)`` per component of ``D``: variance and sd, or covariance and correlation."""
        sd = np.sqrt(np.diag(D))
        out = []
        for a, b in self.components():
            if a == b:
                out.append((float(D[a, a]), float(sd[a])))
            else:
                denom = sd[a] * sd[b]
                out.append((float(D[a, b]), float(D[a, b] / denom) if denom > 0 else np.nan))
        return out
