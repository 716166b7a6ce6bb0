"""Pacing remaining budgets to the forecast, and the per-constraint correction."""

from __future__ import annotations

import numpy as np
import pytest

from planner.allocation.pacing import (
    paced_capacities,
    per_request_rates,
    update_correction,
)


def test_sample_capacity_is_remaining_budget_times_sample_share():
    """b_k(t) * |S| / N(t): half the budget left, a 1,000-request sample for 10,000 coming requests -> 5%."""
    cap, used = np.array([100.0, 40.0]), np.array([50.0, 10.0])
    assert paced_capacities(cap, used, 1000, 10_000).tolist() == pytest.approx([5.0, 3.0])
    assert per_request_rates(cap, used, 10_000).tolist() == pytest.approx([0.005, 0.003])


def test_exhausted_budget_gets_a_tiny_positive_capacity_and_few_coming_requests_loosen():
    """A used-up (or overspent) budget keeps a tiny positive capacity; when fewer requests are to come than the
    sample holds, the sample's capacity exceeds what remains (each coming request may take more)."""
    paced = paced_capacities(np.array([100.0]), np.array([120.0]), 1000, 10_000)
    assert 0 < paced[0] < 1e-6
    assert paced_capacities(np.array([100.0]), np.array([0.0]), 1000, 10)[0] == pytest.approx(10_000.0)


def test_correction_tightens_when_consumption_runs_ahead_and_loosens_when_behind():
    """Ahead of plan: the factor drops; behind: it rises; bounded per step and overall; no plan: unchanged."""
    c = np.ones(4)
    new = update_correction(c, planned=np.array([1.0, 1.0, 1.0, 0.0]), actual=np.array([1.2, 0.9, 100.0, 3.0]),
                            gain=0.5)
    assert new[0] == pytest.approx((1 / 1.2) ** 0.5) and new[1] == pytest.approx((1 / 0.9) ** 0.5)
    assert new[2] == 0.8 and new[3] == 1.0
    for _ in range(20):
        c = update_correction(c, np.array([1.0] * 4), np.array([9.0] * 4), gain=1.0)
    assert np.all(c == 0.5)
