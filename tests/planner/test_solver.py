"""The dual solver against HiGHS on small instances, and its certificate."""

from __future__ import annotations

import numpy as np
import pytest

from planner.backends import make_kernel
from planner.evaluate import judge_prices
from planner.generate import GeneratorConfig, generate_instance
from planner.highs import solve_exact
from planner.instance import load_instance, save_instance
from planner.solver import SolverConfig, solve


@pytest.mark.parametrize("n,J,K,seed", [(2000, 5, 8, 3), (5000, 10, 20, 4), (3000, 8, 40, 5)])
def test_online_rule_within_half_percent_of_highs(n, J, K, seed):
    """The online rule's objective is within 0.5% of the LP optimum, no constraint is over by more than 0.5%,
    the dual objective is never below the optimum, and the certificate agrees with an independent judgement."""
    inst = generate_instance(GeneratorConfig(n=n, J=J, K=K, seed=seed))
    exact = solve_exact(inst)
    assert exact.status == "Optimal"
    sol = solve(make_kernel("numba", inst), inst.b, SolverConfig(gap_tol=1e-3, violation_tol=1e-3))
    cert = sol.certificate
    assert abs(cert.primal_objective - exact.objective) <= 0.005 * exact.objective
    assert cert.max_violation <= 0.005
    assert cert.dual_objective >= exact.objective * (1 - 1e-9)
    judged = judge_prices(inst, sol.lam, hard_stop=False)
    assert judged.primal_objective == pytest.approx(cert.primal_objective, rel=1e-9)
    assert judged.dual_objective == pytest.approx(cert.dual_objective, rel=1e-9)


def test_dense_instance_against_highs(tmp_path):
    """A dense-kind file is solved to the same standard."""
    inst = generate_instance(GeneratorConfig(n=1500, J=5, K=6, seed=11))
    save_instance(tmp_path / "d.npz", inst, dense=True)
    dense = load_instance(tmp_path / "d.npz")
    exact = solve_exact(dense)
    sol = solve(make_kernel("numpy", dense), dense.b, SolverConfig())
    assert abs(sol.certificate.primal_objective - exact.objective) <= 0.005 * exact.objective
    assert sol.certificate.max_violation <= 0.005
    assert sol.certificate.dual_objective >= exact.objective * (1 - 1e-9)


def test_numpy_and_numba_backends_agree():
    """Both backends run the same algorithm and land on the same prices and certificate."""
    inst = generate_instance(GeneratorConfig(n=4000, J=8, K=12, seed=8))
    a = solve(make_kernel("numpy", inst), inst.b)
    b = solve(make_kernel("numba", inst), inst.b)
    assert a.certificate.gap <= 2e-3 and b.certificate.gap <= 2e-3
    assert b.certificate.dual_objective == pytest.approx(a.certificate.dual_objective, rel=1e-4)
    assert b.certificate.primal_objective == pytest.approx(a.certificate.primal_objective, rel=2e-3)


def test_loose_capacities_need_no_prices():
    """When the greedy choice fits every capacity the prices are zero and the gap is zero at once."""
    inst = generate_instance(GeneratorConfig(n=500, J=4, K=5, seed=1))
    loose = inst.with_capacities(inst.b * 100)
    sol = solve(make_kernel("numpy", loose), loose.b)
    assert np.all(sol.lam == 0) and sol.certificate.gap == 0 and sol.iterations == 1


def test_trace_and_budget():
    """The trace records one certificate per pass; max_passes bounds the work and the best prices are kept."""
    inst = generate_instance(GeneratorConfig(n=3000, J=8, K=10, seed=2))
    sol = solve(make_kernel("numpy", inst), inst.b, SolverConfig(max_passes=5, nudge_rounds=0))
    assert sol.iterations <= 7 and len(sol.trace) == sol.iterations
    assert sol.certificate.dual_objective >= sol.certificate.primal_objective - 1e-6 or sol.certificate.max_violation > 0
