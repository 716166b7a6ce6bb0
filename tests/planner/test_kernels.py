"""The per-pass kernel: the namespace-generic code (the path CuPy runs) and the Numba twin compute the same sums."""

from __future__ import annotations

import numpy as np
import pytest

from planner.instance import dense_consumption, subset_users
from planner.kernels import ArrayKernel, combine_results
from planner.numba_kernels import NumbaKernel
from planner.ties import tie_broken_values
from tests.planner.planner_testlib import small_instance


def _brute_force(inst, lam, tau):
    """Straight from the definitions with the explicit (n, J, K) consumption: scores on the tie-broken values
    (`planner.ties`, hashed over the whole instance's rows), the primal on the true ones."""
    M = dense_consumption(inst)
    s = np.where(inst.mask, tie_broken_values(inst.c, inst.item) - M @ lam, -np.inf)
    j = np.argmax(s, axis=1)
    best = s[np.arange(inst.n), j]
    chosen = best > 0
    hard_cons = (M[np.arange(inst.n), j] * chosen[:, None]).sum(0)
    primal = inst.c[np.arange(inst.n), j][chosen].sum()
    z = np.concatenate([np.zeros((inst.n, 1)), s / tau], axis=1)
    zmax = z.max(1, keepdims=True)
    e = np.exp(z - zmax)
    soft = tau * (zmax[:, 0] + np.log(e.sum(1)))
    p = e[:, 1:] / e.sum(1, keepdims=True)
    soft_cons = np.einsum("ij,ijk->k", p, M)
    curvature = np.einsum("ij,ijk->k", p * (1 - p), M * M)  # the scaling's per-constraint curvature (x tau)
    return np.maximum(best, 0).sum(), primal, hard_cons, soft.sum(), soft_cons, curvature


@pytest.mark.parametrize("chunk", [7, 1 << 15])
def test_array_kernel_matches_definitions(chunk):
    """ArrayKernel on NumPy (the code CuPy runs) gives the dual part, primal value, hard and softmax consumption
    of the definitions, whatever the chunking."""
    inst = small_instance(n=300, K=6)
    lam = np.random.default_rng(0).uniform(0, 1.0, inst.K)
    res = ArrayKernel(inst, chunk_users=chunk).evaluate(lam, 0.05)
    hard, primal, hard_cons, soft, soft_cons, curvature = _brute_force(inst, lam, 0.05)
    assert res.hard_value == pytest.approx(hard, rel=1e-12)
    assert res.primal_value == pytest.approx(primal, rel=1e-12)
    np.testing.assert_allclose(res.hard_consumption, hard_cons, rtol=1e-10)
    assert res.smooth_value == pytest.approx(soft, rel=1e-10)
    np.testing.assert_allclose(res.smooth_consumption, soft_cons, rtol=1e-9)
    np.testing.assert_allclose(res.smooth_curvature, curvature, rtol=1e-9)
    assert ArrayKernel(inst).evaluate(lam, 0.0).smooth_curvature is None


def test_numba_kernel_equals_array_kernel():
    """The compiled parallel kernel returns the same sums as the NumPy kernel (hard and smoothed)."""
    inst = small_instance(n=1500, K=10)
    lam = np.random.default_rng(1).uniform(0, 0.8, inst.K)
    for tau in (0.0, 0.02):
        a = ArrayKernel(inst).evaluate(lam, tau)
        b = NumbaKernel(inst).evaluate(lam, tau)
        assert a.chosen == b.chosen
        assert b.hard_value == pytest.approx(a.hard_value, rel=1e-10)
        assert b.primal_value == pytest.approx(a.primal_value, rel=1e-10)
        np.testing.assert_allclose(b.hard_consumption, a.hard_consumption, rtol=1e-10)
        assert b.smooth_value == pytest.approx(a.smooth_value, rel=1e-10)
        np.testing.assert_allclose(b.smooth_consumption, a.smooth_consumption, rtol=1e-9, atol=1e-12)
        if tau > 0:
            np.testing.assert_allclose(b.smooth_curvature, a.smooth_curvature, rtol=1e-9, atol=1e-12)


def test_partition_sums_add_up():
    """Results over disjoint user partitions add up to the whole (what the Ray merger relies on)."""
    inst = small_instance(n=900, K=8)
    lam = np.full(inst.K, 0.3)
    whole = ArrayKernel(inst).evaluate(lam, 0.01)
    parts = [ArrayKernel(subset_users(inst, slice(a, b)), first_user=a).evaluate(lam, 0.01)
             for a, b in ((0, 400), (400, 900))]  # each partition hashes its users' global rows for the tie-break
    merged = combine_results(parts)
    assert merged.hard_value == pytest.approx(whole.hard_value, rel=1e-12)
    np.testing.assert_allclose(merged.smooth_consumption, whole.smooth_consumption, rtol=1e-10)
    np.testing.assert_allclose(merged.smooth_curvature, whole.smooth_curvature, rtol=1e-10)
    assert merged.users == 900 and merged.chosen == whole.chosen


def test_ties_go_to_lowest_slot_and_zero_score_gets_nothing():
    """Without the tie-break, equal scores choose the lowest j; a best score of exactly 0 allocates nothing."""
    from planner.instance import validate_arrays

    c = np.array([[2.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    arrays = {"c": c, "mask": np.array([[True, True, True], [True, False, False]]),
              "item": np.array([[0, 1, 0], [0, 0, 0]], dtype=np.int32),
              "w": np.array([[[1.0], [1.0], [0.0]], [[1.0], [0.0], [0.0]]]),
              "A": np.array([[[1.0, 0.0], [0.0, 1.0]]]), "b": np.array([5.0, 5.0]), "kind": np.array("factored")}
    inst = validate_arrays(arrays)
    res = NumbaKernel(inst, tie_break=0.0).evaluate(np.array([1.0, 1.0]), 0.0)
    np.testing.assert_array_equal(res.hard_consumption, [1.0, 0.0])  # user 0 takes slot 0 (item 0); user 1 nothing
    res2 = ArrayKernel(inst, tie_break=0.0).evaluate(np.array([1.0, 1.0]), 0.0)
    np.testing.assert_array_equal(res2.hard_consumption, [1.0, 0.0])
    assert res.chosen == res2.chosen == 1
