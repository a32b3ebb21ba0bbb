"""Spatial structures: ``exp(x + y | g)``, ``gau(x + y | g)``, ``sph(x + y | g)``, in nlme's parameterisation.

With the Euclidean distance ``d`` between two observations of a group (from one or more coordinate
columns) and a correlation function ``c(d; range)``::

    R_i[j, k] = sill ((1 - nugget) c(d_jk) + nugget [j = k])

* ``exp``: ``c = exp(-d / range)`` (nlme's ``corExp``),
* ``gau``: ``c = exp(-(d / range)^2)`` (``corGaus``),
* ``sph``: ``c = 1 - 1.5 (d / range) + 0.5 (d / range)^3`` for ``d < range``, else 0 (``corSpher``),

``nugget`` the nugget's share of the variance, as nlme's ``nugget = TRUE`` reports it (``sill`` is
nlme's ``sigma^2``); ``exp(x + y | g, nugget=false)`` fixes it at 0. A single group over the whole
field is ``| 1``. The optimiser sees ``log(range / d0)`` (``d0`` the median distance between two
observations of a group, so neither the unit nor a shift of the coordinates changes its path) and
``nugget``. Not Markov: the engines use the dense per-group Cholesky, ``O(n_i^3)``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from ._base import PriorSpec, ResidualStructure, Rows

#: bounds of log(range / d0)
LOG_RANGE_MAX = 12.0
#: largest nugget share (1 is white noise, where the range is not identified)
NUGGET_MAX = 1.0 - 1e-6
#: pairs of rows sampled for the typical distance of large groups
SAMPLE_PAIRS = 200_000


def distances(coords: np.ndarray) -> np.ndarray:
    """``(..., s, s)`` Euclidean distances between the rows of ``(..., s, d)`` coordinates."""
    diff = coords[..., :, None, :] - coords[..., None, :, :]
    return np.sqrt(np.einsum("...d,...d->...", diff, diff))


def typical_distance(coords: np.ndarray, codes: np.ndarray) -> float:
    """Median positive distance between two observations of one group (1 if there is none)."""
    rng = np.random.default_rng(0)
    n = codes.size
    if n < 2:
        return 1.0
    if n * n <= SAMPLE_PAIRS:
        i, j = np.triu_indices(n, 1)
    else:
        i, j = rng.integers(0, n, SAMPLE_PAIRS), rng.integers(0, n, SAMPLE_PAIRS)
    keep = codes[i] == codes[j]
    d = np.sqrt(((coords[i[keep]] - coords[j[keep]]) ** 2).sum(axis=1))
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


class SpatialStructure(ResidualStructure):
    """The common part of the spatial structures (module docstring)."""

    lhs = "coords"
    options = {"nugget": True}
    residual_key = "sill"

    def __init__(self, d0: float = 1.0, nugget: bool = True) -> None:
        self.d0 = float(d0)
        self.nugget = bool(nugget)
        self.param_names = ("log(range / d0)", "nugget") if self.nugget else ("log(range / d0)",)
        self.process_keys = ("range", "nugget") if self.nugget else ("range",)

    @classmethod
    def bind(cls, rows: Rows) -> SpatialStructure:
        nug = rows.options.get("nugget", True)
        return cls(typical_distance(rows.feats["coords"], rows.codes), nugget=bool(nug))

    @abstractmethod
    def correlation(self, d: np.ndarray, range_: Any, xp: Any) -> Any:
        """``c(d; range)``."""

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.nugget:
            return np.array([-LOG_RANGE_MAX, 0.0]), np.array([LOG_RANGE_MAX, NUGGET_MAX])
        return np.array([-LOG_RANGE_MAX]), np.array([LOG_RANGE_MAX])

    def start_values(self) -> list[np.ndarray]:
        ranges = (-1.0, 0.0, 1.0)
        if self.nugget:
            return [np.array([r, nu]) for r in ranges for nu in (0.1, 0.4)]
        return [np.array([r]) for r in ranges]

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        out = {"range": self.d0 * float(np.exp(psi[0])), "sigma2": scale2}
        if self.nugget:
            out["nugget"] = float(psi[1])
        return out

    def _distances(self, coords: np.ndarray) -> np.ndarray:
        """:func:`distances`, kept for the last few coordinate arrays seen (the engines pass the same
        arrays at every evaluation)."""
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = self.__dict__.setdefault("_dist_cache", {})
        hit = cache.get(id(coords))
        if hit is not None and hit[0] is coords:
            return hit[1]
        d = distances(np.asarray(coords, dtype=float))
        if len(cache) > 8:
            cache.clear()
        cache[id(coords)] = (coords, d)
        return d

    def matrix(self, feats: dict[str, np.ndarray], nat: dict[str, Any], xp: Any = np) -> Any:
        d = self._distances(feats["coords"])
        eye = np.eye(d.shape[-1])
        c = self.correlation(d, nat["range"], xp)
        if self.nugget:
            nug = nat["nugget"]
            return nat["sigma2"] * ((1 - nug) * c * (1 - eye) + eye)
        return nat["sigma2"] * (c * (1 - eye) + eye)

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        return {"range": nat["range"], "nugget": nat.get("nugget", 0.0), "sill": nat["sigma2"]}

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        where = "over the whole field" if group == "1" else f"within {group}"
        return [
            f"Spatial correlation {self.name}({time} | {group}) {where} (the Residual row is the sill):",
            f" range {fmt(rp['range'])}, nugget {fmt(rp.get('nugget', 0.0))} (share of the sill), "
            f"sill {fmt(rp['sill'])}",
        ]

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        """``range ~ LogNormal(log d0, 1)`` and ``nugget ~ Beta(1, 2)`` (the sill is ``sigma^2``).

        The range is identified only between the smallest and the largest distance within a group
        (far below, every correlation is 0; far above, every one is 1 and, without a nugget, the matrix
        is numerically singular): the prior is centred at the typical distance ``d0`` (the median
        distance between two observations of a group), with 95% of its mass within ``d0 / 7`` and
        ``7 d0``, so the correlation at ``d0`` of ``exp`` is between about 0.001 and 0.87. The
        nugget's share of the sill gets a density falling linearly from 2 at 0 to 0 at 1 (mean 1/3): a
        field without measurement error is allowed, pure noise (where the range is not identified) is
        not favoured.
        """
        out = {
            "range": PriorSpec(
                "LogNormal",
                {"mu": float(np.log(self.d0)), "sigma": 1.0},
                (-1.0, 0.0),
                (self.d0,),
                "the positive numbers",
            )
        }
        if self.nugget:
            out["nugget"] = PriorSpec("Beta", {"alpha": 1.0, "beta": 2.0}, (-0.5, 1.5), (0.3,), "(0, 1)")
        return out

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        out = {"range": draws["range"], "sigma2": sigma2}
        if self.nugget:
            out["nugget"] = draws["nugget"]
        return out


class Exponential(SpatialStructure):
    """``exp``: ``exp(-d / range)`` (nlme's ``corExp``)."""

    name = "exp"
    description = "exponential spatial correlation in the distance between coordinates, with a nugget"

    def correlation(self, d: np.ndarray, range_: Any, xp: Any) -> Any:
        return xp.exp(-d / range_)


class Gaussian(SpatialStructure):
    """``gau``: ``exp(-(d / range)^2)`` (nlme's ``corGaus``)."""

    name = "gau"
    description = "Gaussian spatial correlation in the distance between coordinates, with a nugget"

    def correlation(self, d: np.ndarray, range_: Any, xp: Any) -> Any:
        return xp.exp(-((d / range_) ** 2))


class Spherical(SpatialStructure):
    """``sph``: the spherical correlation, 0 beyond the range (nlme's ``corSpher``)."""

    name = "sph"
    description = "spherical spatial correlation in the distance between coordinates, with a nugget"

    def correlation(self, d: np.ndarray, range_: Any, xp: Any) -> Any:
        u = d / range_
        return xp.where(u < 1.0, 1.0 - 1.5 * u + 0.5 * u**3, 0.0)
