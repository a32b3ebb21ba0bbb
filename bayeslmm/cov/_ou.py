"""``ou(t | g)``: an Ornstein-Uhlenbeck process in continuous time plus a measurement error (nugget).

``R_i[j, k] = process_var rho^|t_ij - t_ik| + sigma2 [j = k]`` (nlme's ``corExp(form = ~ t | g,
nugget = TRUE)`` with ``rho = exp(-1 / range)``; ``sigma2`` is the nugget). The optimiser sees
``decay = -gap log rho`` (the log-correlation over the median gap between successive times of a
group, so that its scale does not depend on the unit of ``t``) and ``nu``, the nugget's share of
``s^2 = process_var + nugget``. Markov: the Kalman filter runs in O(n_i).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._base import MarkovStructure, PriorSpec, Rows, sd_prior
from ._lags import identity_like, power, power_derivative

#: upper bound of ``decay``: a correlation of exp(-50) over the median gap is rho = 0 in effect
DECAY_MAX = 50.0


def median_gap(t: np.ndarray, codes: np.ndarray) -> float:
    """Median positive gap between successive times within groups (1 if there is none)."""
    if t.size < 2:
        return 1.0
    order = np.lexsort((t, codes))
    ts, cs = t[order], codes[order]
    gaps = np.diff(ts)[np.diff(cs) == 0]
    pos = gaps[gaps > 0]
    return float(np.median(pos)) if pos.size else 1.0


class OrnsteinUhlenbeck(MarkovStructure):
    """OU process plus nugget (module docstring)."""

    name = "ou"
    description = "Ornstein-Uhlenbeck process in time t within g, plus measurement error"
    param_names = ("decay (-log rho per median gap)", "nu")
    process_keys = ("process_var", "rho")
    residual_key = "nugget"
    kalman_closed_form: ClassVar[bool] = False

    def __init__(self, gap: float = 1.0) -> None:
        self.gap = float(gap)

    @classmethod
    def bind(cls, rows: Rows) -> OrnsteinUhlenbeck:
        return cls(median_gap(rows.t, rows.codes))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``decay = 0`` is ``rho = 1``, ``DECAY_MAX`` is ``rho ~ 0``; ``nu`` in [0, 1]."""
        return np.array([0.0, 0.0]), np.array([DECAY_MAX, 1.0])

    def start_values(self) -> list[np.ndarray]:
        """Correlation at the median gap 0.3, 0.7 or 0.95, nugget share 0.2 or 0.5."""
        return [np.array([-np.log(c), nu]) for c in (0.3, 0.7, 0.95) for nu in (0.2, 0.5)]

    def markov_process(self, psi: np.ndarray) -> tuple[float, float, float]:
        decay, nu = float(psi[0]), float(psi[1])
        return float(np.exp(-decay / self.gap)), 1.0 - nu, nu

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        rho, var_w, kappa = self.markov_process(psi)
        return {"process_var": scale2 * var_w, "rho": rho, "sigma2": scale2 * kappa}

    def lag_matrix(self, lag: Any, nat: dict[str, Any], xp: Any = np) -> Any:
        return nat["process_var"] * power(xp, nat["rho"], lag) + nat["sigma2"] * identity_like(lag)

    def lag_derivatives(self, lag: np.ndarray, nat: dict[str, float]) -> dict[str, np.ndarray]:
        P = np.power(nat["rho"], lag)
        return {
            "process_var": P,
            "rho": nat["process_var"] * power_derivative(nat["rho"], lag),
            "sigma2": np.broadcast_to(identity_like(lag), np.shape(lag)),
        }

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        return [
            f"Serial process: Ornstein-Uhlenbeck in {time} within {group}, plus a nugget "
            "(the Residual row above is the nugget)",
            f" process variance {fmt(rp['process_var'])}, rho {fmt(rp['rho'])} per unit of "
            f"{time}, nugget {fmt(rp['nugget'])}",
        ]

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        return {
            "sd_process": sd_prior(sd_scale),
            "rho": PriorSpec("Uniform", {"lower": 0, "upper": 1}, (-0.5, 1.5), (0.5,), "(0, 1)"),
        }

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        return {"process_var": draws["sd_process"] ** 2, "rho": draws["rho"], "sigma2": sigma2}
