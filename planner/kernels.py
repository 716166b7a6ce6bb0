"""The per-iteration pass over users, written once against an array namespace `xp` (NumPy or CuPy).

For prices lambda (K,), one pass computes, without ever forming the (n, J, K) consumption tensor:

    v[r, p]  = sum_k A[r, p, k] lambda_k                       (R, P): price of one unit of usage r of item p
    s_ij     = c_ij - sum_r w[i, j, r] v[r, item[i, j]]          scores, -inf on padding
    hard     : the online rule (argmax_j s_ij, lowest j on ties, nothing unless s > 0), its value sums and its
               consumption, accumulated per (r, item) first and multiplied by A once: O(nJR) + O(RPK)
    smooth   : the entropic smoothing at temperature tau (softmax over the slots and the "nothing" option), its
               value tau * log(1 + sum_j exp(s_ij / tau)) and expected consumption (the smoothed dual's gradient)

Scores use the tie-broken values c' (`planner.ties`: c raised by at most `tie_break` x |c| by a hash of (user,
item)), the rule's primal value the true c of the chosen slots, so the certificate prices the tie-break in.

Every pass returns a `PassResult` of host (NumPy) K-vectors and floats; results of user partitions simply add,
which is what the Ray merger does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.instance import Instance
from planner.ties import DEFAULT_TIE_BREAK, tie_broken_values

__all__ = ["PassResult", "ArrayKernel", "combine_results", "curvature_from_usage", "to_host"]


@dataclass(frozen=True)
class PassResult:
    """Sums over a set of users for one price vector (all additive across user partitions)."""

    hard_value: float  # sum_i max(0, max_j s_ij): the dual's user part at these prices (tie-broken values)
    primal_value: float  # sum_i c_i,chosen: objective of the online rule (true values)
    hard_consumption: np.ndarray  # (K,) consumption of the online rule
    smooth_value: float  # sum_i tau * log(1 + sum_j exp(s_ij / tau)); 0.0 when tau == 0
    smooth_consumption: np.ndarray  # (K,) expected consumption under the softmax; zeros when tau == 0
    users: int  # how many users were summed
    chosen: int  # how many users the rule gives something
    # (K,) sum_i sum_j p_ij (1 - p_ij) (m_ij^k)^2: tau x the diagonal of the smoothed dual's Hessian, without the
    # (negative) cross-slot terms; the solver's per-constraint scaling. None when tau == 0 or the kernel lacks it.
    smooth_curvature: np.ndarray | None = None


def combine_results(parts: list[PassResult]) -> PassResult:
    """The result for the union of disjoint user sets."""
    return PassResult(
        hard_value=float(sum(p.hard_value for p in parts)),
        primal_value=float(sum(p.primal_value for p in parts)),
        hard_consumption=np.sum([p.hard_consumption for p in parts], axis=0),
        smooth_value=float(sum(p.smooth_value for p in parts)),
        smooth_consumption=np.sum([p.smooth_consumption for p in parts], axis=0),
        users=int(sum(p.users for p in parts)),
        chosen=int(sum(p.chosen for p in parts)),
        smooth_curvature=None if any(p.smooth_curvature is None for p in parts)
        else np.sum([p.smooth_curvature for p in parts], axis=0),
    )


def curvature_from_usage(usage_curv: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(K,) sum_{r,s,p} U[r, s, p] A[r, p, k] A[s, p, k] from per-(r, s, item) sums of p(1-p) w_r w_s."""
    return np.einsum("rsp,rpk,spk->k", usage_curv, A, A)


def to_host(x) -> np.ndarray:
    """A NumPy copy of an xp array (CuPy arrays have .get(); NumPy arrays pass through)."""
    get = getattr(x, "get", None)
    return np.asarray(get() if get is not None else x)


class ArrayKernel:
    """The pass written against `xp`; arrays are moved to xp's device once, at construction.

    `chunk_users` bounds temporaries to a few (chunk, J) arrays, which keeps NumPy in cache and CuPy within memory.
    `tie_break`: relative size of the tie-breaking raise of the values (0: none); `first_user`: the row of this
    block's first user in the whole instance (a partition's offset), which the tie-break hashes.
    """

    name = "numpy"

    def __init__(self, inst: Instance, xp=np, chunk_users: int = 1 << 15, name: str | None = None,
                 tie_break: float = DEFAULT_TIE_BREAK, first_user: int = 0):
        self.xp = xp
        self.name = name or ("numpy" if xp is np else getattr(xp, "__name__", "xp"))
        self.K, self.R, self.P = inst.K, inst.R, inst.P
        self.n = inst.n
        self.chunk_users = max(1, int(chunk_users))
        self.c = xp.asarray(inst.c)
        self.c_score = self.c if tie_break <= 0 else xp.asarray(tie_broken_values(inst.c, inst.item, tie_break,
                                                                                   first_user))
        self.mask = xp.asarray(inst.mask)
        self.item = xp.asarray(inst.item)
        self.w = xp.asarray(inst.w)
        self.A = xp.asarray(inst.A)
        self.A_host = inst.A

    def evaluate(self, lam: np.ndarray, tau: float = 0.0) -> PassResult:
        xp = self.xp
        R, P, K = self.R, self.P, self.K
        v = xp.asarray(np.einsum("rpk,k->rp", self.A_host, np.asarray(lam, dtype=np.float64)))
        usage_hard = xp.zeros((R, P))
        usage_soft = xp.zeros((R, P))
        usage_curv = xp.zeros((R, R, P))
        hard_value = xp.zeros(())
        primal_value = xp.zeros(())
        smooth_value = xp.zeros(())
        chosen_count = xp.zeros((), dtype=xp.int64)
        for start in range(0, self.n, self.chunk_users):
            stop = min(self.n, start + self.chunk_users)
            c = self.c[start:stop]
            cs = self.c_score[start:stop]
            mask = self.mask[start:stop]
            item = self.item[start:stop]
            w = self.w[start:stop]
            load = w[:, :, 0] * v[0][item]
            for r in range(1, R):
                load += w[:, :, r] * v[r][item]
            s = xp.where(mask, cs - load, -xp.inf)
            rows = xp.arange(stop - start)
            jstar = xp.argmax(s, axis=1)  # first maximum: ties go to the lowest j
            best = s[rows, jstar]
            chosen = best > 0
            hard_value += xp.sum(xp.where(chosen, best, 0.0))
            primal_value += xp.sum(xp.where(chosen, c[rows, jstar], 0.0))
            chosen_count += xp.sum(chosen)
            chosen_item = item[rows, jstar]
            for r in range(R):
                usage_hard[r] += xp.bincount(chosen_item, weights=xp.where(chosen, w[rows, jstar, r], 0.0),
                                             minlength=P)
            if tau > 0:
                zmax = xp.maximum(best, 0.0) / tau
                e = xp.where(mask, xp.exp(s / tau - zmax[:, None]), 0.0)
                denom = xp.exp(-zmax) + xp.sum(e, axis=1)
                smooth_value += tau * xp.sum(zmax + xp.log(denom))
                prob = e / denom[:, None]
                flat_item = item.ravel()
                for r in range(R):
                    usage_soft[r] += xp.bincount(flat_item, weights=(prob * w[:, :, r]).ravel(), minlength=P)
                    spread = prob * (1.0 - prob) * w[:, :, r]
                    for r2 in range(R):
                        usage_curv[r, r2] += xp.bincount(flat_item, weights=(spread * w[:, :, r2]).ravel(),
                                                         minlength=P)
        hard_cons = np.einsum("rp,rpk->k", to_host(usage_hard), self.A_host)
        soft_cons = np.einsum("rp,rpk->k", to_host(usage_soft), self.A_host) if tau > 0 else np.zeros(K)
        return PassResult(
            hard_value=float(to_host(hard_value)), primal_value=float(to_host(primal_value)),
            hard_consumption=hard_cons, smooth_value=float(to_host(smooth_value)), smooth_consumption=soft_cons,
            users=self.n, chosen=int(to_host(chosen_count)),
            smooth_curvature=curvature_from_usage(to_host(usage_curv), self.A_host) if tau > 0 else None,
        )

    def close(self) -> None:
        """Nothing to release for in-process arrays (the Ray kernel overrides this)."""
