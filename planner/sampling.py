"""Solving on a sample of users, as the nearline loop does: capacities scaled to the sample's share of users."""

from __future__ import annotations

import numpy as np

from planner.instance import Instance, subset_users

__all__ = ["sample_users", "sample_rows"]


def sample_rows(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a uniform sample of round(fraction * n) users (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"sample fraction must be in (0, 1], got {fraction}")
    size = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def sample_users(inst: Instance, fraction: float, seed: int = 0) -> Instance:
    """A uniform user sample with every capacity multiplied by (sampled users / all users)."""
    rows = sample_rows(inst.n, fraction, seed)
    sub = subset_users(inst, rows)
    return sub.with_capacities(inst.b * (rows.size / inst.n))
