"""The interface of a residual covariance structure ``R_i(psi)`` within the levels of a grouping factor.

One subclass per structure (``ou``, ``ar1``, ``cs``, ...), registered by its ``name``; the formula
``name(t | g)`` finds it (:func:`residual_structure`). A structure knows

* its parameters as the optimiser sees them (``param_names``, bounds, start values) and their
  natural values (:meth:`natural`: ``sigma2``, the variance of the "Residual" row, and the
  ``process_keys``), relative to the profiled scale ``s^2`` (``V = s^2 V_rel``);
* the matrix of one group (:meth:`matrix`), written once for NumPy and PyTensor (``xp`` is the
  module), and its derivatives in the natural parameters (the expected information);
* where one exists, its Markov factorisation (a :class:`MarkovStructure`, with
  :meth:`~MarkovStructure.markov_process`), which the engines use for an O(n_i) Kalman path instead
  of the dense per-group Cholesky;
* its PyMC priors and how they map to the natural parameters, and its lines of the summary.

Lags: ``lag[j, k] = |t_ij - t_ik|`` in the time column, or ``|j - k|`` in the order of time within
the group for structures with ``by_order`` (nlme's ``corAR1``). The diagonal of a matrix comes from
an identity, never from ``lag == 0``: two observations at one time are two observations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

#: the structures by name (filled by the subclasses)
STRUCTURES: dict[str, type[ResidualStructure]] = {}


@dataclass(frozen=True)
class PriorSpec:
    """A default prior as data: a PyMC distribution name, its keyword arguments and its required support.

    ``outside``/``inside`` are points a user's replacement must give zero / positive density
    (``need`` says the support in words, for the error message).
    """

    dist: str
    params: dict[str, float]
    outside: tuple[float, ...]
    inside: tuple[float, ...]
    need: str


SD_SUPPORT = ((-1.0,), (0.5,), "the positive numbers")


def sd_prior(scale: float) -> PriorSpec:
    """``HalfNormal(scale)``: the default prior of a standard deviation."""
    return PriorSpec("HalfNormal", {"sigma": float(scale)}, *SD_SUPPORT)


class ResidualStructure(ABC):
    """A covariance structure of the residual within each level of a grouping factor.

    Instances are bound to the data's constants that the parameterisation needs (a time unit,
    the largest group), through :meth:`bind`; otherwise they hold no data.
    """

    #: the name in formulas, ``name(t | g)``
    name: ClassVar[str]
    #: one line for error messages and docs
    description: ClassVar[str]
    #: parameters as the optimiser sees them, after the random-effect factors
    param_names: ClassVar[tuple[str, ...]]
    #: natural parameters besides ``sigma2``, in the order of ``residual_params()`` and of the
    #: posterior's ``process`` variable
    process_keys: ClassVar[tuple[str, ...]]
    #: the name ``residual_params()`` gives ``sigma2`` (the Residual row of ``varcorr()``)
    residual_key: ClassVar[str] = "sigma2"
    #: lags by position within the group (not by time)
    by_order: ClassVar[bool] = False
    #: the correlation is defined at any time, so a prediction at a new time is (see :meth:`check_new_times`)
    continuous_time: ClassVar[bool] = True
    #: a random intercept on the structure's factor is not identifiable next to it (it adds the same
    #: covariance to every pair of a group's observations, which the structure already has)
    confounded_with_intercept: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            STRUCTURES[cls.name] = cls

    @classmethod
    def bind(cls, t: np.ndarray, codes: np.ndarray, nlevels: int) -> ResidualStructure:
        """The structure for these rows (``t`` time, ``codes`` level of each row)."""
        return cls()

    # -- the optimiser's parameters --------------------------------------------
    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the parameters."""

    @abstractmethod
    def start_values(self) -> list[np.ndarray]:
        """A few starting points; the engine evaluates each and starts from the best."""

    @abstractmethod
    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        """``{"sigma2": ..., **process_keys}`` at the optimiser's ``psi`` and scale ``s^2``."""

    # -- the matrix ---------------------------------------------------------------
    @abstractmethod
    def matrix(self, lag: Any, nat: dict[str, Any], xp: Any = np) -> Any:
        """``(..., s, s)`` covariance of one group's residuals from the lags and natural parameters.

        ``xp`` is :mod:`numpy` or :mod:`pytensor.tensor` (``nat`` then holds tensors).
        """

    @abstractmethod
    def derivatives(self, lag: np.ndarray, nat: dict[str, float]) -> dict[str, np.ndarray]:
        """``d matrix / d nat[k]`` for ``sigma2`` and each of ``process_keys`` (NumPy)."""

    # -- reporting ------------------------------------------------------------------
    def residual_params(self, psi: np.ndarray, scale2: float) -> dict[str, Any]:
        """``{"kind": name, *process_keys, residual_key: sigma2}`` at the estimate."""
        nat = self.natural(psi, scale2)
        return {"kind": self.name, **{k: nat[k] for k in self.process_keys}, self.residual_key: nat["sigma2"]}

    @abstractmethod
    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        """Lines of the summary under the random effects (``fmt`` formats a number)."""

    def check_new_times(self) -> None:
        """Raise ``ValueError`` with what to do where a prediction at new times is not defined.

        The default: defined (a structure of the lags alone), nothing to raise.
        """
        return None

    # -- the PyMC path ----------------------------------------------------------------
    @abstractmethod
    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        """Default priors of the parameters besides ``sigma`` (keys of ``build_model(priors=...)``)."""

    @abstractmethod
    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        """Natural parameters from the variables of :meth:`priors` and ``sigma^2`` (NumPy or PyTensor)."""


class MarkovStructure(ResidualStructure):
    """A residual structure with a Markov factorisation: ``R = var_w P + kappa I`` relative to ``s^2``,
    ``P`` a stationary AR(1)-type correlation decaying by ``decay`` per unit of lag (OU, AR(1)), so the
    Kalman filter whitens a group in O(n_i)."""

    #: whiten in closed form (no measurement error in the state)
    kalman_closed_form: ClassVar[bool] = False

    @abstractmethod
    def markov_process(self, psi: np.ndarray) -> tuple[float, float, float]:
        """``(decay, var_w, kappa)`` at the optimiser's ``psi``."""


def residual_structure(name: str) -> type[ResidualStructure] | None:
    """The structure class of ``name`` (``None`` if there is none)."""
    return STRUCTURES.get(name)
