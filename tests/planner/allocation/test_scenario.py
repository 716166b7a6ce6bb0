"""ScenarioSpec: the spec's `scenarios:` entry as in issue 9, with bounded, finite fields and errors naming them."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from planner.allocation.scenario import ScenarioSpec

ISSUE_YAML = """
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
      - {name: food, capacity: 20000, usage: spend, items: [c1, c2, c7]}
"""


def base(**changes) -> dict:
    raw = yaml.safe_load(ISSUE_YAML)["scenarios"][0]
    raw.update(changes)
    return raw


def test_the_issue_example_parses_with_defaults():
    """The issue's YAML validates; knobs take their documented defaults."""
    spec = ScenarioSpec.model_validate(base())
    assert spec.constraint_names == ("total_spend", "coupon_a_stock", "food")
    assert spec.capacities == (100000.0, 5000.0, 20000.0)
    assert spec.constraints[2].items == ("c1", "c2", "c7") and spec.constraints[0].items is None
    assert spec.gap_tol == 0.02 and spec.overshoot_tol == 0.01 and spec.calibration == "off"
    assert spec.bucket_s == 1800.0


@pytest.mark.parametrize("changes, field", [
    ({"horizon_s": float("nan")}, "horizon_s"),
    ({"horizon_s": float("inf")}, "horizon_s"),
    ({"horizon_s": -1}, "horizon_s"),
    ({"cycle_s": 0}, "cycle_s"),
    ({"sample_rate": 1.5}, "sample_rate"),
    ({"usage_types": []}, "usage_types"),
    ({"usage_types": ["spend", "spend"]}, "usage_types"),
    ({"route_prefix": "allocate"}, "route_prefix"),
    ({"lease_ttl_s": 1e9}, "lease_ttl_s"),
    ({"calibration": "magic"}, "calibration"),
    ({"surprise": 1}, "surprise"),
    ({"constraints": [{"name": "x", "capacity": 0, "usage": "spend"}]}, "capacity"),
    ({"constraints": [{"name": "x", "capacity": 1e300, "usage": "spend"}]}, "capacity"),
    ({"constraints": [{"name": "x", "capacity": 1, "usage": "weight"}]}, "constraints[0].usage"),
    ({"constraints": [{"name": "x", "capacity": 1, "usage": "spend"}] * 2}, "duplicate"),
    ({"constraints": [{"name": "x", "capacity": 1, "usage": "spend", "items": []}]}, "items"),
    ({"cycle_s": 100, "horizon_s": 50}, "cycle_s"),
])
def test_bad_fields_are_refused_naming_the_field(changes, field):
    """Each bad value is refused, and the message names the field."""
    with pytest.raises(ValidationError) as err:
        ScenarioSpec.model_validate(base(**changes))
    assert field in str(err.value)


def test_the_spec_is_frozen():
    """A validated scenario cannot be changed afterwards."""
    spec = ScenarioSpec.model_validate(base())
    with pytest.raises(ValidationError):
        spec.cycle_s = 5


def test_timing_knobs_follow_the_cycle_unless_given():
    """Left out, the timing knobs are functions of cycle_s (the issue's 10 s cycle keeps 0.2 s syncs, 30 s leases,
    60 s staleness); a 1 s cycle gets 20 syncs a cycle, 3 s leases and 6 s staleness; a given value wins; the
    resolved figures survive a dump and a re-parse."""
    day = ScenarioSpec.model_validate(base())
    assert (day.sync_interval_s, day.lease_ttl_s, day.stale_after_s, day.price_poll_s) == (0.2, 30.0, 60.0, 5.0)
    short = ScenarioSpec.model_validate(base(cycle_s=1, horizon_s=20))
    assert (short.sync_interval_s, short.lease_ttl_s, short.stale_after_s, short.price_poll_s) == (0.05, 3.0, 6.0,
                                                                                                   1.0)
    given = ScenarioSpec.model_validate(base(cycle_s=1, horizon_s=20, sync_interval_s=0.5, stale_after_s=None))
    assert given.sync_interval_s == 0.5 and given.stale_after_s == 6.0
    assert ScenarioSpec.model_validate(short.model_dump(mode="json")) == short
