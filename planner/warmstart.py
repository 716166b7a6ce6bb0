"""Warm start from a solve on a user sample: cheap (a pass over 5% of the users costs 5% of a pass) and close.

The sample's prices differ from the full instance's optimum by sampling noise only, so the full solve that follows
starts near the answer, at the temperature where the sample's solve ended, and needs a few passes instead of a
whole annealing schedule. Below `min_users` the sample would be too lumpy to help and the solve starts cold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from planner.instance import Instance
from planner.sampling import sample_users
from planner.solver import Kernel, Solution, SolverConfig, WarmStart, solve

__all__ = ["WarmStartConfig", "sample_warm_start", "solve_warm"]


@dataclass(frozen=True)
class WarmStartConfig:
    """When and how to warm-start a solve from a user sample."""

    min_users: int = 100_000  # instances with fewer users start cold
    fraction: float = 0.05  # share of users in the sample ...
    min_sample: int = 20_000  # ... but at least this many users
    seed: int = 0  # which users are sampled
    loosen: float = 2.0  # the sample is solved to this multiple of the tolerances (its prices only need to be close)
    max_passes: int = 250  # cap on the sample's passes (a lumpy sample may never certify; its prices still help)


def sample_warm_start(inst: Instance, make: Callable[[Instance], Kernel], cfg: SolverConfig,
                      warm: WarmStartConfig = WarmStartConfig()) -> tuple[WarmStart, Solution] | None:
    """Solve on a sample of users (capacities scaled to its share); None when the instance is too small."""
    if inst.n < warm.min_users:
        return None
    fraction = min(1.0, max(warm.fraction, warm.min_sample / inst.n))
    sub = sample_users(inst, fraction, warm.seed)
    kernel = make(sub)
    try:
        zero = kernel.evaluate(np.zeros(inst.K), 0.0)
        sol = solve(kernel, sub.b, replace(cfg, max_passes=warm.max_passes, gap_tol=cfg.gap_tol * warm.loosen,
                                           violation_tol=cfg.violation_tol * warm.loosen))
    finally:
        kernel.close()
    scale = inst.n / sub.n
    start = WarmStart(lam=sol.lam, greedy_value=zero.hard_value * scale,
                      value_per_user=zero.hard_value / max(zero.chosen, 1), tau=sol.tau)
    return start, sol


def solve_warm(inst: Instance, make: Callable[[Instance], Kernel], cfg: SolverConfig = SolverConfig(),
               warm: WarmStartConfig = WarmStartConfig()) -> tuple[Solution, Solution | None]:
    """(solution on all users, the sample's solution or None); passes and seconds include the sample's work,
    counted in full-instance passes (a sample pass costs its share of one)."""
    found = sample_warm_start(inst, make, cfg, warm)
    kernel = make(inst)
    try:
        if found is None:
            return solve(kernel, inst.b, cfg), None
        start, on_sample = found
        sol = solve(kernel, inst.b, cfg, start=start)
    finally:
        kernel.close()
    return sol, on_sample
