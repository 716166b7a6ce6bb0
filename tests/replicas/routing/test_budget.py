"""Retry budget: retries may add at most a share of the traffic, over a sliding window."""

from __future__ import annotations

from replicas.routing.budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retries_are_capped_by_ratio_plus_floor():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_s=1.0, window_s=10.0, clock=clock)
    for _ in range(100):
        budget.record_request()
    allowed = sum(budget.try_retry() for _ in range(100))
    assert allowed == 20 + 10  # 20% of 100 requests plus 1/s over 10 s


def test_budget_recovers_as_the_window_slides():
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, window_s=2.0, clock=clock)
    for _ in range(10):
        budget.record_request()
    assert sum(budget.try_retry() for _ in range(10)) == 5
    assert not budget.try_retry()
    clock.now += 3.0  # the old requests and retries leave the window
    for _ in range(4):
        budget.record_request()
    assert sum(budget.try_retry() for _ in range(10)) == 2
