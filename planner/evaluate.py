"""Judging a dual-price vector on an instance, as `shared/lp-instance-format.md` describes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.instance import Instance
from planner.kernels import ArrayKernel
from planner.solver import certify
from planner.ties import DEFAULT_TIE_BREAK, tie_broken_values

__all__ = ["Judgement", "judge_prices", "online_choices", "hard_stop_objective"]


@dataclass(frozen=True)
class Judgement:
    """Everything the format document asks for about one price vector."""

    dual_objective: float  # lambda . b + sum_i max(0, max_j score): an upper bound on the optimum
    primal_objective: float  # objective of the online rule's allocation
    max_violation: float  # max_k (consumption_k / b_k - 1), at least 0
    gap: float  # (dual - primal) / |dual|
    hard_stop_objective: float  # random-order serving with a hard budget stop
    consumption: np.ndarray  # (K,) of the online rule


def online_choices(inst: Instance, lam: np.ndarray, tie_break: float = DEFAULT_TIE_BREAK) -> np.ndarray:
    """Chosen slot per user (-1 for nothing): argmax over real slots of the tie-broken score (`planner.ties`; exact
    ties left then go to the lowest j), only if that score is > 0: the choices the kernels' pass makes."""
    v = np.einsum("rpk,k->rp", inst.A, np.asarray(lam, dtype=np.float64))
    load = np.zeros(inst.c.shape)
    for r in range(inst.R):
        load += inst.w[:, :, r] * v[r][inst.item]
    s = np.where(inst.mask, tie_broken_values(inst.c, inst.item, tie_break) - load, -np.inf)
    j = np.argmax(s, axis=1)
    best = s[np.arange(inst.n), j]
    return np.where(best > 0, j, -1)


def hard_stop_objective(inst: Instance, choice: np.ndarray, seed: int = 0) -> float:
    """Serve users in a random order; a user whose chosen slot no longer fits every remaining budget gets nothing."""
    order = np.random.default_rng(seed).permutation(inst.n)
    remaining = inst.b.copy()
    total = 0.0
    for i in order:
        j = choice[i]
        if j < 0:
            continue
        m = inst.w[i, j] @ inst.A[:, inst.item[i, j], :]
        if np.all(m <= remaining + 1e-12):
            remaining -= m
            total += inst.c[i, j]
    return float(total)


def judge_prices(inst: Instance, lam: np.ndarray, seed: int = 0, hard_stop: bool = True) -> Judgement:
    """The certificate of `lam` on `inst` plus the random-order hard-stop objective (a Python loop: small n)."""
    lam = np.asarray(lam, dtype=np.float64)
    if lam.shape != (inst.K,):
        raise ValueError(f"lambda has shape {lam.shape}, the instance has K={inst.K} constraints")
    if (lam < 0).any() or not np.isfinite(lam).all():
        raise ValueError("lambda must be finite and >= 0")
    res = ArrayKernel(inst).evaluate(lam, 0.0)
    cert = certify(lam, inst.b, res)
    hs = hard_stop_objective(inst, online_choices(inst, lam), seed) if hard_stop else float("nan")
    return Judgement(dual_objective=cert.dual_objective, primal_objective=cert.primal_objective,
                     max_violation=cert.max_violation, gap=cert.gap, hard_stop_objective=hs,
                     consumption=res.hard_consumption)
