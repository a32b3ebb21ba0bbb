"""Variance functions and strata: structures made of other structures.

* :class:`Heteroscedastic`: ``R_i = W_i C_i W_i`` with ``C_i`` any structure's matrix and
  ``W_i = diag(w_ij)`` a variance function of the rows (nlme's ``weights = varFunc``):

  - ``ident(v)``: ``w = ratio[level of v]``, the first level's ratio 1 (``varIdent``),
  - ``power(x)``: ``w = |x|^delta`` (``varPower(form = ~ x)``),
  - ``exp(x)``: ``w = exp(delta x)`` (``varExp(form = ~ x)``);

  written ``variance="ident(visit)"``.
* :class:`Stratified`: a separate structure per level of a factor constant within groups
  (``us(visit | arm/id)``: one covariance matrix per arm, mmrm's grouped covariance). The first
  stratum's variance is the scale ``s^2``; each other stratum adds the log ratio of its scale.
* :class:`Independent`: ``R_i = sigma2 I``, the base of a variance function without a structure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ._base import PriorSpec, ResidualStructure, Rows

#: bounds of a log ratio of standard deviations
LOG_RATIO_MAX = 20.0
#: bounds of the optimiser's power / exponent (delta times the covariate's scale)
DELTA_MAX = 20.0


class Independent(ResidualStructure):
    """``R_i = sigma2 I`` (for a variance function on independent errors)."""

    lhs = "any"
    description = "independent errors"

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(0), np.zeros(0)

    def start_values(self) -> list[np.ndarray]:
        return [np.zeros(0)]

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        return {"sigma2": scale2}

    def matrix(self, feats: dict[str, np.ndarray], nat: dict[str, Any], xp: Any = np) -> Any:
        s = np.shape(feats["t"])
        return nat["sigma2"] * np.broadcast_to(np.eye(s[-1]), (*s, s[-1]))

    def residual_params(self, psi: np.ndarray, scale2: float) -> dict[str, Any]:
        return {"kind": "iid", "sigma2": scale2}

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        return []

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        return {}

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        return {"sigma2": sigma2}


#: the variance functions by name (filled by the subclasses)
VARIANCE_FUNCTIONS: dict[str, type[VarianceFunction]] = {}


class VarianceFunction(ABC):
    """A variance function ``w(row; params)`` (module docstring)."""

    kind: ClassVar[str] = ""
    #: reads the levels of a factor (``ident``), not the values of a numeric covariate
    per_level: ClassVar[bool] = False
    param_names: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            VARIANCE_FUNCTIONS[cls.kind] = cls

    def __init__(self, column: str) -> None:
        self.column = column

    @classmethod
    def bind(cls, column: str, values: np.ndarray, levels: tuple[str, ...]) -> VarianceFunction:
        """The function of ``column`` for these rows (``values`` its codes or values, ``levels`` the
        labels of a factor); ``ValueError`` saying what to do where the rows do not allow it."""
        return cls(column)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.param_names)
        return np.full(k, -DELTA_MAX), np.full(k, DELTA_MAX)

    def start(self) -> np.ndarray:
        return np.zeros(len(self.param_names))

    @abstractmethod
    def natural(self, psi: np.ndarray) -> dict[str, float]:
        """The natural parameters (``keys``) at the optimiser's ``psi``."""

    @abstractmethod
    def weights(self, v: np.ndarray, nat: dict[str, Any], xp: Any) -> Any:
        """``(..., s)`` multipliers of the standard deviation of each row (``v`` the variance covariate)."""

    @abstractmethod
    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        """The estimates for ``fit --json``'s ``variance``."""

    def describe(self, rep: dict[str, Any], fmt: Any) -> str:
        """The summary's line from :meth:`report`'s ``rep``."""
        return f"Variance function {self}: delta {fmt(rep['delta'])}"

    @abstractmethod
    def priors(self) -> dict[str, PriorSpec]:
        """Default PyMC priors of the parameters (keys ``keys``): ``ident`` ``ratio(<level>) ~ LogNormal(0, 1)``
        (a ratio of sds between 1/7 and 7 with 95%), ``power`` ``delta ~ Normal(0, 1)``, ``exp``
        ``delta ~ Normal(0, 1 / sd(x))`` (``delta sd(x)``, the log sd ratio over one sd of ``x``, ~ N(0, 1))."""

    def natural_from_draws(self, draws: dict[str, Any]) -> dict[str, Any]:
        return {k: draws[k] for k in self.keys}

    def __str__(self) -> str:
        return f"{self.kind}({self.column})"


class VarIdent(VarianceFunction):
    """``ident(v)``: a standard deviation ratio per level of ``v`` (nlme's ``varIdent``), the first 1."""

    kind = "ident"
    per_level = True

    @classmethod
    def bind(cls, column: str, values: np.ndarray, levels: tuple[str, ...]) -> VarIdent:
        return cls(column, levels)

    def describe(self, rep: dict[str, Any], fmt: Any) -> str:
        vals = ", ".join(f"{k} {fmt(v)}" for k, v in rep["ratios"].items())
        return f"Variance function ident({self.column}): sd ratios {vals}"

    def __init__(self, column: str, levels: tuple[str, ...]) -> None:
        super().__init__(column)
        self.levels = tuple(levels)
        self.param_names = tuple(f"log sd ratio({lv})" for lv in self.levels[1:])
        self.keys = tuple(f"ratio({lv})" for lv in self.levels[1:])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.param_names)
        return np.full(k, -LOG_RATIO_MAX), np.full(k, LOG_RATIO_MAX)

    def natural(self, psi: np.ndarray) -> dict[str, float]:
        return {k: float(np.exp(v)) for k, v in zip(self.keys, psi)}

    def weights(self, v: np.ndarray, nat: dict[str, Any], xp: Any) -> Any:
        codes = np.asarray(v).astype(np.int64)
        r = [1.0, *(nat[k] for k in self.keys)]
        if xp is np:
            return np.asarray(r, dtype=float)[codes]
        return xp.stack([xp.as_tensor_variable(x) for x in r])[codes]

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        return {
            "kind": "ident",
            "column": self.column,
            "ratios": {self.levels[0]: 1.0} | {lv: nat[k] for lv, k in zip(self.levels[1:], self.keys)},
        }

    def priors(self) -> dict[str, PriorSpec]:
        return {
            k: PriorSpec("LogNormal", {"mu": 0.0, "sigma": 1.0}, (-1.0, 0.0), (1.0,), "the positive numbers")
            for k in self.keys
        }


class VarPower(VarianceFunction):
    """``power(x)``: ``w = |x|^delta`` (nlme's ``varPower(form = ~ x)``)."""

    kind = "power"

    @classmethod
    def bind(cls, column: str, values: np.ndarray, levels: tuple[str, ...]) -> VarPower:
        zero = int(np.sum(values == 0))
        if zero:
            raise ValueError(
                f"variance function power({column}): {zero} row(s) have {column} = 0, where |{column}|^delta is 0 "
                f"or infinite: use exp({column}) or shift the covariate"
            )
        return cls(column)

    param_names = ("delta",)
    keys = ("delta",)

    def natural(self, psi: np.ndarray) -> dict[str, float]:
        return {"delta": float(psi[0])}

    def weights(self, v: np.ndarray, nat: dict[str, Any], xp: Any) -> Any:
        a = np.abs(np.asarray(v, dtype=float))
        if xp is np:
            return np.power(a, nat["delta"])
        return xp.exp(nat["delta"] * np.log(a))

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        return {"kind": "power", "column": self.column, "delta": nat["delta"]}

    def priors(self) -> dict[str, PriorSpec]:
        return {"delta": PriorSpec("Normal", {"mu": 0.0, "sigma": 1.0}, (), (0.0,), "the real numbers")}


class VarExp(VarianceFunction):
    """``exp(x)``: ``w = exp(delta x)`` (nlme's ``varExp(form = ~ x)``). The optimiser sees ``delta sd(x)``."""

    kind = "exp"

    @classmethod
    def bind(cls, column: str, values: np.ndarray, levels: tuple[str, ...]) -> VarExp:
        return cls(column, float(np.std(values)))

    param_names = ("delta * sd(x)",)
    keys = ("delta",)

    def __init__(self, column: str, scale: float = 1.0) -> None:
        super().__init__(column)
        self.scale = float(scale) if scale > 0 else 1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-DELTA_MAX]), np.array([DELTA_MAX])

    def natural(self, psi: np.ndarray) -> dict[str, float]:
        return {"delta": float(psi[0]) / self.scale}

    def weights(self, v: np.ndarray, nat: dict[str, Any], xp: Any) -> Any:
        return xp.exp(nat["delta"] * np.asarray(v, dtype=float))

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        return {"kind": "exp", "column": self.column, "delta": nat["delta"]}

    def priors(self) -> dict[str, PriorSpec]:
        return {"delta": PriorSpec("Normal", {"mu": 0.0, "sigma": 1.0 / self.scale}, (), (0.0,), "the real numbers")}


class Heteroscedastic(ResidualStructure):
    """``R_i = W_i C_i W_i``: a structure ``base`` times a variance function (module docstring)."""

    def __init__(self, base: ResidualStructure, vf: VarianceFunction) -> None:
        self.base, self.vf = base, vf
        self.param_names = tuple(base.param_names) + vf.param_names
        self.process_keys = tuple(base.process_keys) + vf.keys
        self.residual_key = base.residual_key
        self.lhs = base.lhs
        self.by_order = base.by_order
        self.continuous_time = base.continuous_time
        self.confounded_with_intercept = base.confounded_with_intercept
        self._k = len(base.param_names)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name if not isinstance(self.base, Independent) else "iid"

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self.base.description}, variance function {self.vf}"

    def check_rows(self, rows: Rows, what: str) -> None:
        self.base.check_rows(rows, what)

    def check_new_times(self) -> None:
        self.base.check_new_times()

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.base.bounds()
        vlo, vhi = self.vf.bounds()
        return np.r_[lo, vlo], np.r_[hi, vhi]

    def start_values(self) -> list[np.ndarray]:
        return [np.r_[v, self.vf.start()] for v in self.base.start_values()]

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        psi = np.asarray(psi, dtype=float)
        return self.base.natural(psi[: self._k], scale2) | self.vf.natural(psi[self._k :])

    def matrix(self, feats: dict[str, np.ndarray], nat: dict[str, Any], xp: Any = np) -> Any:
        w = self.vf.weights(feats["vf"], nat, xp)
        return self.base.matrix(feats, nat, xp) * w[..., :, None] * w[..., None, :]

    def gradient(self, feats: dict[str, np.ndarray], G: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """``R = W C W``: the base's gradient at ``W G W``; the variance function's by central differences
        of ``w`` alone, ``tr(G dR) = 2 sum_jk G_jk dw_j C_jk w_k``."""
        psi = np.asarray(psi, dtype=float)
        nat = self.natural(psi, 1.0)
        w = self.vf.weights(feats["vf"], nat, np)
        ww = w[..., :, None] * w[..., None, :]
        out = np.zeros(psi.size)
        out[: self._k] = self.base.gradient(feats, G * ww, psi[: self._k])
        C = self.base.matrix(feats, nat)
        GCw = G * C * w[..., None, :]
        for k in range(self._k, psi.size):
            h = 1e-6 * max(abs(psi[k]), 1e-1)
            hi, lo = psi[self._k :].copy(), psi[self._k :].copy()
            hi[k - self._k] += h
            lo[k - self._k] -= h
            dw = (
                self.vf.weights(feats["vf"], self.vf.natural(hi), np)
                - self.vf.weights(feats["vf"], self.vf.natural(lo), np)
            ) / (2 * h)
            out[k] = 2.0 * float(np.sum(GCw * dw[..., :, None]))
        return out

    def residual_params(self, psi: np.ndarray, scale2: float) -> dict[str, Any]:
        nat = self.natural(psi, scale2)
        out = self.base.residual_params(np.asarray(psi)[: self._k], scale2)
        return out | {k: nat[k] for k in self.vf.keys}

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        return self.base.report(nat)

    def variance_report(self, nat: dict[str, float]) -> dict[str, Any]:
        """The variance function's estimates (``fit --json``'s ``variance``)."""
        return self.vf.report(nat)

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        lines = self.base.describe(time, group, rp, fmt)
        return [*lines, self.vf.describe(self.vf.report(rp), fmt)]

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        return self.base.priors(sd_scale) | self.vf.priors()

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        return self.base.natural_from_draws(draws, sigma2) | self.vf.natural_from_draws(draws)

    def pymc_variables(
        self, rv: Callable[[str], Any], sd_scale: float, lkj_eta: float, suffix: str = ""
    ) -> dict[str, Any]:
        """The base structure's variables, then the variance function's."""
        out = self.base.pymc_variables(rv, sd_scale, lkj_eta, suffix)
        return out | {k: rv(k + suffix) for k in self.vf.priors()}


class Stratified(ResidualStructure):
    """A structure per stratum (module docstring). Natural keys of stratum ``a`` end in ``" [a]"``;
    the first stratum's ``sigma2`` is the Residual row."""

    def __init__(self, bases: list[ResidualStructure], strata: tuple[str, ...], column: str) -> None:
        self.bases, self.strata, self.column = bases, tuple(strata), column
        b0 = bases[0]
        names: list[str] = [f"{p} [{strata[0]}]" for p in b0.param_names]
        keys: list[str] = [f"{k} [{strata[0]}]" for k in b0.process_keys]
        for b, a in zip(bases[1:], strata[1:]):
            names += [f"log scale ratio [{a}]", *(f"{p} [{a}]" for p in b.param_names)]
            keys += [f"sigma2 [{a}]", *(f"{k} [{a}]" for k in b.process_keys)]
        self.param_names, self.process_keys = tuple(names), tuple(keys)
        self.residual_key = b0.residual_key
        self.lhs = b0.lhs
        self.by_order = b0.by_order
        self.continuous_time = b0.continuous_time
        self.confounded_with_intercept = b0.confounded_with_intercept

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.bases[0].name

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self.bases[0].description}, one per level of {self.column}"

    def check_rows(self, rows: Rows, what: str) -> None:
        st = rows.feats["stratum"].astype(np.int64)
        for a, (b, label) in enumerate(zip(self.bases, self.strata)):
            keep = st == a
            sub = Rows(
                {k: v[keep] for k, v in rows.feats.items()}, rows.codes[keep], rows.nlevels, rows.labels, rows.options
            )
            b.check_rows(sub, f"{what} in {self.column} = {label!r}")

    def check_new_times(self) -> None:
        self.bases[0].check_new_times()

    def _slices(self) -> list[tuple[int, int, bool]]:
        """(start, stop, has a scale ratio) of each stratum's parameters in psi."""
        out, i = [], 0
        for a, b in enumerate(self.bases):
            extra = 1 if a else 0
            out.append((i, i + extra + len(b.param_names), bool(extra)))
            i += extra + len(b.param_names)
        return out

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo: list[np.ndarray] = []
        hi: list[np.ndarray] = []
        for a, b in enumerate(self.bases):
            bl, bh = b.bounds()
            if a:
                lo.append(np.array([-LOG_RATIO_MAX]))
                hi.append(np.array([LOG_RATIO_MAX]))
            lo.append(bl)
            hi.append(bh)
        return np.concatenate(lo), np.concatenate(hi)

    def start_values(self) -> list[np.ndarray]:
        firsts = [b.start_values() for b in self.bases]
        n = max(len(f) for f in firsts)
        out = []
        for j in range(n):
            parts: list[np.ndarray] = []
            for a, f in enumerate(firsts):
                if a:
                    parts.append(np.zeros(1))
                parts.append(f[min(j, len(f) - 1)])
            out.append(np.concatenate(parts))
        return out

    def stratum_natural(self, nat: dict[str, Any], a: int) -> dict[str, Any]:
        """Stratum ``a``'s natural parameters without the suffix."""
        label = self.strata[a]
        out = {k: nat[f"{k} [{label}]"] for k in self.bases[a].process_keys}
        out["sigma2"] = nat["sigma2"] if a == 0 else nat[f"sigma2 [{label}]"]
        return out

    def natural(self, psi: np.ndarray, scale2: float) -> dict[str, float]:
        psi = np.asarray(psi, dtype=float)
        out: dict[str, float] = {}
        for a, ((i, j, ratio), b, label) in enumerate(zip(self._slices(), self.bases, self.strata)):
            s2 = scale2 * float(np.exp(2 * psi[i])) if ratio else scale2
            nat = b.natural(psi[i + int(ratio) : j], s2)
            out |= {f"{k} [{label}]": nat[k] for k in b.process_keys}
            if a:
                out[f"sigma2 [{label}]"] = nat["sigma2"]
            else:
                out["sigma2"] = nat["sigma2"]
        return out

    def matrix(self, feats: dict[str, np.ndarray], nat: dict[str, Any], xp: Any = np) -> Any:
        st = np.asarray(feats["stratum"]).astype(np.int64)[..., :1, None]  # (..., 1, 1): the group's stratum
        total: Any = 0.0
        for a, b in enumerate(self.bases):
            mask = (st == a).astype(float)
            if not mask.any():
                continue
            total = total + mask * b.matrix(feats, self.stratum_natural(nat, a), xp)
        return total

    def gradient(self, feats: dict[str, np.ndarray], G: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """Stratum by stratum: ``R = c_a^2 R_a(psi_a)``, so the base's gradient times ``c_a^2`` and, for the
        log scale ratio, ``2 tr(G R)``."""
        psi = np.asarray(psi, dtype=float)
        st = np.asarray(feats["stratum"]).astype(np.int64)[..., 0]  # (...,) the group's stratum
        out = np.zeros(psi.size)
        for a, ((i, j, ratio), b) in enumerate(zip(self._slices(), self.bases)):
            keep = st == a
            if not keep.any():
                continue
            fa = {k: v[keep] for k, v in feats.items()}
            Ga = G[keep]
            c2 = float(np.exp(2 * psi[i])) if ratio else 1.0
            pa = psi[i + int(ratio) : j]
            out[i + int(ratio) : j] = c2 * b.gradient(fa, Ga, pa)
            if ratio:
                out[i] = 2.0 * c2 * float(np.sum(Ga * b.matrix(fa, b.natural(pa, 1.0))))
        return out

    def residual_params(self, psi: np.ndarray, scale2: float) -> dict[str, Any]:
        nat = self.natural(psi, scale2)
        return {"kind": self.name, **{k: nat[k] for k in self.process_keys}, self.residual_key: nat["sigma2"]}

    def report(self, nat: dict[str, float]) -> dict[str, Any]:
        return {
            "by": self.column,
            "strata": {
                label: self.bases[a].report(self.stratum_natural(nat, a)) for a, label in enumerate(self.strata)
            },
        }

    def describe(self, time: str, group: str, rp: dict[str, Any], fmt: Any) -> list[str]:
        nat = {k: v for k, v in rp.items() if k != "kind"} | {"sigma2": rp[self.residual_key]}
        lines: list[str] = []
        for a, label in enumerate(self.strata):
            sub = self.stratum_natural(nat, a)
            rep = self.bases[a].report(sub) | {"kind": self.name}
            lines.append(f"{self.column} = {label}:")
            lines += ["  " + x for x in self.bases[a].describe(time, group, rep, fmt)]
        return lines

    def priors(self, sd_scale: float) -> dict[str, PriorSpec]:
        """Each stratum's priors (keys ending in ``" [<stratum>]"``) and, for each stratum after the first,
        ``sigma [<stratum>] ~ HalfNormal(sd_scale)``, the sd of its first variance (its ``sigma``)."""
        out: dict[str, PriorSpec] = {}
        for a, (b, label) in enumerate(zip(self.bases, self.strata)):
            pr = b.priors(sd_scale)
            out |= {f"{k} [{label}]": v for k, v in pr.items()}
            if a:
                out[f"sigma [{label}]"] = PriorSpec(
                    "HalfNormal", {"sigma": float(sd_scale)}, (-1.0,), (0.5,), "the positive numbers"
                )
        return out

    def pymc_variables(
        self, rv: Callable[[str], Any], sd_scale: float, lkj_eta: float, suffix: str = ""
    ) -> dict[str, Any]:
        """Each stratum's variables (keys ending in ``" [<stratum>]"``, as :meth:`priors`), then for the
        strata after the first the sd ``sigma [<stratum>]`` of their first variance."""
        out: dict[str, Any] = {}
        for a, (b, label) in enumerate(zip(self.bases, self.strata)):
            tag = f" [{label}]"
            out |= {f"{k}{tag}": v for k, v in b.pymc_variables(rv, sd_scale, lkj_eta, tag + suffix).items()}
            if a:
                out[f"sigma{tag}"] = rv(f"sigma{tag}{suffix}")
        return out

    def natural_from_draws(self, draws: dict[str, Any], sigma2: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a, (b, label) in enumerate(zip(self.bases, self.strata)):
            sub = {k[: -len(f" [{label}]")]: v for k, v in draws.items() if k.endswith(f" [{label}]")}
            s2 = sigma2 if a == 0 else draws[f"sigma [{label}]"] ** 2
            nat = b.natural_from_draws(sub, s2)
            out |= {f"{k} [{label}]": nat[k] for k in b.process_keys}
            if a:
                out[f"sigma2 [{label}]"] = nat["sigma2"]
            else:
                out["sigma2"] = nat["sigma2"]
        return out
