"""Consistent tie-breaking (`planner.ties`): exact tie groups larger than the overshoot tolerance are split."""

from __future__ import annotations

import numpy as np
import pytest

from planner.evaluate import judge_prices, online_choices
from planner.highs import solve_exact
from planner.instance import validate_arrays
from planner.kernels import ArrayKernel
from planner.numba_kernels import NumbaKernel
from planner.solver import SolverConfig, certify, solve
from planner.ties import DEFAULT_TIE_BREAK, break_ties, tie_broken_values, tie_hash

CFG = SolverConfig()


def tied_groups(n: int = 6_000, levels: int = 60, seed: int = 0):
    """n users, two coupons each (items 0 and 1, count usage 1), one count cap per item at a quarter of the users.
    A user's values are exact levels (1 + 0.02 l0 and 0.5 + 0.02 l1, l uniform in [0, levels)), so users come in
    exact tie groups of ~n / levels (6.7% of a cap at the defaults) that no price separates."""
    rng = np.random.default_rng(seed)
    c = np.stack([1.0 + 0.02 * rng.integers(0, levels, size=n), 0.5 + 0.02 * rng.integers(0, levels, size=n)], axis=1)
    arrays = {"c": c, "mask": np.ones((n, 2), dtype=bool), "item": np.tile(np.array([0, 1], dtype=np.int32), (n, 1)),
              "w": np.ones((n, 2, 1)), "A": np.eye(2).reshape(1, 2, 2), "b": np.full(2, n / 4.0 + 0.5),
              "kind": np.array("factored")}
    return validate_arrays(arrays)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_groups_converge_with_the_tie_break_against_highs(seed):
    """With the default tie-break the solve meets 0.5% / 0.5% (both kernels); its dual bound is above HiGHS's
    optimum of the true values, its rule's true value within the gap of it, and a plain NumPy judgement agrees."""
    inst = tied_groups(seed=seed)
    groups = np.unique(inst.c[:, 0], return_counts=True)[1]
    assert groups.max() / inst.b[0] > 10 * CFG.violation_tol  # tie groups far larger than the tolerance
    exact = solve_exact(inst)
    assert exact.status == "Optimal"
    for kernel in (NumbaKernel(inst), ArrayKernel(inst)):
        sol = solve(kernel, inst.b)
        cert = sol.certificate
        assert sol.converged and cert.gap <= CFG.gap_tol and cert.max_violation <= CFG.violation_tol
        assert cert.dual_objective >= exact.objective * (1 - 1e-9)
        assert cert.primal_objective >= exact.objective * (1 - CFG.gap_tol)
        judged = judge_prices(inst, sol.lam, hard_stop=False)
        assert judged.primal_objective == pytest.approx(cert.primal_objective, rel=1e-12)
        assert judged.max_violation == pytest.approx(cert.max_violation, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_the_tie_break_the_hard_rule_cannot_converge(seed):
    """On the same instances the hard rule on the exact values moves whole groups at once: the solve fails."""
    inst = tied_groups(seed=seed)
    sol = solve(NumbaKernel(inst, tie_break=0.0), inst.b, SolverConfig(max_passes=400))
    assert not sol.converged


def test_without_the_tie_break_no_price_of_a_cap_lands_in_the_window():
    """With item 1's price fixed where the failed solve left it, no price of item 0 on a fine grid puts item 0's
    consumption within 0.5% of its cap: it moves in steps of whole tie groups."""
    inst = tied_groups(seed=0)
    kernel = NumbaKernel(inst, tie_break=0.0)
    lam1 = solve(kernel, inst.b, SolverConfig(max_passes=400)).lam[1]
    for p0 in np.linspace(0.0, 2.5, 2_501):
        res = kernel.evaluate(np.array([p0, lam1]), 0.0)
        assert abs(res.hard_consumption[0] / inst.b[0] - 1.0) > CFG.violation_tol


@pytest.mark.parametrize("seed", [0, 2])
def test_lower_temperatures_resolve_a_tie_break_narrower_than_the_last_stage(seed):
    """A tie-break of 2e-4 spreads each group over about two widths of the schedule's last temperature (1e-4):
    ending there, the smoothed solve converges but the rule stays over and the solve fails; going on to lower
    temperatures when that happens (`tau_min`, the default) converges, and its bound is above HiGHS's optimum."""
    inst = tied_groups(seed=seed)
    kernel = NumbaKernel(inst, tie_break=2e-4)
    stopped = solve(kernel, inst.b, SolverConfig(tau_min=CFG.tau_end))
    assert not stopped.converged and stopped.certificate.max_violation > CFG.violation_tol
    sol = solve(kernel, inst.b)
    assert sol.converged
    exact = solve_exact(inst)
    assert sol.certificate.dual_objective >= exact.objective * (1 - 1e-9)
    assert sol.certificate.primal_objective >= exact.objective * (1 - CFG.gap_tol)


def test_the_tie_break_is_bounded_deterministic_and_the_same_online():
    """c <= c' <= c (1 + delta) on positive values; the array form (planner) and the per-request form (online
    rule) give bit-identical values for the same ids; the kernels, the judge and partitions agree."""
    inst = tied_groups(n=500)
    c2 = tie_broken_values(inst.c, inst.item)
    assert np.all(c2 >= inst.c) and np.all(c2 <= inst.c * (1 + DEFAULT_TIE_BREAK))
    np.testing.assert_array_equal(c2, tie_broken_values(inst.c, inst.item))
    for user in (0, 17, 499):
        np.testing.assert_array_equal(break_ties(inst.c[user], user, inst.item[user].tolist()), c2[user])
    h = tie_hash(np.arange(10_000)[:, None], np.arange(4)[None, :])
    assert 0.0 <= h.min() and h.max() < 1.0 and abs(h.mean() - 0.5) < 0.01
    assert break_ties(np.ones(2), "user-a", ["x", "y"])[0] != break_ties(np.ones(2), "user-b", ["x", "y"])[0]
    lam = np.array([0.8, 0.3])
    a, b = ArrayKernel(inst).evaluate(lam, 0.01), NumbaKernel(inst).evaluate(lam, 0.01)
    assert a.hard_value == pytest.approx(b.hard_value, rel=1e-12) and a.primal_value == b.primal_value
    np.testing.assert_array_equal(a.hard_consumption, b.hard_consumption)
    choice = online_choices(inst, lam)
    assert float(np.where(choice >= 0, inst.c[np.arange(inst.n), choice], 0.0).sum()) == pytest.approx(a.primal_value)
    cert = certify(lam, inst.b, a)
    assert cert.dual_objective >= float(lam @ inst.b + np.maximum(inst.c - lam[inst.item], 0).max(axis=1).sum())
