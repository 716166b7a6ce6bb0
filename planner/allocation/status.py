"""What `raygate status` shows per scenario, read from Redis alone (no actor call): each constraint's use against
capacity and against plan, the prices' version and age, the forecast, and the last published certificate."""

from __future__ import annotations

import time

import numpy as np

from planner.allocation.budget import BudgetStore
from planner.allocation.scenario import ScenarioSpec
from planner.store import DualPriceStore

__all__ = ["scenario_status"]


def scenario_status(client, scenario: ScenarioSpec, namespace: str = "raygate", now: float | None = None) -> dict:
    """A JSON-ready summary; never raises for missing data (fields are None until the planner published)."""
    now = time.time() if now is None else now
    names = scenario.constraint_names
    budget = BudgetStore(client, scenario.name, namespace)
    used = budget.used(names)
    prices = DualPriceStore(client, namespace).read(scenario.name)
    plan = prices.plan if prices is not None else {}
    plan_use = plan.get("plan_use") or [None] * len(names)
    constraints = []
    for k, c in enumerate(scenario.constraints):
        planned = plan_use[k] if k < len(plan_use) else None
        constraints.append({
            "name": c.name, "capacity": c.capacity, "used": float(used[k]), "use": float(used[k] / c.capacity),
            "planned_use": None if planned is None else float(planned / c.capacity),
            "price": None if prices is None else float(prices.lam[k])})
    holders = budget.holders()
    return {
        "scenario": scenario.name, "route_prefix": scenario.route_prefix, "constraints": constraints,
        "max_overspend": float(max(0.0, np.max(used / np.asarray(scenario.capacities)) - 1.0)),
        "prices_version": None if prices is None else prices.version,
        "prices_epoch": None if prices is None else prices.epoch,
        "prices_age_s": None if prices is None else max(0.0, now - prices.computed_at),
        "price_age_s": None if prices is None else max(0.0, now - prices.computed_at),  # contract 2's name
        "stale": prices is None or now - prices.computed_at > scenario.stale_after_s,
        "certificate": None if prices is None else prices.certificate,
        "forecast": {"model": plan.get("forecast_model"), "remaining_requests": plan.get("remaining_requests")},
        "leases": {"holders": len(holders), "expiring_next_s": (min(holders.values()) - now) if holders else None},
    }
