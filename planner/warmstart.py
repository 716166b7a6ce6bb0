"""Warm start from a solve on a user sample: cheap (a pass over 5% of the users costs 5% of a pass) and close.

The sample's prices differ from the full instance's optimum by sampling noise only, so the full solve that follows
starts near the answer, at the temperature where the sample's solve ended, and needs a few passes instead of a
whole annealing schedule. Below `min_users` the sample would be too lumpy to help and the solve starts cold.

Two levels when the first is hard: the first sample (5%, at least 20k users) is solved cold; when it did not
converge or took 100 passes or more, a second, larger one (20%) is solved from the first's prices, and the full
solve starts from the second's. The first sample's noise on small constraints (a budget a few
hundred users fill is a few dozen users in 5%) is what the full solve used to spend its passes on; the second level
takes most of that out at a fifth of a pass each (docs/planner.md, "Warm start").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from planner.instance import Instance
from planner.sampling import sample_users
from planner.solver import Kernel, Solution, SolverConfig, WarmStart, solve

__all__ = ["SampleSolves", "WarmStartConfig", "sample_warm_start", "solve_warm"]


@dataclass(frozen=True)
class WarmStartConfig:
    """When and how to warm-start a solve from a user sample."""

    min_users: int = 100_000  # instances with fewer users start cold
    fraction: float = 0.05  # share of users in the sample ...
    min_sample: int = 20_000  # ... but at least this many users
    seed: int = 0  # which users are sampled
    loosen: float = 2.0  # the sample is solved to this multiple of the tolerances (its prices only need to be close)
    max_passes: int = 250  # cap on each sample's passes (a lumpy sample may never certify; its prices still help)
    refine_fraction: float = 0.2  # share of users in the second sample, solved from the first's prices; skipped
    # unless at least twice the first's share (1M users: 5% -> 20%; 200k: 10% -> 20%; 100k: the first is 20%) ...
    refine_after: int = 100  # ... and unless the first did not converge on its sample or took this many passes
    # (on the suite's easy runs a second level cost as much as it saved: docs/planner.md, "Two-level warm start")


@dataclass(frozen=True)
class SampleSolves:
    """What the warm start spent, one entry per sample level: (users, passes, seconds, converged on the sample)."""

    levels: tuple[tuple[int, int, float, bool], ...] = field(default=())

    @property
    def iterations(self) -> int:
        """Passes over sample users, all levels together."""
        return sum(level[1] for level in self.levels)

    @property
    def seconds(self) -> float:
        return sum(level[2] for level in self.levels)

    def full_passes(self, n: int) -> float:
        """The sample passes' cost in passes over all n users (a pass over m users costs m / n of one)."""
        return sum(users * passes for users, passes, _, _ in self.levels) / max(n, 1)


def sample_warm_start(inst: Instance, make: Callable[[Instance], Kernel], cfg: SolverConfig,
                      warm: WarmStartConfig = WarmStartConfig()) -> tuple[WarmStart, SampleSolves] | None:
    """Solve on a sample of users (capacities scaled to its share), then on a larger one from those prices; None
    when the instance is too small."""
    if inst.n < warm.min_users:
        return None
    fraction = min(1.0, max(warm.fraction, warm.min_sample / inst.n))
    shares = [fraction] + ([warm.refine_fraction] if 2.0 * fraction <= warm.refine_fraction < 1.0 else [])
    loose = replace(cfg, max_passes=warm.max_passes, gap_tol=cfg.gap_tol * warm.loosen,
                    violation_tol=cfg.violation_tol * warm.loosen)
    start, sol, levels = None, None, []
    for level, share in enumerate(shares):
        if level and sol.converged and sol.iterations < warm.refine_after:
            break  # the first sample was easy: its prices are as good a start as a second level would give
        sub = sample_users(inst, share, warm.seed + level)
        kernel = make(sub)
        try:
            zero = kernel.evaluate(np.zeros(inst.K), 0.0)
            value_per_user = zero.hard_value / max(zero.chosen, 1)
            if start is not None:  # the previous level's prices and temperature, this sample's scales
                start = replace(start, greedy_value=zero.hard_value, value_per_user=value_per_user)
            sol = solve(kernel, sub.b, loose, start=start)
        finally:
            kernel.close()
        levels.append((sub.n, sol.iterations, sol.seconds, sol.converged))
        start = WarmStart(lam=sol.lam, greedy_value=zero.hard_value * inst.n / sub.n, value_per_user=value_per_user,
                          tau=sol.tau)
    return start, SampleSolves(tuple(levels))


def solve_warm(inst: Instance, make: Callable[[Instance], Kernel], cfg: SolverConfig = SolverConfig(),
               warm: WarmStartConfig = WarmStartConfig()) -> tuple[Solution, SampleSolves | None]:
    """(solution on all users, what the sample solves spent or None when it started cold); the solution's passes
    and seconds are its own (over all users)."""
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
