"""Shared scenario builders for the allocation tests."""

from __future__ import annotations

from planner.allocation.scenario import ScenarioSpec


def coupon_scenario(**overrides) -> ScenarioSpec:
    base = dict(name="coupons", route_prefix="/allocate/coupons", horizon_s=3600, cycle_s=10, sample_rate=1.0,
                usage_types=("spend", "count"),
                constraints=({"name": "total_spend", "capacity": 10_000.0, "usage": "spend"},
                             {"name": "coupon_a_stock", "capacity": 100, "usage": "count", "items": ["coupon_a"]}))
    base.update(overrides)
    return ScenarioSpec.model_validate(base)
