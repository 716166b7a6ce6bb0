"""Minimise the LP dual over lambda >= 0, with a certificate.

    g(lambda) = lambda . b + sum_i max(0, max_j (c_ij - lambda . m_ij))          (convex, piecewise linear)

Method (host side works on K-vectors only; every pass over users goes through a kernel):
1. Start at lambda = 0, or at a warm start (`WarmStart`: usually a solve on a 5% user sample, `planner.warmstart`),
   and divide the dual by S, the value of the unconstrained greedy rule, so the numbers the optimiser sees are O(1).
   (Scaling prices by b, which makes the gradient the relative slack, was measured to be much worse: it spreads
   the curvature by 1/b_k^2.)
2. Smooth the user part with an entropic (log-sum-exp) term at temperature tau and minimise the smoothed dual by
   projected L-BFGS (two-metric projection: quasi-Newton on the free prices, gradient on those held at 0, Armijo
   backtracking along the projection arc; one pass per iteration mostly), annealing tau down by stages,
   warm-starting each stage from the last (and on below the schedule's end, to `tau_min`, when its last stage
   converges but the online rule does not certify). Per-constraint scaling: L-BFGS's initial Hessian is the diagonal
   curvature each pass reports (`PassResult.smooth_curvature`, sum p(1-p) m^2 per constraint, over tau), fitted in
   scale to the newest pair, so a budget a few users fill moves its price as fast as a total cap does.
3. Every pass also evaluates the exact (unsmoothed) dual and the online rule at the same prices for free, so the
   certificate is known all along: dual objective (an upper bound on the LP optimum), the rule's primal objective
   and its largest relative overshoot. The solver stops once the gap and the overshoot are both within tolerance.
4. Finish: if the rule still overshoots, raise the prices of the overshooting constraints (per-constraint
   geometric nudges, a few bulk rounds; tried every `nudge_every` passes once the gap is met, and at the end)
   until it does not, and keep the best certified prices seen. `max_passes` caps every pass, nudges included.

`solve` takes any kernel with `evaluate(lam, tau) -> PassResult` (NumPy, CuPy, Numba, Ray), so the algorithm is
written once.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np

from planner.kernels import PassResult

__all__ = ["SolverConfig", "Certificate", "Solution", "TracePoint", "Kernel", "WarmStart", "solve", "certify",
           "relative_gap"]


class Kernel(Protocol):
    name: str
    K: int

    def evaluate(self, lam: np.ndarray, tau: float = 0.0) -> PassResult: ...


@dataclass(frozen=True)
class SolverConfig:
    """Knobs of the dual solver; defaults suit instances from 1k to 10M users."""

    gap_tol: float = 5e-3  # stop once (dual - primal) / dual <= gap_tol ... (the documented default guarantee)
    violation_tol: float = 5e-3  # ... and max_k (consumption_k / b_k - 1) <= violation_tol
    max_passes: int = 2000  # hard cap on passes over the users (each pass is one kernel evaluation)
    time_limit_s: float = 600.0  # wall-clock cap; the best certified prices so far are returned
    tau_start: float = 0.005  # first temperature, relative to the mean value of a chosen user at lambda = 0
    tau_end: float = 1e-4  # last temperature of the schedule
    tau_factor: float = 0.25  # each stage multiplies tau by this
    tau_min: float = 6.25e-6  # when the last stage converges but the rule does not certify, go on to lower
    # temperatures down to this one (two more stages): a tie group spread by the tie-break over 1e-3 of a value well
    # below the mean is narrower than tau_end (ties seed 2 at 1M stopped 0.67% over; converges in 18 passes)
    stage_passes: int = 60  # passes per temperature stage at most
    stage_tol: float = 5e-4  # a stage ends when every free constraint's smoothed consumption is within this of b
    memory: int = 12  # L-BFGS pairs kept
    nudge_rounds: int = 30  # finishing rounds that raise prices of overshooting constraints
    early_nudge_rounds: int = 8  # rounds of an early nudge, tried when the gap is met but a constraint is over
    nudge_every: int = 6  # passes between early nudge attempts
    nudge_backoff: float = 2.0  # an early nudge that cut the score by less than a quarter multiplies the interval
    # by this (ties seed 3 at 200k: the smoothed iterate was 10-50% over on many budgets at once, so every nudge
    # spent 8 passes for nothing; 141 -> 101 full passes, no other run of the 36 changed)
    scaling: bool = True  # per-constraint scaling: L-BFGS's initial Hessian is the smoothed dual's diagonal curvature
    curvature_floor: float = 1e-2  # ... floored at this share of the largest (lower let a constraint no user is
    # near take steps 1e6x too long: bind10 went from 68 to 682 passes at 1e-6, 30 at 1e-2)


@dataclass(frozen=True)
class WarmStart:
    """Where to start instead of lambda = 0: usually the prices of a solve on a user sample (`planner.warmstart`)."""

    lam: np.ndarray  # (K,) prices to start from, >= 0
    greedy_value: float  # value of the unconstrained greedy rule on these users (an estimate is fine): scales the dual
    value_per_user: float  # mean value of a chosen user at lambda = 0: scales the temperatures
    tau: float  # first temperature, relative to value_per_user (lower than tau_start: the prices are close)


@dataclass(frozen=True)
class Certificate:
    """What one price vector achieves, computed exactly."""

    dual_objective: float  # lambda . b + sum_i max(0, max_j score): an upper bound on the LP optimum
    primal_objective: float  # objective of the online rule (argmax, nothing unless positive)
    max_violation: float  # max_k (consumption_k / b_k - 1), clipped below at 0
    gap: float  # (dual - primal) / |dual|; small and >= 0 when the rule is (nearly) feasible


@dataclass(frozen=True)
class TracePoint:
    """The certificate of the prices evaluated at one pass."""

    seconds: float  # since the solve began
    passes: int  # passes over the users so far
    gap: float  # relative gap of these prices
    max_violation: float  # largest relative overshoot of these prices


@dataclass(frozen=True)
class Solution:
    """The answer and how it was reached."""

    lam: np.ndarray  # (K,) dual prices, >= 0
    certificate: Certificate  # exact figures for `lam`
    consumption: np.ndarray  # (K,) the online rule's consumption at `lam`
    iterations: int  # passes over the users
    seconds: float  # wall-clock of the solve
    backend: str  # kernel name
    converged: bool  # gap and violation within tolerance
    tau: float = 0.0  # relative temperature of the last stage (a warm start from these prices may begin there)
    trace: tuple[TracePoint, ...] = field(default=())  # one point per pass


def relative_gap(dual: float, primal: float) -> float:
    return (dual - primal) / max(abs(dual), 1e-300)


def certify(lam: np.ndarray, b: np.ndarray, result: PassResult) -> Certificate:
    """Exact certificate of `lam` from one pass's sums."""
    dual = float(np.dot(lam, b) + result.hard_value)
    primal = float(result.primal_value)
    viol = float(max(0.0, np.max(result.hard_consumption / b - 1.0))) if len(b) else 0.0
    return Certificate(dual_objective=dual, primal_objective=primal, max_violation=viol,
                       gap=relative_gap(dual, primal))


def _score(cert: Certificate, cfg: SolverConfig) -> float:
    """How far an answer is from acceptable, in units of the tolerances (<= 1: within both)."""
    return max(max(cert.gap, 0.0) / cfg.gap_tol, cert.max_violation / cfg.violation_tol)


def _lbfgs_direction(g: np.ndarray, free: np.ndarray, pairs: list, gamma: float,
                     inv_diag: np.ndarray | None = None) -> np.ndarray:
    """-H g on the free coordinates (L-BFGS two-loop on the restricted pairs); -gamma g on the others.

    `inv_diag`: the inverse of a diagonal curvature estimate, the initial Hessian's shape (per-constraint scaling);
    its scale is fitted to the newest pair (so the step keeps L-BFGS's length along it). None: a scalar one.
    """
    d = -gamma * g
    q = np.where(free, g, 0.0)
    alphas = []
    for s_vec, y_vec in reversed(pairs):
        sf, yf = s_vec * free, y_vec * free
        sy = float(np.dot(sf, yf))
        if sy <= 1e-300:
            alphas.append(None)
            continue
        a = float(np.dot(sf, q)) / sy
        q = q - a * yf
        alphas.append((a, sy, sf, yf))
    last = next((x for x in alphas if x is not None), None)
    if inv_diag is None:
        h0 = (last[1] / max(float(np.dot(last[3], last[3])), 1e-300)) if last is not None else gamma
    else:
        h0 = inv_diag * (last[1] / max(float(np.dot(last[3], inv_diag * last[3])), 1e-300) if last is not None
                         else 1.0)
    r = h0 * q
    for entry in reversed(alphas):
        if entry is None:
            continue
        a, sy, sf, yf = entry
        beta = float(np.dot(yf, r)) / sy
        r = r + sf * (a - beta)
    d[free] = -r[free]
    return d


def solve(kernel: Kernel, b: np.ndarray, cfg: SolverConfig = SolverConfig(),
          clock: Callable[[], float] = time.perf_counter, start: WarmStart | None = None) -> Solution:
    """Minimise the dual for the users behind `kernel` and capacities `b` (see the module docstring).

    Without `start` the first pass is at lambda = 0 (it also measures the scale of the values); with it, the
    solve begins at `start.lam` and temperature `start.tau`.
    """
    b = np.asarray(b, dtype=np.float64)
    K = len(b)
    t0 = clock()
    trace: list[TracePoint] = []
    passes = 0
    best: list = [None, None, None]

    def done(cert: Certificate) -> bool:
        return cert.gap <= cfg.gap_tol and cert.max_violation <= cfg.violation_tol

    def out_of_budget() -> bool:
        return passes >= cfg.max_passes or clock() - t0 >= cfg.time_limit_s

    if start is None:
        zero = kernel.evaluate(np.zeros(K), 0.0)
        passes += 1
        S = max(zero.hard_value, 1e-12)  # value of the unconstrained greedy rule
        value_per_user = S / max(zero.chosen, 1)
        best = [np.zeros(K), zero, certify(np.zeros(K), b, zero)]
        trace.append(TracePoint(clock() - t0, passes, best[2].gap, best[2].max_violation))
        if done(best[2]):
            return _finish(kernel, b, [tuple(best)], passes, t0, clock, cfg, trace)
        mu, tau = np.zeros(K), cfg.tau_start
    else:
        S, value_per_user = max(start.greedy_value, 1e-12), max(start.value_per_user, 1e-12)
        mu, tau = np.maximum(np.asarray(start.lam, dtype=np.float64), 0.0), start.tau
    last = list(best)
    last_nudge = 0
    nudge_interval = float(cfg.nudge_every)
    gamma = None
    scale: list = [None]  # inverse diagonal curvature at the newest pass (per-constraint scaling), or None
    stop = False
    while not stop and (best[2] is None or not out_of_budget()):  # at least one pass, then the budget
        tau_abs = tau * value_per_user

        def smoothed(m: np.ndarray) -> tuple[float, np.ndarray, Certificate]:
            nonlocal passes
            lam = m
            res = kernel.evaluate(lam, tau_abs)
            passes += 1
            cert = certify(lam, b, res)
            trace.append(TracePoint(clock() - t0, passes, cert.gap, cert.max_violation))
            if best[2] is None or _score(cert, cfg) < _score(best[2], cfg):
                best[:] = [lam.copy(), res, cert]
            last[:] = [lam.copy(), res, cert]
            value = float(np.dot(lam, b) + res.smooth_value) / S
            grad = (b - res.smooth_consumption) / S
            curv = getattr(res, "smooth_curvature", None)
            if cfg.scaling and curv is not None and float(np.max(curv)) > 0.0:
                curv = curv / (tau_abs * S)  # the Hessian's diagonal, in the units of `value`
                scale[0] = 1.0 / np.maximum(curv, cfg.curvature_floor * float(np.max(curv)))
            return value, grad, cert

        f, g, cert = smoothed(mu)
        stop = done(cert) or out_of_budget()
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        if gamma is None:
            gamma = 0.1 * float(np.max(np.abs(mu))) / max(float(np.max(np.abs(g))), 1e-300) if mu.any() else \
                1e-2 / max(float(np.max(np.abs(g))), 1e-300)
        stage_passes = 0
        while not stop:
            rel_slack = np.where((mu <= 0.0) & (g > 0.0), 0.0, g * S / b)  # (b - cons) / b, projected
            if float(np.max(np.abs(rel_slack))) <= cfg.stage_tol or stage_passes >= cfg.stage_passes:
                break
            free = ~((mu <= 0.0) & (g > 0.0))
            d = _lbfgs_direction(g, free, pairs, gamma, scale[0])
            if float(np.dot(g, d)) >= 0.0:  # not a descent direction: drop the memory, take a gradient step
                pairs.clear()
                d = -gamma * g if scale[0] is None else -scale[0] * g
            alpha = 1.0
            while True:
                trial = np.maximum(mu + alpha * d, 0.0)
                f_new, g_new, cert = smoothed(trial)
                stage_passes += 1
                stop = done(cert) or out_of_budget()
                if not stop and cert.gap <= cfg.gap_tol and cert.max_violation > cfg.violation_tol \
                        and passes - last_nudge >= nudge_interval:
                    # Prices are good but a (usually small, lumpy) constraint overshoots: try the finishing
                    # nudges now rather than after the whole schedule.
                    early = _finish(kernel, b, [tuple(last)], passes, t0, clock, cfg, trace, cfg.early_nudge_rounds)
                    passes = last_nudge = early.iterations
                    if _score(early.certificate, cfg) < _score(best[2], cfg):  # keep the best prices seen anywhere
                        best[:] = [early.lam, SimpleNamespace(hard_consumption=early.consumption), early.certificate]
                    if early.converged:
                        return replace(early, tau=tau)
                    if _score(early.certificate, cfg) > 0.75 * _score(last[2], cfg):  # hopeless from here:
                        nudge_interval *= cfg.nudge_backoff  # the smoothed solve is far off, let it work
                if f_new <= f + 1e-4 * float(np.dot(g, trial - mu)) or stop or stage_passes >= cfg.stage_passes:
                    break
                alpha *= 0.25
            s_vec, y_vec = trial - mu, g_new - g
            sy = float(np.dot(s_vec, y_vec))
            if sy > 1e-12 * float(np.dot(s_vec, s_vec)) and sy > 0.0:
                pairs.append((s_vec, y_vec))
                del pairs[:-cfg.memory]
                gamma = sy / max(float(np.dot(y_vec, y_vec)), 1e-300)
            mu, f, g = trial, f_new, g_new
        if stop or out_of_budget():
            break
        if tau <= cfg.tau_end and stage_passes < cfg.stage_passes:  # the schedule's last stage converged ...
            if tau <= cfg.tau_min:
                break
            tau = max(tau * cfg.tau_factor, cfg.tau_min)  # ... but the rule does not certify: resolve finer
        elif tau > cfg.tau_end:
            tau = max(tau * cfg.tau_factor, cfg.tau_end)
        gamma *= cfg.tau_factor  # (a stage that ran out of passes at the last temperature starts afresh there)
    candidates = [tuple(best)] if last[0] is best[0] else [tuple(best), tuple(last)]
    return replace(_finish(kernel, b, candidates, passes, t0, clock, cfg, trace), tau=tau)


def _nudge(kernel, b, lam, res, cert, cfg, rounds, record):
    """Raise the prices of overshooting constraints until the online rule fits (or the rounds run out); returns
    the best-scored prices met on the way (the starting ones included).

    Each round raises the price of every constraint still over by step_k x ref_k, where ref_k is its price or, if
    that is small, a tenth of the mean positive price (a constraint priced at ~0 must be able to move at all);
    step_k starts at half the overshoot (+1%) and doubles while the constraint stays over: small moves first, so
    the gap barely changes, and geometric growth, so a capacity a single user overfills is reached in a few rounds.
    """
    K = len(b)
    step = np.zeros(K)
    positive = lam[lam > 0]
    floor = 0.1 * float(np.mean(positive)) if positive.size else 1e-3 * max(float(np.max(np.abs(b))), 1e-12)
    kept = (lam, res, cert)
    for _ in range(rounds):
        if cert.max_violation <= cfg.violation_tol:
            break
        ratio = res.hard_consumption / b
        over = ratio > 1.0 + 0.25 * cfg.violation_tol
        step = np.where(over, np.where(step > 0, 2.0 * step, 0.5 * (ratio - 1.0) + 1e-2), 0.0)
        lam = lam.copy()
        lam[over] = lam[over] + step[over] * np.maximum(lam[over], floor)
        res = kernel.evaluate(lam, 0.0)
        cert = record(lam, res)
        if _score(cert, cfg) < _score(kept[2], cfg):
            kept = (lam, res, cert)
    return kept


def _finish(kernel, b, candidates, passes, t0, clock, cfg, trace, rounds: int | None = None) -> Solution:
    """Nudge each candidate (the best-scored prices, the last smoothed iterate) and keep the best result."""
    state = {"passes": passes}

    def record(lam, res):
        state["passes"] += 1
        cert = certify(lam, b, res)
        trace.append(TracePoint(clock() - t0, state["passes"], cert.gap, cert.max_violation))
        return cert

    results = []
    for lam, res, cert in candidates:
        if cert.max_violation > cfg.violation_tol:
            budget = max(0, cfg.max_passes - state["passes"])  # max_passes is a hard cap, nudges included
            lam, res, cert = _nudge(kernel, b, lam, res, cert, cfg,
                                    min(budget, cfg.nudge_rounds if rounds is None else rounds), record)
        results.append((_score(cert, cfg), lam, res, cert))
        if _score(cert, cfg) <= 1.0:
            break
    _, lam, res, cert = min(results, key=lambda x: x[0])
    converged = cert.gap <= cfg.gap_tol and cert.max_violation <= cfg.violation_tol
    return Solution(lam=np.asarray(lam, dtype=np.float64), certificate=cert, consumption=res.hard_consumption,
                    iterations=state["passes"], seconds=clock() - t0, backend=getattr(kernel, "name", "?"),
                    converged=converged, trace=tuple(trace))
