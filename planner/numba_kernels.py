"""The same pass as `planner.kernels.ArrayKernel`, as Numba-compiled parallel loops (prange over user blocks).

Each block keeps its own (R, P) usage accumulators, so there are no races and no atomics; the blocks are summed
and multiplied by A once at the end. Compiled with `cache=True`: the cache directory comes from NUMBA_CACHE_DIR,
which the CLI and the test configuration set at their edge.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange  # a plain import: nothing is compiled until _compiled() runs

from planner.instance import Instance
from planner.kernels import PassResult, curvature_from_usage
from planner.ties import DEFAULT_TIE_BREAK, tie_broken_values

__all__ = ["NumbaKernel", "numba_available"]


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:  # pragma: no cover - numba is a core dependency
        return False
    return True


def _user_pass(cs, c, mask, item, w, v, tau, n_blocks):  # compiled lazily by _compiled()
    n, J = c.shape
    R = w.shape[2]
    P = v.shape[1]
    smooth = tau > 0.0
    usage_hard = np.zeros((n_blocks, R, P))
    usage_soft = np.zeros((n_blocks, R, P) if smooth else (1, 1, 1))
    usage_curv = np.zeros((n_blocks, R, R, P) if smooth else (1, 1, 1, 1))
    sums = np.zeros((n_blocks, 4))  # hard value, primal value, smooth value, chosen count
    for t in prange(n_blocks):
        lo = t * n // n_blocks
        hi = (t + 1) * n // n_blocks
        s = np.empty(J)
        hard = 0.0
        primal = 0.0
        soft = 0.0
        count = 0.0
        for i in range(lo, hi):
            best = -np.inf
            jb = -1
            for j in range(J):
                if mask[i, j]:
                    it = item[i, j]
                    acc = cs[i, j]  # tie-broken value: the rule's score
                    for r in range(R):
                        acc -= w[i, j, r] * v[r, it]
                    s[j] = acc
                    if acc > best:
                        best = acc
                        jb = j
                else:
                    s[j] = -np.inf
            if best > 0.0:
                hard += best
                primal += c[i, jb]
                count += 1.0
                it = item[i, jb]
                for r in range(R):
                    usage_hard[t, r, it] += w[i, jb, r]
            if smooth:
                zmax = best / tau if best > 0.0 else 0.0
                denom = math.exp(-zmax)
                for j in range(J):
                    if mask[i, j]:
                        d = s[j] / tau - zmax
                        e = math.exp(d) if d > -40.0 else 0.0  # exp(-40) = 4e-18: below what float64 adds up
                        s[j] = e
                        denom += e
                soft += tau * (zmax + math.log(denom))
                inv = 1.0 / denom
                for j in range(J):
                    if mask[i, j] and s[j] > 0.0:
                        p = s[j] * inv
                        it = item[i, j]
                        q = p * (1.0 - p)
                        for r in range(R):
                            usage_soft[t, r, it] += p * w[i, j, r]
                            for r2 in range(R):
                                usage_curv[t, r, r2, it] += q * w[i, j, r] * w[i, j, r2]
        sums[t, 0] = hard
        sums[t, 1] = primal
        sums[t, 2] = soft
        sums[t, 3] = count
    return usage_hard.sum(axis=0), usage_soft.sum(axis=0), usage_curv.sum(axis=0), sums.sum(axis=0)


_COMPILED = None


def _compiled():
    """Compile (or load from the on-disk cache) the kernel on first use, never at import time."""
    global _COMPILED
    if _COMPILED is None:
        from numba import njit

        _COMPILED = njit(parallel=True, cache=True, nogil=True)(_user_pass)
    return _COMPILED


class NumbaKernel:
    """Compiled-loop twin of ArrayKernel on host NumPy arrays (no copies of the instance's arrays but the
    tie-broken values; `tie_break` and `first_user` as in ArrayKernel)."""

    name = "numba"

    def __init__(self, inst: Instance, blocks_per_thread: int = 4, tie_break: float = DEFAULT_TIE_BREAK,
                 first_user: int = 0):
        import numba

        self.K, self.R, self.P, self.n = inst.K, inst.R, inst.P, inst.n
        self.c, self.mask, self.item, self.w = inst.c, inst.mask, inst.item, inst.w
        self.A = inst.A
        self.c_score = tie_broken_values(inst.c, inst.item, tie_break, first_user)  # inst.c itself when 0
        self.n_blocks = max(1, min(self.n, numba.get_num_threads() * blocks_per_thread))
        self._pass = _compiled()

    def evaluate(self, lam: np.ndarray, tau: float = 0.0) -> PassResult:
        v = np.ascontiguousarray(np.einsum("rpk,k->rp", self.A, np.asarray(lam, dtype=np.float64)))
        usage_hard, usage_soft, usage_curv, sums = self._pass(self.c_score, self.c, self.mask, self.item, self.w, v,
                                                              float(tau), self.n_blocks)
        hard_cons = np.einsum("rp,rpk->k", usage_hard, self.A)
        soft_cons = np.einsum("rp,rpk->k", usage_soft, self.A) if tau > 0 else np.zeros(self.K)
        return PassResult(hard_value=float(sums[0]), primal_value=float(sums[1]), hard_consumption=hard_cons,
                          smooth_value=float(sums[2]), smooth_consumption=soft_cons, users=self.n,
                          chosen=int(sums[3]),
                          smooth_curvature=curvature_from_usage(usage_curv, self.A) if tau > 0 else None)

    def close(self) -> None:
        """Nothing to release."""
