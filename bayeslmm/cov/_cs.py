"""``cs(t | g)``: compound symmetry within ``g`` (nlme's ``corCompSymm(form = ~ 1 | g)``).

``R_i = sigma2 ((1 - rho) I + rho 1 1')``: every pair of observations of a group has correlation
``rho``, whatever their times (``t`` names the time column only for the syntax shared with the
serial structures). ``R_i`` is positive definite for ``-1 / (n_i - 1) < rho < 1``, so the lower
bound comes from the largest group, as in nlme. Not Markov: the engines use the dense per-group
Cholesky.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import LagStructure, PriorSpec, Rows
from ._lags import identity_like

#: distance kept from the bounds of rho
EDGE = 1e-8


class CompoundSymmetry(LagStructure):
    """Compound symmetry (module docstring)."""

    name = "cs"
    description = "compound symmetry within g: one correlation rho between any two observations of a group"
    param_names = ("rho",)
    process_keys = ("rho",)
    confounded_with_intercept = True
    lhs = "any"

    def __init__(self, nmax: int = 2) -> None:
        self.nmax = int(nmax)

    @classmethod
    def bind(cls, rows: Rows) -> CompoundSymmetry:
        sizes = np.bincount(rows.codes, minlength=rows.nlevels)
        return cls(int(sizes.max()) if sizes.size else 1)

    @property
    def rho_lower(self) -> float:
        """``-1 / (n_max - 1)``: the smallest correlation for which the largest group's ``R_i`` is PD."""
        return -1.0 / (self.nmax - 1) if self.nmax > 1 else -1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.rho_lower + EDGE]), np.array([1.0 - EDGE])

    def start_values(self) -> list[np.ndarray]:
        return [np.array([r]) for r in (0.0, 0.3, 0.7) if r > self.rho_lower]

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        return {"rho": float(psi[0]), "sigma2": scale2}

    def lag_matrix(self, lag: Any, nat: dict[str, Any], xp: Any = np) -> Any:
        eye = identity_like(lag)
        rho = nat["rho"]
        return nat["sigma2"] * (rho * np.ones(np.shape(lag)) + (1.0 - rho) * eye)

    def lag_derivatives(self, lag: np.ndarray, nat: dict[str, float]) -> dict[str, np.ndarray]:
        eye = identity_like(lag)
        ones = np.ones(np.shape(lag))
        return {"rho": nat["sigma2"] * (ones - eye), "sigma2": nat["rho"] * ones + (1.0 - nat["rho"]) * eye}

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        var = rp.get(self.residual_key, rp.get("sigma2"))
        return [f"Compound symmetry within {group}: rho {fmt(rp['rho'])}, variance {fmt(var)}"]

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        lo = self.rho_lower
        return {
            "rho": PriorSpec("Uniform", {"lower": lo, "upper": 1}, (lo - 0.5, 1.5), ((lo + 1) / 2,), f"({lo:.4g}, 1)")
        }

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        return {"rho": draws["rho"], "sigma2": sigma2}
