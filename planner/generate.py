"""A seeded generator of realistic allocation instances (coupons / ad spend across live traffic).

Shape of what it makes:
- a catalog of P items in categories, each with a base cost and a popularity (Zipf-like);
- each user sees between J/2 and J candidate items (the rest is padding), drawn by popularity;
- usage type r=0 is expected spend (item cost x user factor x noise), r=1 a count of 1, further types are
  random secondary usages (e.g. inventory units);
- value c is correlated with spend (spend x a lognormal return) plus a user-item affinity term;
- constraints: total_spend, total_count, category caps (counts per category) and per-item budgets (spend per
  popular item); A is sparse (each item touches at most four constraints);
- capacities are a seeded fraction (tightness) of what the unconstrained greedy choice would consume, so most
  constraints bind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.instance import Instance

__all__ = ["GeneratorConfig", "generate_instance"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes and shape knobs of a generated instance."""

    n: int = 10_000  # users
    J: int = 10  # candidate slots per user
    K: int = 10  # constraints (total_spend, total_count, category caps, item budgets, in that order)
    P: int = 0  # catalog items; 0 picks max(2K, 50)
    R: int = 2  # usage types: 0 spend, 1 count, further ones random secondary usages
    seed: int = 0  # everything is drawn from numpy's default_rng(seed)
    categories: int = 0  # item categories; 0 picks max(2, K // 8)
    tightness: tuple[float, float] = (0.3, 0.8)  # capacity / unconstrained consumption, uniform in this range
    min_fill: float = 0.5  # each user has at least ceil(min_fill * J) real candidates


def _constraint_layout(K: int, n_cat: int, P: int) -> tuple[int, int]:
    """How many category caps and item budgets fit in K after the two totals."""
    rest = max(0, K - 2)
    caps = min(n_cat, rest // 4) if rest >= 4 else 0
    budgets = rest - caps
    if budgets > P:
        caps += budgets - P
        budgets = P
    return caps, budgets


def generate_instance(cfg: GeneratorConfig) -> Instance:
    """A reproducible instance: the same config (and seed) always gives identical arrays."""
    if cfg.n < 1 or cfg.J < 1 or cfg.K < 1 or cfg.R < 1:
        raise ValueError("n, J, K and R must be >= 1")
    rng = np.random.default_rng(cfg.seed)
    n, J, K, R = cfg.n, cfg.J, cfg.K, cfg.R
    P = cfg.P or max(2 * K, 50)
    n_cat = cfg.categories or max(2, K // 8)
    J_eff = min(J, P)

    # Catalog.
    cost = rng.lognormal(mean=0.0, sigma=0.6, size=P)  # base spend per allocation
    category = rng.integers(0, n_cat, size=P)
    popularity = 1.0 / np.arange(1, P + 1) ** 0.8
    popularity = rng.permutation(popularity)
    popularity /= popularity.sum()
    item_roi = rng.lognormal(mean=0.3, sigma=0.3, size=P)

    # Candidates per user: distinct items drawn by popularity (Gumbel top-k), in chunks to bound memory.
    item = np.zeros((n, J), dtype=np.int32)
    log_pop = np.log(popularity)
    chunk = max(1, 4_000_000 // P)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        keys = log_pop[None, :] + rng.gumbel(size=(stop - start, P))
        top = np.argpartition(-keys, J_eff - 1, axis=1)[:, :J_eff]
        item[start:stop, :J_eff] = top.astype(np.int32)
    min_real = max(1, int(np.ceil(cfg.min_fill * J_eff)))
    n_real = rng.integers(min_real, J_eff + 1, size=n)
    mask = np.arange(J)[None, :] < n_real[:, None]
    item[~mask] = 0

    # Usage and value.
    user_factor = rng.lognormal(mean=0.0, sigma=0.4, size=n)
    w = np.zeros((n, J, R), dtype=np.float64)
    spend = cost[item] * user_factor[:, None] * rng.lognormal(0.0, 0.25, size=(n, J))
    w[:, :, 0] = spend
    if R > 1:
        w[:, :, 1] = 1.0
    for r in range(2, R):
        w[:, :, r] = rng.gamma(2.0, 0.5, size=(n, J))
    affinity = rng.exponential(0.3, size=(n, J)) * cost.mean()
    c = spend * item_roi[item] * rng.lognormal(0.0, 0.35, size=(n, J)) + affinity
    c[~mask] = 0.0
    w[~mask] = 0.0

    # Constraints.
    caps, budgets = _constraint_layout(K, n_cat, P)
    A = np.zeros((R, P, K), dtype=np.float64)
    ctype: list[str] = []
    cname: list[str] = []
    k = 0
    A[0, :, k] = 1.0
    ctype.append("total_spend"), cname.append("total_spend")
    k += 1
    if K >= 2:
        A[min(1, R - 1), :, k] = 1.0
        ctype.append("total_count"), cname.append("total_count")
        k += 1
    cat_order = rng.permutation(n_cat)[:caps]
    for cat in cat_order:
        A[min(1, R - 1), category == cat, k] = 1.0
        ctype.append("category_cap"), cname.append(f"category_{int(cat)}_count")
        k += 1
    budget_items = np.argsort(-popularity, kind="stable")[:budgets]
    for p in budget_items:
        A[0, p, k] = 1.0
        ctype.append("item_budget"), cname.append(f"item_{int(p)}_spend")
        k += 1
    extra = 0
    while k < K:  # more constraints than items and categories: secondary usage caps on random item sets
        r = 2 + extra % (R - 2) if R > 2 else 0
        members = rng.random(P) < 0.2
        A[r, members, k] = rng.uniform(0.5, 1.5, size=int(members.sum()))
        ctype.append("secondary_cap"), cname.append(f"secondary_{extra}")
        k += 1
        extra += 1

    # Capacities from the unconstrained greedy choice (best positive-value slot per user).
    best = np.argmax(np.where(mask, c, -np.inf), axis=1)
    rows = np.arange(n)
    chosen_item = item[rows, best]
    usage = np.zeros((R, P))
    for r in range(R):
        usage[r] = np.bincount(chosen_item, weights=w[rows, best, r], minlength=P)
    greedy = np.einsum("rp,rpk->k", usage, A)
    tight = rng.uniform(cfg.tightness[0], cfg.tightness[1], size=K)
    b = np.where(greedy > 0, greedy * tight, 1.0)
    return Instance(c=c, mask=mask, item=item, w=w, A=A, b=b, ctype=tuple(ctype), cname=tuple(cname),
                    kind="factored", seed=int(cfg.seed))
