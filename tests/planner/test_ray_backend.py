"""--backend ray: partition actors on a real local Ray, merged in bulk-synchronous rounds."""

from __future__ import annotations

import numpy as np
import pytest

from planner.api import solve_file, solve_loaded
from planner.instance import load_instance, save_instance
from planner.ray_backend import RayConfig, RayKernel, partition_bounds
from planner.solver import SolverConfig
from tests.planner.planner_testlib import small_instance


def test_partition_bounds_cover_all_rows():
    """Row ranges are contiguous, disjoint and cover [0, n) (unit tier: no Ray)."""
    bounds = partition_bounds(10, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert partition_bounds(2, 5) == [(0, 1), (1, 2)]


@pytest.mark.integration
def test_ray_round_equals_single_process_pass(ray_cluster, tmp_path):
    """One round over 3 partition actors gives the same sums as one in-process pass."""
    from planner.kernels import ArrayKernel

    inst = small_instance(n=3000, K=10, seed=9)
    path = tmp_path / "i.npz"
    save_instance(path, inst)
    kernel = RayKernel(path, inst.K, inst.n, RayConfig(workers=3, worker_backend="numpy"))
    try:
        lam = np.full(inst.K, 0.4)
        got = kernel.evaluate(lam, 0.02)
        want = ArrayKernel(load_instance(path)).evaluate(lam, 0.02)
        assert got.users == 3000 and len(kernel.descriptions) == 3
        assert got.hard_value == pytest.approx(want.hard_value, rel=1e-12)
        np.testing.assert_allclose(got.smooth_consumption, want.smooth_consumption, rtol=1e-10)
    finally:
        kernel.close()


@pytest.mark.integration
def test_ray_solve_matches_single_process(ray_cluster, tmp_path):
    """The ray backend's prices reach the same certificate as the (cold, as n < 100k) single-process solve, and
    meet the default contract."""
    inst = small_instance(n=8000, J=8, K=12, seed=10)
    path = tmp_path / "i.npz"
    save_instance(path, inst)
    cfg = SolverConfig()
    # The single-process solve first: it compiles the Numba kernel here (or loads it) and leaves it in
    # NUMBA_CACHE_DIR, which the Ray workers inherit, so they load it instead of each compiling it again.
    local = solve_loaded(load_instance(path), "numba", cfg)
    ray_out = solve_file(path, "ray", cfg, ray_config=RayConfig(workers=2, worker_backend="numba"))
    assert ray_out["backend"] == "ray" and ray_out["ray"]["workers"] == 2
    assert ray_out["dual_objective"] == pytest.approx(local["dual_objective"], rel=1e-4)
    assert ray_out["primal_objective"] == pytest.approx(local["primal_objective"], rel=2e-3)
    assert ray_out["converged"] and ray_out["gap"] <= cfg.gap_tol and ray_out["max_violation"] <= cfg.violation_tol


@pytest.mark.integration
def test_connect_ray_joins_what_it_is_given(ray_cluster):
    """connect_ray never starts a second Ray in a process that already has one, and reports that it started
    none (so the caller does not shut down a Ray it did not start)."""
    import ray

    from planner.ray_backend import connect_ray

    assert ray.is_initialized()
    assert connect_ray() is False
    assert connect_ray(address="127.0.0.1:1") is False
