"""The interface of a residual covariance structure ``R_i(psi)`` within the levels of a grouping factor.

One subclass per structure (``ou``, ``ar1``, ``cs``, ...), registered by its ``name``; the formula
``name(t | g)`` finds it (:func:`residual_structure`). A structure knows

* its parameters as the optimiser sees them (``param_names``, bounds, start values) and their
  natural values (:meth:`natural`: ``sigma2``, the variance of the "Residual" row, and the
  ``process_keys``), relative to the profiled scale ``s^2`` (``V = s^2 V_rel``);
* the matrix of one group (:meth:`matrix`), written once for NumPy and PyTensor (``xp`` is the
  module), from the per-row features of the group (:class:`Rows`: the time, the visit, the
  coordinates, ...), and its derivatives in the natural parameters (the expected information);
* where one exists, its Markov factorisation (a :class:`MarkovStructure`, with
  :meth:`~MarkovStructure.markov_process`), which the engines use for an O(n_i) Kalman path instead
  of the dense per-group Cholesky;
* its PyMC priors and how they map to the natural parameters, and its lines of the summary.

Features: the engines hand :meth:`matrix` a dict of arrays gathered group by group, ``(..., s)``
per row (``(..., s, d)`` for coordinates), the rows of a group in the order of ``t`` (so the
position in a group is ``arange(s)``): ``"t"`` the time (the visit index for structures by visit),
``"visit"`` the visit's code, ``"coords"`` the coordinates, and what wrappers add (``"stratum"``,
``"vf"``). Features are data (NumPy), never parameters. Lag structures (:class:`LagStructure`)
read ``lag[j, k] = |t_ij - t_ik|``, or ``|j - k|`` for structures with ``by_order`` (nlme's
``corAR1``). The diagonal of a matrix comes from an identity, never from ``lag == 0``: two
observations at one time are two observations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Rows:
    """What a structure may learn from the rows when it is bound (:meth:`ResidualStructure.bind`).

    ``feats`` the per-row features (see the module docstring), ``codes`` the group of each row,
    ``nlevels`` the number of groups, ``labels`` the level labels of factor features (``"visit"``:
    the visit levels in their order), ``options`` the structure's options from the formula
    (``nugget=false``).
    """

    feats: dict[str, np.ndarray]
    codes: np.ndarray
    nlevels: int
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def t(self) -> np.ndarray:
        return self.feats["t"]


def sd_prior(scale: float) -> PriorSpec:
    """``HalfNormal(scale)``: the default prior of a standard deviation."""
    return PriorSpec("HalfNormal", {"sigma": float(scale)}, *SD_SUPPORT)


def central_contraction(fun: Any, G: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """``sum(G * d fun / d psi_k)`` for each ``k`` by central differences (step ``1e-6 max(|psi_k|, 0.1)``)."""
    psi = np.asarray(psi, dtype=float)
    out = np.zeros(psi.size)
    for k in range(psi.size):
        h = 1e-6 * max(abs(psi[k]), 1e-1)
        hi, lo = psi.copy(), psi.copy()
        hi[k] += h
        lo[k] -= h
        out[k] = float(np.sum(G * (fun(hi) - fun(lo)))) / (2 * h)
    return out


class ResidualStructure(ABC):
    """A covariance structure of the residual within each level of a grouping factor.

    Instances are bound to the data's constants that the parameterisation needs (a time unit,
    the largest group), through :meth:`bind`; otherwise they hold no data.
    """

    #: the name in formulas, ``name(t | g)``
    name: ClassVar[str]
    #: one line for error messages and docs
    description: ClassVar[str]
    #: what the left of ``|`` names: ``"time"`` (a numeric column), ``"visit"`` (a factor whose
    #: levels index the matrix), ``"coords"`` (one or more numeric columns, Euclidean distance) or
    #: ``"any"`` (a column for the syntax only)
    lhs: str = "time"
    #: options the formula may give, ``name(t | g, key=value)``, with their defaults
    options: ClassVar[dict[str, Any]] = {}
    #: parameters as the optimiser sees them, after the random-effect factors (an instance may set
    #: them when they depend on the data, e.g. the number of visits)
    param_names: tuple[str, ...] = ()
    #: natural parameters besides ``sigma2``, in the order of ``residual_params()`` and of the
    #: posterior's ``process`` variable
    process_keys: tuple[str, ...] = ()
    #: the name ``residual_params()`` gives ``sigma2`` (the Residual row of ``varcorr()``)
    residual_key: str = "sigma2"
    #: lags by position within the group (not by time)
    by_order: bool = False
    #: the correlation is defined at any time, so a prediction at a new time is (see :meth:`check_new_times`)
    continuous_time: bool = True
    #: a random intercept on the structure's factor is not identifiable next to it (it adds the same
    #: covariance to every pair of a group's observations, which the structure already has)
    confounded_with_intercept: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("name"), str):  # a structure of its own (not a wrapper's property)
            STRUCTURES[cls.name] = cls

    @classmethod
    def bind(cls, rows: Rows) -> ResidualStructure:
        """The structure for these rows."""
        return cls()

    def check_rows(self, rows: Rows, what: str) -> None:
        """Raise ``ValueError`` saying what to do where the rows cannot identify the parameters
        (``what`` names the structure in the message). The default: nothing to check."""
        return None

    # -- the optimiser's parameters --------------------------------------------
    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the parameters."""

    @abstractmethod
    def start_values(self) -> list[np.ndarray]:
        """A few starting points; the engine evaluates each and starts from the best."""

    def data_starts(self, rows: Rows, resid: np.ndarray) -> list[np.ndarray]:
        """Starting points from the residuals ``resid`` of ordinary least squares (none by default)."""
        return []

    @abstractmethod
    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        """``{"sigma2": ..., **process_keys}`` at the optimiser's ``psi`` and scale ``s^2``."""

    # -- the matrix ---------------------------------------------------------------
    @abstractmethod
    def matrix(self, feats: dict[str, np.ndarray], nat: dict[str, Any], xp: Any = np) -> Any:
        """``(..., s, s)`` covariance of one group's residuals from its features and the natural parameters.

        ``xp`` is :mod:`numpy` or :mod:`pytensor.tensor` (``nat`` then holds tensors).
        """

    def derivatives(self, feats: dict[str, np.ndarray], nat: dict[str, float]) -> dict[str, np.ndarray]:
        """``d matrix / d nat[k]`` for ``sigma2`` and each of ``process_keys`` (NumPy).

        The default takes central differences (exact for parameters the matrix is linear in, about
        1e-10 relative otherwise): enough for the expected information.
        """
        out = {}
        for k in ("sigma2", *self.process_keys):
            v = float(nat[k])
            h = 1e-6 * max(abs(v), 1e-2)
            hi, lo = dict(nat), dict(nat)
            hi[k], lo[k] = v + h, v - h
            out[k] = (self.matrix(feats, hi) - self.matrix(feats, lo)) / (2 * h)
        return out

    def gradient(self, feats: dict[str, np.ndarray], G: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """``sum_i tr(G_i dR_i/dpsi_k)`` for each optimiser parameter ``psi_k`` (``R`` at scale 1).

        ``G`` ``(..., s, s)`` symmetric, one per group of ``feats``. The default takes central
        differences of :meth:`matrix` in ``psi``; a structure with a cheaper form overrides it.
        """
        return central_contraction(lambda p: self.matrix(feats, self.natural(p, 1.0)), G, psi)

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        """The structure's estimates for ``fit --json`` (``residual``), in the parameterisation of the
        docs; the default: the natural parameters."""
        return {k: nat[k] for k in self.process_keys} | {self.residual_key: nat["sigma2"]}

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
        """Natural parameters from the variables of :meth:`pymc_variables` and ``sigma^2`` (NumPy or PyTensor).

        Every key of ``process_keys`` and ``sigma2`` (the posterior's ``process`` holds them all).
        """

    def pymc_variables(
        self, rv: Callable[[str], Any], sd_scale: float, lkj_eta: float, suffix: str = ""
    ) -> dict[str, Any]:
        """The structure's variables in the PyMC model being built (called inside its context), by the
        keys :meth:`natural_from_draws` reads.

        ``rv(key)`` makes the model variable of a key of :meth:`priors` (named ``key``, with its default
        prior or the user's replacement). ``suffix`` ends the names of a wrapper's part (``" [arm]"``,
        :class:`~bayeslmm.cov.Stratified`): the part's prior ``k`` is ``rv(k + suffix)``, and variables
        made here without ``rv`` end in ``suffix`` too; the returned keys are the part's own. The
        default: one scalar variable per key of :meth:`priors`. A structure with a prior that is not a
        scalar distribution makes it here (``us``: an LKJ correlation of ``lkj_eta``, the
        ``build_model`` argument); the model builder needs no edit for it.
        """
        return {k: rv(k + suffix) for k in self.priors(sd_scale)}


class LagStructure(ResidualStructure):
    """A structure of the lags ``|t_j - t_k|`` (or ``|j - k|`` with ``by_order``) within a group."""

    def lags(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """``(..., s, s)`` lags of the rows of each group (rows in time order)."""
        t = feats["t"]
        if self.by_order:
            src = np.broadcast_to(np.arange(t.shape[-1], dtype=float), t.shape)
        else:
            src = t
        return np.abs(src[..., :, None] - src[..., None, :])

    def matrix(self, feats: dict[str, np.ndarray], nat: dict[str, Any], xp: Any = np) -> Any:
        return self.lag_matrix(self.lags(feats), nat, xp)

    def derivatives(self, feats: dict[str, np.ndarray], nat: dict[str, float]) -> dict[str, np.ndarray]:
        return self.lag_derivatives(self.lags(feats), nat)

    @abstractmethod
    def lag_matrix(self, lag: Any, nat: dict[str, Any], xp: Any = np) -> Any:
        """``(..., s, s)`` covariance from the lags (see :meth:`matrix`)."""

    @abstractmethod
    def lag_derivatives(self, lag: np.ndarray, nat: dict[str, float]) -> dict[str, np.ndarray]:
        """``d matrix / d nat[k]`` from the lags (see :meth:`derivatives`)."""


class MarkovStructure(LagStructure):
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
