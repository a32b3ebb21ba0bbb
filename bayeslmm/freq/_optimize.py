"""Bounded minimisation of the profiled criterion and the convergence checks.

The optimiser is BOBYQA (Powell's bounded derivative-free quadratic-model
method) from NLopt, the same algorithm and library lme4 uses by default
(``optimizer = "nloptwrap"``), with tighter tolerances. After it stops, the
gradient and Hessian are taken by central differences, as lme4's
``checkConv`` does, and the fit is reported as converged only if the scaled
gradient is small and the Hessian positive definite (on the free parameters:
those on the boundary are excluded and the fit is flagged singular).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A diagonal element of a relative covariance factor below this is "on the boundary" (lme4's isSingular tol).
SINGULAR_TOL = 1e-4
#: Largest acceptable |H^{-1} g| at the optimum (lme4's check.conv.grad tolerance).
GRAD_TOL = 2e-3
#: A Newton step shorter than this (in theta) is not taken. The step costs one evaluation (the
#: derivatives are those of the convergence check) and brings theta to about 1e-8 where BOBYQA,
#: stopping on a small change of the criterion, leaves it at about 1e-6.
POLISH_TOL = 1e-10
#: BOBYQA restarts (smaller first step) after a failed gradient check.
MAX_RESTARTS = 3
#: height of the wall the gradient path sees where the criterion is not defined
WALL = 1e8
#: L-BFGS-B stops once STALL_ITERS iterations lowered the criterion by less than STALL_TOL (relative)
STALL_ITERS = 5
STALL_TOL = 1e-10
#: Newton steps with the Hessian of the convergence check, after L-BFGS-B
NEWTON_STEPS = 4

_NLOPT_STATUS = {
    1: "success",
    2: "stopval reached",
    3: "ftol reached",
    4: "xtol reached",
    5: "maxeval reached",
    6: "maxtime reached",
    -1: "failure",
    -2: "invalid arguments",
    -3: "out of memory",
    -4: "roundoff limited",
    -5: "forced stop",
}


@dataclass(frozen=True)
class OptimizerRecord:
    """What the optimiser did: start, end, evaluations, status and checks.

    ``x_start`` and ``x`` are the optimiser's vector at the start and at the end (for a fitted model
    its ``psi``: theta, then the residual structure's parameters).
    ``gradient`` and ``hessian`` are the finite-difference derivatives over the free
    coordinates at the point BOBYQA returned; the convergence checks use them.
    ``polished`` says whether one Newton step from there lowered the criterion
    (then ``x`` is that point). ``restarts`` counts BOBYQA runs restarted, with a
    smaller first step, after a failed gradient or Hessian check. ``n_evals`` counts every evaluation.
    """

    optimizer: str
    x_start: np.ndarray
    x: np.ndarray
    criterion: float
    n_evals: int
    status: str
    converged: bool
    singular: bool
    gradient: np.ndarray
    hessian: np.ndarray
    messages: tuple[str, ...] = ()
    seconds: float = 0.0
    polished: bool = False
    restarts: int = 0
    history: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)

    def as_dict(self) -> dict:
        """JSON-friendly summary."""
        return {
            "optimizer": self.optimizer,
            "x_start": self.x_start.tolist(),
            "x": self.x.tolist(),
            "criterion": self.criterion,
            "n_evals": self.n_evals,
            "status": self.status,
            "converged": self.converged,
            "singular": self.singular,
            "gradient": self.gradient.tolist(),
            "messages": list(self.messages),
            "polished": self.polished,
            "restarts": self.restarts,
            "seconds": self.seconds,
        }


def default_start(lower: np.ndarray) -> np.ndarray:
    """lme4's start: 1 for diagonal elements of each factor, 0 off the diagonal."""
    return np.where(np.isfinite(lower), 1.0, 0.0)


def choose_start(fun: Callable[[np.ndarray], float], lower: np.ndarray) -> np.ndarray:
    """The best of a few scalings of lme4's start (cheap: one evaluation each)."""
    base = default_start(lower)
    cands = [base * s for s in (1.0, 0.3, 3.0, 0.1)]
    vals = [fun(c) for c in cands]
    return cands[int(np.argmin(vals))]


def initial_step(x0: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """BOBYQA's first trust-region radius per coordinate.

    Half the start value (fewest evaluations seen on the golden cases) or 0.1 near zero,
    but at most half the distance to a finite bound: a first step that jumps across a
    bound left BOBYQA stuck on ill-conditioned serial-correlation fits.
    """
    step = np.where(np.abs(x0) > 0.2, 0.5 * np.abs(x0), 0.1)
    # off-diagonal elements of a relative factor (unbounded) start at 0: a first step of 0.1 there
    # made BOBYQA crawl (821 evaluations instead of 224 on a random-slope golden case)
    step = np.where(np.isfinite(lower) | (np.abs(x0) > 0.2), step, 0.5)
    below = np.where(np.isfinite(lower), x0 - lower, np.inf)
    above = np.where(np.isfinite(upper), upper - x0, np.inf)
    dist = np.minimum(below, above)
    room = dist > 0
    return np.where(room, np.minimum(step, np.maximum(0.5 * dist, 1e-3)), step)


def _free(theta: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Coordinates not on (within SINGULAR_TOL of) a finite bound."""
    at_lower = np.isfinite(lower) & (theta - lower < SINGULAR_TOL)
    at_upper = np.isfinite(upper) & (upper - theta < SINGULAR_TOL)
    return ~(at_lower | at_upper)


def derivatives(
    fun: Callable[[np.ndarray], float], x: np.ndarray, idx: np.ndarray, h: float = 1e-4, f0: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Finite-difference gradient and Hessian of ``fun`` at ``x`` over coordinates ``idx``.

    As lme4's ``deriv12``: central differences for the gradient and the diagonal,
    one extra evaluation per pair for the off-diagonal (``1 + 2k + k(k-1)/2`` in all).
    """
    k = len(idx)
    g = np.zeros(k)
    H = np.zeros((k, k))
    f0 = fun(x) if f0 is None else f0
    fp = np.zeros(k)
    for a, i in enumerate(idx):
        e = np.zeros_like(x)
        e[i] = h
        fp[a], fm = fun(x + e), fun(x - e)
        g[a] = (fp[a] - fm) / (2 * h)
        H[a, a] = (fp[a] - 2 * f0 + fm) / h**2
    for a in range(k):
        for b in range(a + 1, k):
            e = np.zeros_like(x)
            e[idx[a]] = h
            e[idx[b]] = h
            H[a, b] = H[b, a] = (fun(x + e) - fp[a] - fp[b] + f0) / h**2
    return g, H


def check_optimum(g: np.ndarray, H: np.ndarray) -> str | None:
    """lme4's ``checkConv`` on the free coordinates: None, or what failed (the Hessian not finite or not
    positive definite, or ``max |H^{-1} g|`` above :data:`GRAD_TOL`)."""
    if not np.all(np.isfinite(H)):
        return "Hessian could not be evaluated at the optimum"
    if not g.size:
        return None
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return "Model is nearly unidentifiable: the Hessian is not positive definite"
    size = float(np.max(np.abs(np.linalg.solve(H, g))))
    return None if size <= GRAD_TOL else f"Model failed to converge with max|grad| = {size:.3g} (tol = {GRAD_TOL})"


def boundary_message(free: np.ndarray, names: list[str] | None, symbol: str) -> str:
    """The message of a boundary (singular) fit, naming the coordinates not free."""
    at = [names[i] if names else f"{symbol}[{i}]" for i in np.flatnonzero(~free)]
    return (
        f"boundary (singular) fit: {', '.join(at)} at the boundary of its range (a variance 0, a "
        "correlation +-1, or a serial-correlation parameter at 0 or 1); consider a simpler model"
    )


def _newton_size(g: np.ndarray, H: np.ndarray) -> float:
    """``max |H^{-1} g|``: how far one Newton step would move (inf if H is singular)."""
    try:
        return float(np.max(np.abs(np.linalg.solve(H, g))))
    except np.linalg.LinAlgError:
        return np.inf


def newton_polish(
    fun: Callable[[np.ndarray], float],
    x: np.ndarray,
    fx: float,
    lower: np.ndarray,
    upper: np.ndarray,
    idx: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
) -> tuple[np.ndarray, float, bool]:
    """One Newton step on the free coordinates, kept only if it lowers the criterion.

    BOBYQA stops on a small change of the criterion; on flat likelihoods that can
    leave the parameters short of the optimum in the 4th digit. One step with the
    finite-difference derivatives computed for the convergence check recovers them.
    """
    try:
        step = -np.linalg.solve(H, g)
    except np.linalg.LinAlgError:
        return x, fx, False
    xn = x.copy()
    xn[idx] = np.clip(x[idx] + step, lower[idx], upper[idx])
    fn = fun(xn)
    if fn < fx:
        return xn, fn, True
    return x, fx, False


def minimize_bobyqa(
    fun: Callable[[np.ndarray], float],
    lower: np.ndarray,
    start: np.ndarray | None = None,
    *,
    upper: np.ndarray | None = None,
    names: list[str] | None = None,
    ftol_abs: float = 1e-8,
    ftol_rel: float = 1e-10,
    xtol_abs: float = 1e-8,
    maxeval: int = 100_000,
    check: bool = True,
    step_scale: float = 1.0,
) -> OptimizerRecord:
    """Minimise ``fun`` over ``theta >= lower`` with BOBYQA and check the optimum.

    Parameters
    ----------
    fun
        The criterion (returns ``inf`` where it cannot be evaluated).
    lower, upper
        ``(k,)`` bounds (``-inf``/``inf`` or None for unbounded coordinates).
    names
        Parameter names for messages.
    start
        Starting theta; default :func:`choose_start`.
    check
        Compute the finite-difference gradient and Hessian at the optimum.
    step_scale
        Multiplies BOBYQA's first trust-region radius (:func:`initial_step`): below 1 for a
        start already near the optimum.
    """
    import nlopt

    t0 = time.perf_counter()
    calls = [0]

    def counted(theta: np.ndarray) -> float:  # counts every evaluation: start, optimiser, checks
        calls[0] += 1
        return fun(theta)

    lower = np.asarray(lower, dtype=float)
    k = lower.size
    upper = np.full(k, np.inf) if upper is None else np.asarray(upper, dtype=float)
    x0 = choose_start(counted, lower) if start is None else np.asarray(start, dtype=float)
    x0 = np.clip(x0, lower, upper)
    hist: list[tuple[float, ...]] = []
    big = 1e300

    def wrapped(x: np.ndarray, grad: np.ndarray) -> float:
        v = counted(x)
        hist.append((*x, v))
        return v if np.isfinite(v) else big

    def run(x_start: np.ndarray, step: np.ndarray) -> tuple[int, list[str]]:
        opt = nlopt.opt(nlopt.LN_BOBYQA, k)
        opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
        opt.set_upper_bounds(upper)
        opt.set_min_objective(wrapped)
        opt.set_ftol_abs(ftol_abs)
        opt.set_ftol_rel(ftol_rel)  # the criterion itself is only that precise when it is large
        opt.set_xtol_abs(np.full(k, xtol_abs))
        opt.set_maxeval(maxeval)
        opt.set_initial_step(step)
        try:
            opt.optimize(x_start)
            return opt.last_optimize_result(), []
        except nlopt.RoundoffLimited:
            return -4, []
        except (RuntimeError, ValueError) as e:
            return -1, [f"optimiser error: {e}"]

    step = step_scale * initial_step(x0, lower, upper)
    x_start = x0
    restarts = 0
    f_prev = np.inf
    while True:
        code, messages = run(x_start, step)
        if hist:
            best = min(hist, key=lambda r: r[-1])
            x, fx = np.array(best[:-1]), float(best[-1])
        else:
            x, fx = x0, counted(x0)
        status = _NLOPT_STATUS.get(code, str(code))
        ok = code > 0 and code != 5
        if code == 5:
            messages.append(f"maximum number of evaluations ({maxeval}) reached")
        free = _free(x, lower, upper)
        singular = bool((~free).any())
        idx = np.flatnonzero(free)
        g = np.zeros(0)
        H = np.zeros((0, 0))
        polished = False
        check_failed = False
        if check and idx.size:
            g, H = derivatives(counted, x, idx, f0=fx)
            if np.all(np.isfinite(H)) and np.all(np.isfinite(g)) and _newton_size(g, H) > POLISH_TOL:
                x, fx, polished = newton_polish(counted, x, fx, lower, upper, idx, g, H)
            if polished:  # convergence and singularity are decided at the point returned, not before the step
                free_after = _free(x, lower, upper)
                if np.any(free_after != free):  # the step reached a bound: check the coordinates still free
                    free = free_after
                    singular = bool((~free).any())
                    idx = np.flatnonzero(free)
                    g, H = derivatives(counted, x, idx, f0=fx) if idx.size else (np.zeros(0), np.zeros((0, 0)))
            problem = check_optimum(g, H)
            if problem is not None:
                ok = False
                check_failed = bool(np.all(np.isfinite(H)))
                messages.append(problem)
        # BOBYQA can stall in a narrow curved valley; a restart with a smaller first step gets out
        if ok or not check_failed or code <= 0 or restarts >= MAX_RESTARTS or fx > f_prev - ftol_abs:
            break
        restarts += 1
        f_prev = fx
        x_start = x
        step = 0.1 * initial_step(x, lower, upper)
    if singular:
        messages.append(boundary_message(free, names, "theta"))
    return OptimizerRecord(
        optimizer="NLopt BOBYQA",
        x_start=x0,
        x=np.asarray(x, dtype=float),
        criterion=float(fx),
        n_evals=calls[0],
        status=status,
        converged=ok,
        singular=singular,
        gradient=g,
        hessian=H,
        messages=tuple(messages),
        seconds=time.perf_counter() - t0,
        polished=polished,
        restarts=restarts,
        history=np.array(hist),
    )


def minimize_gradient(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray] | None],
    lower: np.ndarray,
    upper: np.ndarray,
    start: np.ndarray,
    *,
    names: list[str] | None = None,
    maxiter: int = 5000,
) -> OptimizerRecord:
    """Minimise with the analytic gradient (L-BFGS-B, bounded) and check the optimum as
    :func:`minimize_bobyqa` does, with the Hessian from central differences of the gradient
    (``2k`` gradient evaluations instead of ``O(k^2)`` criterion evaluations: what makes a
    54-parameter unstructured covariance cheap), then one Newton step.

    ``fg`` returns ``(criterion, gradient)`` or None where the criterion is not defined.
    """
    from scipy.optimize import minimize

    t0 = time.perf_counter()
    calls = [0]
    hist: list[tuple[float, ...]] = []
    best: list[Any] = [np.inf, np.asarray(start, dtype=float)]

    def wrapped(x: np.ndarray) -> tuple[float, np.ndarray]:
        """Where the criterion is not defined (V not positive definite), a finite wall rising away from
        the best point so far: L-BFGS-B's line search then backtracks (an infinite value stops it)."""
        calls[0] += 1
        out = fg(x)
        if out is None or not np.isfinite(out[0]) or not np.all(np.isfinite(out[1])):
            hist.append((*x, np.inf))
            d = x - best[1]
            return float(best[0] + WALL * (1.0 + d @ d)), 2.0 * WALL * d
        hist.append((*x, out[0]))
        if out[0] < best[0]:
            best[0], best[1] = out[0], np.array(x, dtype=float)
        return out

    def fun(x: np.ndarray) -> float:
        return wrapped(x)[0]

    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    x0 = np.clip(np.asarray(start, dtype=float), lower, upper)
    bounds = [(lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None) for lo, hi in zip(lower, upper)]
    wrapped(x0)
    restarts = -1
    x = x0
    trail: list[float] = []

    def stalled(intermediate_result: Any) -> None:
        """Stop L-BFGS-B once STALL_ITERS iterations gained less than STALL_TOL in all: the Newton steps
        below finish the job (L-BFGS-B's own tests spent most of a 55-parameter fit's evaluations on
        the last 1e-6 of the criterion)."""
        trail.append(float(intermediate_result.fun))
        if len(trail) > STALL_ITERS and trail[-1 - STALL_ITERS] - trail[-1] < STALL_TOL * max(1.0, abs(trail[-1])):
            raise StopIteration

    while restarts < MAX_RESTARTS:  # L-BFGS-B restarted from where it stopped while that still helps
        restarts += 1
        f_before = best[0]
        trail.clear()
        res = minimize(
            wrapped,
            x,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 30},
            callback=stalled,
        )
        x = np.asarray(best[1], dtype=float)
        if not f_before - best[0] > STALL_TOL * max(1.0, abs(best[0])):
            break
    fx = float(best[0])
    messages: list[str] = []
    ok = np.isfinite(fx)
    status = str(res.message)
    free = _free(x, lower, upper)
    idx = np.flatnonzero(free)
    singular = bool((~free).any())
    g, H = np.zeros(0), np.zeros((0, 0))
    polished = False
    if idx.size:
        g, H = _gradient_hessian(wrapped, x, idx)
        # Newton steps with this Hessian (one gradient each), while they still move and lower the criterion
        for _ in range(NEWTON_STEPS):
            if not (np.all(np.isfinite(H)) and _newton_size(g, H) > POLISH_TOL):
                break
            x, fx, moved = newton_polish(fun, x, fx, lower, upper, idx, g, H)
            if not moved:
                break
            polished = True
            free_after = _free(x, lower, upper)
            if np.any(free_after != free):  # a bound reached: the derivatives of the coordinates still free
                free = free_after
                singular = bool((~free).any())
                idx = np.flatnonzero(free)
                g, H = _gradient_hessian(wrapped, x, idx) if idx.size else (np.zeros(0), np.zeros((0, 0)))
                if not idx.size:
                    break
            else:
                g = wrapped(x)[1][idx]
        problem = check_optimum(g, H)
        ok = problem is None
        if problem is not None:
            messages.append(problem)
    if singular:
        messages.append(boundary_message(free, names, "psi"))
    return OptimizerRecord(
        optimizer="L-BFGS-B (analytic gradient)",
        x_start=x0,
        x=x,
        criterion=fx,
        n_evals=calls[0],
        status=status,
        converged=ok,
        singular=singular,
        gradient=g,
        hessian=H,
        messages=tuple(messages),
        seconds=time.perf_counter() - t0,
        polished=polished,
        restarts=restarts,
        history=np.array(hist),
    )


def _gradient_hessian(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray, idx: np.ndarray, h: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """The gradient at ``x`` and the Hessian by forward differences of the analytic gradient over
    ``idx`` (``k + 1`` gradient evaluations; relative error about 1e-6, plenty for the checks and
    the Newton step)."""
    g_all = fg(x)[1]
    g = g_all[idx]
    H = np.zeros((idx.size, idx.size))
    for a, i in enumerate(idx):
        e = np.zeros_like(x)
        e[i] = h * max(1.0, abs(x[i]))
        H[:, a] = (fg(x + e)[1][idx] - g) / e[i]
    return g, 0.5 * (H + H.T)
