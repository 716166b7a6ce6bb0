"""A seeded generator of allocation instances (coupons / ad spend across live traffic), in named families.

Shape of what it makes (the `baseline` family; the others change one or two of these, see `FAMILIES`):
- a catalog of P items in categories, each with a base cost and a popularity (Zipf-like);
- each user sees between J/2 and J candidate items (the rest is padding), drawn by popularity;
- usage type r=0 is expected spend (item cost x user factor x noise), r=1 a count of 1, further types are
  random secondary usages (e.g. inventory units);
- value c is correlated with spend (spend x a lognormal return) plus a user-item affinity term;
- constraints: total_spend, total_count, category caps (counts per category) and per-item budgets (spend per
  popular item); A is sparse (each item touches at most four constraints);
- capacities are a seeded fraction (tightness) of what the unconstrained greedy choice would consume, so most
  constraints bind.

Families are what real campaigns look like and the solver was not tuned on: candidates drawn from a larger
catalog, budgets binding at 10% / 30% / 80% of demand, budgets on items of every popularity, caps on spend as well
as counts, heavy-tailed values, exact ties, constraints that never bind, and capacities at their floor (a few
allocations' worth). `family_config(name, n, J, K, seed)` builds the config of a family.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from planner.instance import Instance

__all__ = ["GeneratorConfig", "generate_instance", "FAMILIES", "family_config"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes and shape knobs of a generated instance."""

    n: int = 10_000  # users
    J: int = 10  # candidate slots per user
    K: int = 10  # constraints (total_spend, total_count, category caps, item budgets, in that order)
    P: int = 0  # catalog items; 0 picks max(catalog_factor * K, 50)
    R: int = 2  # usage types: 0 spend, 1 count, further ones random secondary usages
    seed: int = 0  # everything is drawn from numpy's default_rng(seed)
    categories: int = 0  # item categories; 0 picks max(2, K // 8)
    tightness: tuple[float, float] = (0.3, 0.8)  # capacity / unconstrained consumption, uniform in this range
    min_fill: float = 0.5  # each user has at least ceil(min_fill * J) real candidates
    family: str = "baseline"  # the family's name (a label; the knobs below make the family)
    catalog_factor: int = 2  # P = max(catalog_factor * K, 50) when P is 0
    candidates: str = "popular"  # popular: J distinct items by Zipf popularity; subset: near-uniform draws
    budget_items: str = "popular"  # popular: item budgets on the most popular items; any: on random items
    cap_usage: str = "count"  # count: category caps count allocations; mixed: every other cap is on spend
    values: str = "lognormal"  # lognormal returns on spend; pareto: heavy-tailed; ties: a few exact face values
    slack: int = 0  # this many item budgets get 5x their demand (they never bind)
    floors: int = 0  # this many item budgets get capacity for ~3 allocations (near-infeasible floors)


GUMBEL_LIMIT = 200_000_000  # users x catalog items above which candidates are drawn with replacement (1M x 200: not)

FAMILIES: dict[str, tuple[str, dict]] = {  # name: (what it stands for, GeneratorConfig overrides)
    "baseline": ("the original generator: popular candidates, budgets on popular items, count caps", {}),
    "subset": ("each user sees a random subset of a 5x larger catalog (10 items per constraint)",
               dict(candidates="subset", catalog_factor=10)),
    "bind10": ("every capacity at 10% of unconstrained demand", dict(tightness=(0.1, 0.1))),
    "bind30": ("every capacity at 30% of unconstrained demand", dict(tightness=(0.3, 0.3))),
    "bind80": ("every capacity at 80% of unconstrained demand", dict(tightness=(0.8, 0.8))),
    "anypop": ("item budgets on items of every popularity", dict(budget_items="any", catalog_factor=4)),
    "spendcaps": ("category caps on spend as well as on counts", dict(cap_usage="mixed")),
    "heavytail": ("heavy-tailed values (Pareto, infinite variance)", dict(values="pareto")),
    "ties": ("coupons with a few face values: values tie exactly across a user's slots and across users",
             dict(values="ties")),
    "slack": ("a few constraints that never bind", dict(slack=5)),
    "floors": ("a few item budgets at their floor: room for ~3 allocations", dict(floors=5)),
    "mixed": ("issue 11's report: subset candidates, 20-50% binding, budgets of every popularity, spend caps",
              dict(candidates="subset", catalog_factor=10, tightness=(0.2, 0.5), budget_items="any",
                   cap_usage="mixed")),
}


def family_config(family: str, n: int, J: int, K: int, seed: int = 0, **overrides) -> GeneratorConfig:
    """The config of a named family at these sizes; ValueError naming the known families otherwise."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")
    knobs = dict(FAMILIES[family][1])
    knobs.update(overrides)
    return replace(GeneratorConfig(n=n, J=J, K=K, seed=seed, family=family), **knobs)


def _constraint_layout(K: int, n_cat: int, P: int) -> tuple[int, int]:
    """How many category caps and item budgets fit in K after the two totals."""
    rest = max(0, K - 2)
    caps = min(n_cat, rest // 4) if rest >= 4 else 0
    budgets = rest - caps
    if budgets > P:
        caps += budgets - P
        budgets = P
    return caps, budgets


def _popular_candidates(rng, popularity: np.ndarray, n: int, J: int) -> tuple[np.ndarray, np.ndarray]:
    """J distinct items per user drawn by popularity (Gumbel top-k, in chunks to bound memory). Returns (item,
    distinct). Past GUMBEL_LIMIT draws (e.g. 10M users x 2,000 items) it draws with replacement by popularity instead
    and makes repeats padding: the same distribution of what users see, at O(nJ log P) instead of O(nP)."""
    P = popularity.size
    if n * P > GUMBEL_LIMIT:
        cdf = np.cumsum(popularity)
        item = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random((n, J))), P - 1).astype(np.int32)
        item.sort(axis=1)
        distinct = np.ones((n, J), dtype=bool)
        distinct[:, 1:] = item[:, 1:] != item[:, :-1]
        return item, distinct
    J_eff = min(J, P)
    item = np.zeros((n, J), dtype=np.int32)
    log_pop = np.log(popularity)
    chunk = max(1, 4_000_000 // P)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        keys = log_pop[None, :] + rng.gumbel(size=(stop - start, P))
        top = np.argpartition(-keys, J_eff - 1, axis=1)[:, :J_eff]
        item[start:stop, :J_eff] = top.astype(np.int32)
    return item, np.ones((n, J), dtype=bool)


def _subset_candidates(rng, P: int, n: int, J: int) -> tuple[np.ndarray, np.ndarray]:
    """J draws per user from a mildly skewed catalog; repeated draws become padding. Returns (item, distinct)."""
    weights = 1.0 / np.arange(1, P + 1) ** 0.3
    cdf = np.cumsum(rng.permutation(weights))
    cdf /= cdf[-1]
    item = np.searchsorted(cdf, rng.random((n, J))).astype(np.int32)
    np.minimum(item, P - 1, out=item)
    item.sort(axis=1)
    distinct = np.ones((n, J), dtype=bool)
    distinct[:, 1:] = item[:, 1:] != item[:, :-1]
    return item, distinct


def _values(rng, cfg: GeneratorConfig, cost, item, user_factor, spend) -> tuple[np.ndarray, np.ndarray]:
    """(c, spend) for the family's value model; spend may be replaced (ties use exact face values)."""
    n, J = item.shape
    P = cost.size
    if cfg.values == "ties":  # a user values every coupon of one face value exactly alike; spend varies
        face = rng.choice(np.array([1.0, 2.0, 5.0, 10.0]), size=P)
        return face[item] * np.round(user_factor, 1)[:, None], spend
    item_roi = rng.lognormal(mean=0.3, sigma=0.3, size=P)
    if cfg.values == "pareto":
        ret = (rng.pareto(1.5, size=(n, J)) + 1.0) * 0.5
    else:
        ret = rng.lognormal(0.0, 0.35, size=(n, J))
    affinity = rng.exponential(0.3, size=(n, J)) * cost.mean()
    return spend * item_roi[item] * ret + affinity, spend


def _constraints(rng, cfg: GeneratorConfig, P: int, n_cat: int, category, popularity):
    """(A, ctype, cname, budget slots): the constraint matrix in the order the module docstring gives."""
    K, R = cfg.K, cfg.R
    caps, budgets = _constraint_layout(K, n_cat, P)
    A = np.zeros((R, P, K), dtype=np.float64)
    ctype: list[str] = ["total_spend"]
    cname: list[str] = ["total_spend"]
    A[0, :, 0] = 1.0
    k = 1
    if K >= 2:
        A[min(1, R - 1), :, k] = 1.0
        ctype.append("total_count"), cname.append("total_count")
        k += 1
    for idx, cat in enumerate(rng.permutation(n_cat)[:caps]):
        on_spend = cfg.cap_usage == "mixed" and idx % 2 == 1
        A[0 if on_spend else min(1, R - 1), category == cat, k] = 1.0
        ctype.append("category_cap"), cname.append(f"category_{int(cat)}_{'spend' if on_spend else 'count'}")
        k += 1
    if cfg.budget_items == "any":
        budget_items = rng.permutation(P)[:budgets]
    else:
        budget_items = np.argsort(-popularity, kind="stable")[:budgets]
    first_budget = k
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
    return A, ctype, cname, np.arange(first_budget, first_budget + budgets)


def _capacities(rng, cfg: GeneratorConfig, c, mask, item, w, A, budget_slots) -> np.ndarray:
    """Capacities from the unconstrained greedy choice (best positive-value slot per user), per the family."""
    n, _ = c.shape
    R, P, K = A.shape
    best = np.argmax(np.where(mask, c, -np.inf), axis=1)
    rows = np.arange(n)
    chosen_item = item[rows, best]
    usage = np.zeros((R, P))
    for r in range(R):
        usage[r] = np.bincount(chosen_item, weights=w[rows, best, r], minlength=P)
    greedy = np.einsum("rp,rpk->k", usage, A)
    tight = rng.uniform(cfg.tightness[0], cfg.tightness[1], size=K)
    b = np.where(greedy > 0, greedy * tight, 1.0)
    picked = rng.permutation(budget_slots)
    slack, floors = picked[:cfg.slack], picked[cfg.slack:cfg.slack + cfg.floors]
    b[slack] = np.where(greedy[slack] > 0, 5.0 * greedy[slack], 1.0)
    for k in floors:
        takers = np.flatnonzero(A[0, chosen_item, k] > 0)
        if takers.size:
            b[k] = 3.0 * float(np.median(w[takers, best[takers], 0])) * float(np.max(A[0, :, k]))
    return b


def generate_instance(cfg: GeneratorConfig) -> Instance:
    """A reproducible instance: the same config (and seed) always gives identical arrays."""
    if cfg.n < 1 or cfg.J < 1 or cfg.K < 1 or cfg.R < 1:
        raise ValueError("n, J, K and R must be >= 1")
    if cfg.family not in FAMILIES:
        raise ValueError(f"unknown family {cfg.family!r} (choose from {', '.join(FAMILIES)})")
    rng = np.random.default_rng(cfg.seed)
    n, J, R = cfg.n, cfg.J, cfg.R
    P = cfg.P or max(cfg.catalog_factor * cfg.K, 50)
    n_cat = cfg.categories or max(2, cfg.K // 8)

    # Catalog.
    cost = rng.lognormal(mean=0.0, sigma=0.6, size=P)  # base spend per allocation
    category = rng.integers(0, n_cat, size=P)
    popularity = rng.permutation(1.0 / np.arange(1, P + 1) ** 0.8)
    popularity /= popularity.sum()

    # Candidates.
    J_eff = min(J, P)
    if cfg.candidates == "subset":
        item, distinct = _subset_candidates(rng, P, n, J)
    else:
        item, distinct = _popular_candidates(rng, popularity, n, J)
    min_real = max(1, int(np.ceil(cfg.min_fill * J_eff)))
    n_real = rng.integers(min_real, J_eff + 1, size=n)
    mask = (np.arange(J)[None, :] < n_real[:, None]) & distinct
    item[~mask] = 0

    # Usage and value.
    user_factor = rng.lognormal(mean=0.0, sigma=0.4, size=n)
    spend = cost[item] * user_factor[:, None] * rng.lognormal(0.0, 0.25, size=(n, J))
    c, spend = _values(rng, cfg, cost, item, user_factor, spend)
    w = np.zeros((n, J, R), dtype=np.float64)
    w[:, :, 0] = spend
    if R > 1:
        w[:, :, 1] = 1.0
    for r in range(2, R):
        w[:, :, r] = rng.gamma(2.0, 0.5, size=(n, J))
    c[~mask] = 0.0
    w[~mask] = 0.0

    A, ctype, cname, budget_slots = _constraints(rng, cfg, P, n_cat, category, popularity)
    b = _capacities(rng, cfg, c, mask, item, w, A, budget_slots)
    return Instance(c=c, mask=mask, item=item, w=w, A=A, b=b, ctype=tuple(ctype), cname=tuple(cname),
                    kind="factored", seed=int(cfg.seed))
