"""The per-request decision, pure: candidates + prices + what remains -> the chosen item (or none) and its score.

    m_j^k   = sum_r usage[j, r] * A[r, item_j, k]          (A from the scenario: usage type x item -> constraints)
    score_j = value_j - lambda . m_j
    choice  = argmax_j score_j over candidates that fit what remains of every constraint they touch (hard stop),
              lowest j on ties, and nothing unless the best score is > 0.

Between nearline solves each replica corrects its copy of the prices after every decision with one dual mirror
descent step (Euclidean mirror map; Balseiro, Lu, Mirrokni):

    lambda_k <- max(0, lambda_k - (step * value_scale / u_k) * (rho_k - m_k) / u_k)

where rho_k is the per-request budget rate the planner assumed (remaining budget / forecast remaining requests),
m_k what the decision consumed and u_k the constraint's consumption unit: what one allocation touching it
typically consumes (a running mean). Consuming faster than plan raises the price at once, slower lowers it. In
units of u_k every constraint moves at the same relative speed, so small budgets react as fast as large ones; with
u_k = rho_k (the textbook scaling) one allocation against a small, lumpy budget (m_k = 100 rho_k) would move its
price by a hundred steps, which measured much worse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.allocation.scenario import ScenarioSpec

__all__ = ["ConstraintMatrix", "Decision", "consumption_unit", "decide", "dmd_step"]

_FIT_EPS = 1e-9  # relative slack allowed when checking that a candidate fits what remains


class ConstraintMatrix:
    """The scenario's A, per item: `weights(item)` is an (R, K) matrix of 0/1 entries. Items are open-ended
    strings; an item no constraint names gets the matrix of the constraints without an `items` list."""

    def __init__(self, scenario: ScenarioSpec):
        self.usage_types = scenario.usage_types
        self.names = scenario.constraint_names
        self.capacity = np.asarray(scenario.capacities, dtype=np.float64)
        self.usage_index = {name: r for r, name in enumerate(self.usage_types)}
        R, K = len(self.usage_types), len(self.names)
        self.base = np.zeros((R, K))
        self._per_item: dict[str, np.ndarray] = {}
        for k, c in enumerate(scenario.constraints):
            r = self.usage_index[c.usage]
            if c.items is None:
                self.base[r, k] = 1.0
        for k, c in enumerate(scenario.constraints):
            for item in c.items or ():
                if item not in self._per_item:
                    self._per_item[item] = self.base.copy()
                self._per_item[item][self.usage_index[c.usage], k] = 1.0
        self.base.setflags(write=False)
        # One (R, K) slice per item a constraint names, the base matrix at index 0: a request gathers its items'
        # weights in one indexing operation.
        self._index = {item: p + 1 for p, item in enumerate(self._per_item)}
        self._stacked = np.stack([self.base, *self._per_item.values()])
        self._stacked.setflags(write=False)

    @property
    def R(self) -> int:
        return len(self.usage_types)

    @property
    def K(self) -> int:
        return len(self.names)

    def weights(self, item: str) -> np.ndarray:
        return self._per_item.get(item, self.base)

    def consumption(self, items, usage: np.ndarray) -> np.ndarray:
        """(J, K) consumption of each candidate: usage (J, R) through each item's (R, K) weights."""
        index = self._index
        stacked = self._stacked[[index.get(item, 0) for item in items]]  # (J, R, K)
        return np.matmul(usage[:, None, :], stacked)[:, 0, :]


@dataclass(frozen=True)
class Decision:
    """The outcome of one request."""

    index: int  # chosen candidate, -1 for none
    score: float  # value - prices . usage of the chosen candidate (of the best one when none fits or is positive)
    consumption: np.ndarray  # (K,) what the choice consumes (zeros for none)
    exhausted: bool  # a candidate with a positive score was skipped because it did not fit (hard stop)
    need: np.ndarray | None = None  # (K,) largest consumption among those skipped candidates (None if none)


def decide(value: np.ndarray, consumption: np.ndarray, prices: np.ndarray, remaining: np.ndarray) -> Decision:
    """argmax_j value_j - prices . m_j over candidates that fit `remaining` (K,), positive scores only."""
    value = np.asarray(value, dtype=np.float64)
    score = value - consumption @ prices
    fits = np.all(consumption <= remaining * (1.0 + _FIT_EPS) + 1e-12, axis=1)
    allowed = np.where(fits, score, -np.inf)
    j = int(np.argmax(allowed))
    best = float(allowed[j])
    positive = score > 0
    blocked = positive & ~fits
    exhausted = bool(blocked.any())
    need = consumption[blocked].max(axis=0) if exhausted else None
    if not best > 0:
        top = float(score.max()) if score.size else 0.0
        return Decision(-1, top, np.zeros(consumption.shape[1]), exhausted, need)
    return Decision(j, best, consumption[j].copy(), exhausted, need)


def dmd_step(prices: np.ndarray, consumed: np.ndarray, rate: np.ndarray, step: float, value_scale: float,
             unit: np.ndarray | None = None) -> np.ndarray:
    """One dual mirror descent step (see the module docstring); constraints with rate <= 0 (or unit <= 0) keep
    their price. `unit` (K,) is the consumption scale of constraint k; by default its rate."""
    if step <= 0:
        return prices
    rate = np.asarray(rate, dtype=np.float64)
    unit = rate if unit is None else np.asarray(unit, dtype=np.float64)
    ok = (rate > 0) & (unit > 0)
    safe = np.where(ok, unit, 1.0)
    move = (step * value_scale / safe) * (rate - consumed) / safe
    return np.where(ok, np.maximum(0.0, prices - move), prices)


def consumption_unit(unit: np.ndarray, consumed: np.ndarray, weight: float = 0.01) -> np.ndarray:
    """Running mean of what one allocation consumes of each constraint it touches (the DMD step's scale)."""
    touched = consumed > 0
    fresh = unit <= 0
    return np.where(touched, np.where(fresh, consumed, (1 - weight) * unit + weight * consumed), unit)
