"""The pure decision: argmax of value - prices . usage with a hard stop, and the per-request dual step."""

from __future__ import annotations

import time

import numpy as np
import pytest

from planner.allocation.decide import (
    ConstraintMatrix,
    consumption_unit,
    decide,
    dmd_step,
)
from tests.planner.allocation.allocation_testlib import coupon_scenario


def test_constraint_matrix_follows_the_scenario():
    """A constraint without items counts its usage type for every item; one with items only for those."""
    m = ConstraintMatrix(coupon_scenario())
    assert m.weights("coupon_b").tolist() == [[1, 0], [0, 0]]  # spend -> total_spend only
    assert m.weights("coupon_a").tolist() == [[1, 0], [0, 1]]  # and count -> coupon_a_stock
    usage = np.array([[3.0, 1.0], [2.0, 1.0]])
    assert m.consumption(["coupon_a", "coupon_b"], usage).tolist() == [[3.0, 1.0], [2.0, 0.0]]


def test_argmax_of_value_minus_priced_usage():
    """The best net score wins, not the best value; ties go to the lowest index."""
    cons = np.array([[3.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    d = decide(np.array([1.0, 0.6, 0.6]), cons, np.array([0.2, 0.1]), np.array([100.0, 10.0]))
    assert d.index == 1 and d.score == pytest.approx(0.4) and d.consumption.tolist() == [1.0, 0.0]


def test_nothing_unless_the_score_is_positive():
    """When every net score is <= 0 nobody gets anything and nothing is consumed."""
    d = decide(np.array([0.5]), np.array([[1.0, 1.0]]), np.array([0.5, 0.0]), np.array([9.0, 9.0]))
    assert d.index == -1 and d.consumption.tolist() == [0.0, 0.0] and not d.exhausted


def test_hard_stop_skips_candidates_that_do_not_fit():
    """A candidate needing more than what remains of any constraint it touches is skipped, even at zero prices."""
    cons = np.array([[3.0, 1.0], [2.0, 0.0]])
    d = decide(np.array([5.0, 1.0]), cons, np.zeros(2), np.array([100.0, 0.5]))
    assert d.index == 1 and d.exhausted
    d = decide(np.array([5.0, 1.0]), cons, np.zeros(2), np.array([1.0, 0.5]))
    assert d.index == -1 and d.exhausted


def test_dual_step_raises_prices_when_consuming_ahead_of_plan():
    """Consuming more than the per-request rate raises the price, less lowers it (never below 0); rate 0 keeps."""
    lam = np.array([1.0, 1.0, 0.01, 2.0])
    rate = np.array([1.0, 1.0, 1.0, 0.0])
    new = dmd_step(lam, np.array([3.0, 0.0, 0.0, 5.0]), rate, step=0.1, value_scale=1.0)
    assert new[0] > 1.0 and new[1] < 1.0 and new[2] == 0.0 and new[3] == 2.0
    assert dmd_step(lam, np.zeros(4), rate, 0.0, 1.0) is lam


def test_small_budgets_move_as_fast_in_relative_terms():
    """In units of the per-request rate, a small and a large budget take the same relative step."""
    rate = np.array([100.0, 0.01])
    lam = np.array([1.0 / 100.0, 1.0 / 0.01])  # equal prices in rate units
    new = dmd_step(lam, 2 * rate, rate, step=0.1, value_scale=1.0)
    assert (new * rate)[0] == pytest.approx((new * rate)[1])


def test_a_decision_takes_well_under_a_millisecond():
    """Twenty candidates, fifty constraints: the vectorised decision with the matrix lookup is fast (loose bound,
    the benchmark measures it properly)."""
    m = ConstraintMatrix(coupon_scenario())
    rng = np.random.default_rng(0)
    items = [f"coupon_{c}" for c in "ab" * 10]
    usage = rng.random((20, 2))
    t0 = time.perf_counter()
    for _ in range(200):
        cons = m.consumption(items, usage)
        decide(rng.random(20), cons, np.array([0.1, 0.2]), np.array([50.0, 5.0]))
    assert (time.perf_counter() - t0) / 200 < 2e-3


def test_step_in_consumption_units_keeps_lumpy_small_budgets_calm():
    """With the consumption unit as scale, one allocation against a small lumpy budget moves its price by about
    one step of value per unit, not by m / rho steps; and the unit is a running mean of what allocations consume."""
    unit = np.zeros(2)
    unit = consumption_unit(unit, np.array([5.0, 0.0]))
    assert unit.tolist() == [5.0, 0.0]
    unit = consumption_unit(unit, np.array([6.0, 0.0]), weight=0.5)
    assert unit.tolist() == [5.5, 0.0]
    rate = np.array([0.05, 0.05])
    lam = np.zeros(2)
    textbook = dmd_step(lam, np.array([5.0, 0.0]), rate, 0.01, 1.0)
    scaled = dmd_step(lam, np.array([5.0, 0.0]), rate, 0.01, 1.0, unit=np.array([5.0, 0.0]))
    assert textbook[0] == pytest.approx(0.01 / 0.05 * 99)
    assert scaled[0] == pytest.approx(0.01 / 5.0 * 4.95 / 5.0) and scaled[1] == 0.0
