"""A scenario: the `scenarios:` entry of the platform spec, validated once (pydantic at the YAML boundary).

    scenarios:
      - name: coupons
        route_prefix: /allocate/coupons
        horizon_s: 86400
        cycle_s: 10
        sample_rate: 0.2
        usage_types: [spend, count]
        constraints:
          - {name: total_spend, capacity: 100000, usage: spend}
          - {name: coupon_a_stock, capacity: 5000, usage: count, items: [coupon_a]}

A constraint without `items` counts its usage type for every item; with `items`, only for those items. Every other
field is a documented knob with a default. Numbers are finite and bounded; errors name the field.

Timing knobs that must follow the scenario's own pace (a 20 s test campaign with 1 s cycles as much as a day with
10 s cycles) default to a share of `cycle_s`; `TIMING_DEFAULTS` holds every such rule, in one place. A value given
in the spec wins; a parsed scenario always carries the resolved figures (so a dump round-trips).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["TIMING_DEFAULTS", "ConstraintSpec", "ScenarioSpec"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_YEAR_S = 366 * 86400.0
_DEFAULT_CYCLE_S = 10.0

# Knobs left out of a spec take these functions of cycle_s (the 10 s cycle gives the historic figures).
TIMING_DEFAULTS = {
    "stale_after_s": lambda cycle_s: 6.0 * cycle_s,  # six missed cycles (60 s at 10 s cycles)
    "sync_interval_s": lambda cycle_s: min(0.2, cycle_s / 20.0),  # >= 20 lease syncs per cycle, at most 5 a second
    "lease_ttl_s": lambda cycle_s: min(30.0, max(1.0, 3.0 * cycle_s)),  # a dead replica's lease back in 3 cycles
    "price_poll_s": lambda cycle_s: min(5.0, cycle_s),  # the reader polls at least once a cycle (pub/sub first)
}


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be 1-63 letters, digits, '_', '.' or '-', starting with a letter "
                         "or digit")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConstraintSpec(_Model):
    name: str = Field(description="constraint name, unique in the scenario; prices are published in this order")
    capacity: float = Field(gt=0, le=1e15, description="budget for the whole horizon, in units of `usage`")
    usage: str = Field(description="the usage type this constraint counts (one of the scenario's usage_types)")
    items: tuple[str, ...] | None = Field(None, min_length=1, max_length=100_000,
                                          description="items it applies to; omitted: every item")

    _name = field_validator("name")(lambda cls, v: _check_name(v, "constraint name"))

    @field_validator("items")
    @classmethod
    def _items(cls, value):
        if value is not None:
            if len(set(value)) != len(value):
                raise ValueError("items must be distinct")
            for item in value:
                if not item or len(item) > 200:
                    raise ValueError(f"item {item!r} must be 1-200 characters")
        return value


class ScenarioSpec(_Model):
    name: str = Field(description="scenario name; also the Redis key scope {namespace:name}")
    route_prefix: str = Field(description="HTTP path served by the allocator deployment, e.g. /allocate/coupons")
    num_replicas: int = Field(1, ge=1, le=64, description="allocator replicas serving the route (each leases "
                              "budget in chunks, so more replicas never overspend)")
    horizon_s: float = Field(gt=0, le=_YEAR_S, description="campaign length; capacities are for the whole horizon")
    cycle_s: float = Field(_DEFAULT_CYCLE_S, gt=0, le=86400, description="nearline planning period")
    sample_rate: float = Field(0.2, gt=0, le=1, description="share of decisions recorded for the planner")
    min_item_samples: int = Field(200, ge=0, le=1_000_000, description="requests listing an item that the planner's "
                                  "window should hold at least: requests listing rarer items are sampled more and "
                                  "weigh less (sampling.py; 0: uniform sampling)")
    usage_types: tuple[str, ...] = Field(min_length=1, max_length=64, description="usage figures each candidate "
                                         "may give (missing ones count 0)")
    constraints: tuple[ConstraintSpec, ...] = Field(min_length=1, max_length=100_000, description="budgets")
    starts_at: float | None = Field(None, ge=0, le=1e11, description="campaign start (unix seconds); "
                                    "default: when the planner first runs (kept in Redis)")
    # Publishing gate (the nearline solve's certificate on its sample)
    gap_tol: float = Field(0.02, gt=0, le=1, description="publish only if the rigorous gap "
                           "1 - primal / ((1 + overshoot) * dual) is at most this")
    overshoot_tol: float = Field(0.01, ge=0, le=1, description="publish only if the largest relative overshoot "
                                 "max_k(consumption_k / capacity_k - 1) on the sample is at most this")
    stale_after_s: float = Field(None, gt=0, le=_YEAR_S, description="prices older than this are flagged stale "
                                 "(default 6 x cycle_s)")
    price_poll_s: float = Field(None, gt=0, le=3600, description="a replica re-reads the prices this often even "
                                "without an announcement (default min(5, cycle_s))")
    # Solver
    solver_sample_size: int = Field(20_000, ge=10, le=10_000_000, description="most recent sampled requests the "
                                    "nearline solve plans on")
    solver_backend: Literal["numpy", "numba", "cupy"] = Field("numpy", description="kernel of the nearline solve "
                                                               "(cupy when the planner actor got a GPU)")
    solver_time_limit_s: float = Field(30.0, gt=0, le=3600, description="wall-clock cap of one nearline solve")
    correction_gain: float = Field(0.5, ge=0, le=1, description="per-constraint correction when real consumption "
                                   "runs ahead of or behind plan (0: off)")
    # Forecast
    season_s: float = Field(86400.0, gt=0, le=_YEAR_S, description="seasonal period of arrivals (a day)")
    season_buckets: int = Field(48, ge=4, le=1440, description="forecast buckets per season")
    forecast_margin: float = Field(0.1, ge=0, le=1, description="pace as if this share more requests than "
                                   "forecast were still to come: headroom for traffic the forecast cannot see (a "
                                   "surprise spike); later cycles re-pace what is left, so an unneeded margin is "
                                   "spent in the tail (0: pace to the forecast itself)")
    refit_every: int = Field(30, ge=1, le=100_000, description="cycles between forecast refits (cheap level "
                             "updates in between)")
    # Online correction between solves (dual mirror descent)
    dmd_step: float = Field(0.002, ge=0, le=10, description="per-request dual step, relative (0: off)")
    # Budget leases
    lease_fraction: float = Field(0.05, gt=0, le=1, description="a replica tops its lease up to this share of what "
                                  "remains (shrinks as budgets run out)")
    lease_min_fraction: float = Field(0.0005, ge=0, le=1, description="smallest chunk, as a share of capacity")
    lease_ttl_s: float = Field(None, gt=0, le=3600, description="a lease not renewed for this long returns to the "
                               "pool (killed replicas); default min(30, 3 x cycle_s), at least 1")
    sync_interval_s: float = Field(None, gt=0, le=60, description="how often a replica reports consumption and "
                                   "renews its lease; default min(0.2, cycle_s / 20)")
    # Calibration
    calibration: Literal["off", "platt", "isotonic"] = Field("off", description="per-item calibration of values "
                                                              "from feedback (values are probabilities unless off)")
    calibration_half_life: float = Field(2000.0, gt=0, le=1e9, description="feedback events after which an "
                                         "observation weighs half")
    calibration_min_feedback: int = Field(50, ge=1, le=10_000_000, description="feedback needed per item before "
                                          "its calibration is applied")

    _name = field_validator("name")(lambda cls, v: _check_name(v, "scenario name"))

    @model_validator(mode="before")
    @classmethod
    def _timing_defaults(cls, data):
        """Fill the timing knobs the spec leaves out (or null) from cycle_s (TIMING_DEFAULTS)."""
        if not isinstance(data, dict):
            return data
        cycle = data.get("cycle_s", _DEFAULT_CYCLE_S)
        if isinstance(cycle, bool) or not isinstance(cycle, (int, float)) or not 0 < cycle <= 86400:
            return data  # the field's own validation names the problem
        missing = {k: rule(float(cycle)) for k, rule in TIMING_DEFAULTS.items() if data.get(k) is None}
        return {**data, **missing} if missing else data

    @field_validator("route_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or value != value.rstrip("/") or len(value) > 200 or " " in value:
            raise ValueError("route_prefix must start with '/', not end with '/', and have no spaces")
        return value

    @field_validator("usage_types")
    @classmethod
    def _usage_types(cls, value):
        for name in value:
            _check_name(name, "usage type")
        if len(set(value)) != len(value):
            raise ValueError("usage_types must be distinct")
        return value

    @model_validator(mode="after")
    def _cross(self) -> ScenarioSpec:
        if self.cycle_s > self.horizon_s:
            raise ValueError(f"cycle_s ({self.cycle_s}) must not exceed horizon_s ({self.horizon_s})")
        names = [c.name for c in self.constraints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"constraints: duplicate names {dup}")
        for i, c in enumerate(self.constraints):
            if c.usage not in self.usage_types:
                raise ValueError(f"constraints[{i}].usage: {c.usage!r} is not one of usage_types "
                                 f"{list(self.usage_types)}")
        return self

    @property
    def constraint_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.constraints)

    @property
    def capacities(self) -> tuple[float, ...]:
        return tuple(c.capacity for c in self.constraints)

    @property
    def bucket_s(self) -> float:
        """Forecast bucket length: a season split in `season_buckets`."""
        return self.season_s / self.season_buckets
