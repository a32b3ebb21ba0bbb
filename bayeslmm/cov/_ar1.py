"""``ar1(t | g)``: AR(1) errors by the order of ``t`` within ``g`` (nlme's ``corAR1``).

``R_i[j, k] = sigma2 phi^|j - k|`` for the j-th and k-th observation of the group in time order
(the spacing of ``t`` plays no role). Markov, without measurement error: the whitening is in
closed form, ``(e_t - phi e_{t-1}) / sqrt(1 - phi^2)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._base import MarkovStructure, PriorSpec
from ._lags import as_array, identity_like, power_derivative

#: the correlation is kept inside (-PHI_MAX, PHI_MAX)
PHI_MAX = 1 - 1e-8


class AR1(MarkovStructure):
    """AR(1) by order (module docstring)."""

    name = "ar1"
    description = "AR(1) by the order of t within g"
    param_names = ("phi",)
    process_keys = ("phi",)
    by_order = True
    continuous_time = False
    kalman_closed_form: ClassVar[bool] = True

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-PHI_MAX]), np.array([PHI_MAX])

    def start_values(self) -> list[np.ndarray]:
        """phi 0, 0.4, 0.8 or 0.95: 0.95 for slowly varying series (growth curves), where a random
        intercept and a phi near 1 are nearly confounded and BOBYQA crawls along the valley from below."""
        return [np.array([phi]) for phi in (0.0, 0.4, 0.8, 0.95)]

    def markov_process(self, psi: np.ndarray) -> tuple[float, float, float]:
        return float(psi[0]), 1.0, 0.0

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        return {"phi": float(psi[0]), "sigma2": scale2}

    def lag_matrix(self, lag: Any, nat: dict[str, Any], xp: Any = np) -> Any:
        eye = np.broadcast_to(identity_like(lag).astype(bool), np.shape(lag))
        return nat["sigma2"] * xp.where(eye, 1.0, xp.power(nat["phi"], as_array(xp, lag)))

    def lag_derivatives(self, lag: np.ndarray, nat: dict[str, float]) -> dict[str, np.ndarray]:
        return {"phi": nat["sigma2"] * power_derivative(nat["phi"], lag), "sigma2": np.power(nat["phi"], lag)}

    def check_new_times(self) -> None:
        raise ValueError(
            "ar1() is defined by the order of the observations; predicting the process at new "
            "times needs a continuous-time process: use ou(t | g)"
        )

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        return [
            f"Serial process: AR(1) by order of {time} within {group} (the Residual row "
            f"above is its variance): phi {fmt(rp['phi'])}"
        ]

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        return {"phi": PriorSpec("Uniform", {"lower": -1, "upper": 1}, (-1.5, 1.5), (0.5, -0.5), "(-1, 1)")}

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        return {"phi": draws["phi"], "sigma2": sigma2}
