"""The allocator deployment's code on a real Redis: the response contract, bad input, prices that change decisions,
feedback by path, the coupon example, and Redis going away and coming back."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from planner.allocation.budget import BudgetStore
from planner.allocation.nearline import NearlineLoop
from planner.allocation.service import Allocator
from planner.store import DualPriceStore, price_certificate
from replicas import BadInput
from tests.planner.allocation.allocation_testlib import coupon_scenario

pytestmark = pytest.mark.integration

CERT = price_certificate(1.0, 1.0, 0.0)


class Clock:
    def __init__(self, t: float = 10_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def request(user="u1", **cands):
    return {"user": user, "candidates": [{"item": k, "value": v, "usage": {"spend": 3.0, "count": 1}}
                                          for k, v in cands.items()]}


def make(client, clock, scenario=None, **kw):
    alloc = Allocator(scenario or coupon_scenario(), client=client, clock=clock, background=False, seed=0, **kw)
    alloc.sync()
    alloc.reader.refresh()
    return alloc


def test_response_is_exactly_the_contract(redis_client):
    """Keys item, score, prices_version, prices_age_s, stale - nothing else; with no prices yet it says stale."""
    clock = Clock()
    alloc = make(redis_client, clock)
    out = alloc(request(coupon_a=0.8, coupon_b=0.5))
    assert set(out) == {"item", "score", "prices_version", "prices_age_s", "stale"}
    assert out["item"] == "coupon_a" and out["score"] == pytest.approx(0.8)
    assert out["prices_version"] == 0 and out["stale"] is True


@pytest.mark.parametrize("payload, field", [
    ([], "body"),
    ({"candidates": []}, "user"),
    ({"user": "u"}, "candidates"),
    ({"user": "u", "candidates": []}, "candidates"),
    ({"user": "u", "candidates": [{"value": 1.0}]}, "candidates[0].item"),
    ({"user": "u", "candidates": [{"item": "a"}]}, "candidates[0].value"),
    ({"user": "u", "candidates": [{"item": "a", "value": float("nan")}]}, "candidates[0].value"),
    ({"user": "u", "candidates": [{"item": "a", "value": 1, "usage": {"spend": -1}}]}, "candidates[0].usage.spend"),
    ({"user": "u", "candidates": [{"item": "a", "value": 1, "usage": {"spend": float("nan")}}]},
     "candidates[0].usage.spend"),
    ({"user": "u", "candidates": [{"item": "a", "value": 1, "usage": {"weight": 1}}]}, "candidates[0].usage.weight"),
    ({"user": "u", "candidates": [{"item": "a", "value": True}]}, "candidates[0].value"),
])
def test_bad_requests_name_the_field_and_consume_nothing(redis_client, payload, field):
    """Every bad body is a BadInput (400) whose message names the field; the lease and the counters are untouched."""
    alloc = make(redis_client, Clock())
    held = alloc.lease.held.copy()
    with pytest.raises(BadInput) as err:
        alloc(payload)
    assert str(err.value).startswith(field)
    assert np.array_equal(alloc.lease.held, held) and alloc.counters["decisions"] == 0
    assert not alloc.lease.pending.any()


def test_published_prices_change_decisions(redis_client):
    """At zero prices the higher value wins; once prices charge coupon_a's stock, coupon_b wins, and the response
    carries the version and age of those prices, not stale."""
    clock = Clock()
    alloc = make(redis_client, clock)
    assert alloc(request(coupon_a=0.8, coupon_b=0.5))["item"] == "coupon_a"
    DualPriceStore(redis_client).publish("coupons", [0.0, 0.5], ["total_spend", "coupon_a_stock"], CERT,
                                         computed_at=clock.t - 2.0)
    alloc.reader.refresh()
    out = alloc(request(coupon_a=0.8, coupon_b=0.5))
    assert out["item"] == "coupon_b" and out["prices_version"] == 1 and out["stale"] is False
    assert out["prices_age_s"] == pytest.approx(2.0)


def test_feedback_is_dispatched_by_path_and_teaches_calibration(redis_client):
    """POST .../feedback goes to feedback; outcomes of a decision this replica made are learnt."""
    sc = coupon_scenario(calibration="platt", calibration_min_feedback=20)
    alloc = make(redis_client, Clock(), scenario=sc)
    with pytest.raises(BadInput, match="^outcome"):
        alloc({"user": "u", "item": "coupon_a"}, path="/allocate/coupons/feedback")
    with pytest.raises(BadInput, match=r"candidates\[0\].value"):
        alloc(request(coupon_a=1.5))  # calibration on: values are probabilities
    for i in range(60):
        alloc(request(user=f"u{i}", coupon_b=0.6))
        reply = alloc({"user": f"u{i}", "item": "coupon_b", "outcome": 0}, path="/allocate/coupons/feedback")
        assert reply.status == 202
        got = reply.body
        assert got == {"accepted": True, "learned": True}
    assert alloc.calibration.apply(["coupon_b"], np.array([0.6]))[0] < 0.3
    assert alloc.metrics()["calibration"]["count"] == 60


def test_coupon_example_optimum_not_first_come_first_served(redis_client):
    """Two coupons, four users in order 1..4. First come, first served (no prices) gives users 1 and 2; with the
    planner's prices (planned on a sample of the same traffic) the coupons go to users 3 and 4, whose uplift is
    higher."""
    sc = coupon_scenario(horizon_s=60, season_s=240, season_buckets=4, starts_at=180.0, lease_fraction=1.0,
                         forecast_margin=0.0,  # four users, two coupons: pace to the forecast itself
                         constraints=({"name": "coupons", "capacity": 2, "usage": "count"},))
    uplift = {"user1": 0.3, "user2": 0.35, "user3": 0.8, "user4": 0.9}

    def serve(alloc):
        return [u for u, v in uplift.items() if alloc(request(user=u, coupon=v))["item"] == "coupon"]

    clock = Clock(180.0)
    fcfs = make(redis_client, clock, scenario=sc, replica_id="fcfs")
    assert serve(fcfs) == ["user1", "user2"]
    redis_client.flushdb()
    budget = BudgetStore(redis_client, "coupons")
    budget.add_arrivals({0: 4, 1: 4, 2: 4})  # yesterday: four users per minute
    alloc = make(redis_client, clock, scenario=sc, replica_id="live")
    for v in uplift.values():  # the planner's sample of this traffic (a day earlier)
        alloc._samples.append({"t": 0.0, "items": ["coupon"], "value": [v], "usage": [[3.0, 1.0]]})
    alloc.sync()
    report = NearlineLoop(sc, redis_client, clock=clock).cycle()
    assert report.published.accepted, report
    alloc.reader.refresh()
    assert serve(alloc) == ["user3", "user4"]


def test_redis_stop_and_restart_decisions_continue_stale_and_consumption_lands(tmp_path):
    """Redis stops: decisions go on from the lease with the last prices and stale: true, nothing is lost; Redis
    comes back (same data directory): the buffered consumption and arrivals are written and stale clears."""
    from deploy.embedded import EmbeddedRedis

    server = EmbeddedRedis(data_dir=tmp_path / "r").start()
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=0.3, socket_connect_timeout=0.3)
    clock = Clock()
    sc = coupon_scenario(constraints=({"name": "total_spend", "capacity": 1000.0, "usage": "spend"},),
                         lease_fraction=0.5)
    alloc = make(client, clock, scenario=sc)
    DualPriceStore(client).publish("coupons", [0.01], ["total_spend"], CERT, computed_at=clock.t)
    alloc.reader.refresh()
    assert alloc(request(coupon_a=0.8))["stale"] is False
    alloc.sync()
    port = server.port
    server.stop()
    try:
        before = [alloc(request(user=f"u{i}", coupon_a=0.8)) for i in range(20)]  # not noticed yet
        assert not alloc.sync() and alloc.reader.refresh().version == 1  # noticed by the background work
        after = [alloc(request(user=f"v{i}", coupon_a=0.8)) for i in range(20)]
        assert all(a["item"] == "coupon_a" and a["prices_version"] == 1 for a in before + after)
        assert all(a["stale"] for a in after)
        assert alloc.lease.pending[0] == pytest.approx(40 * 3.0)
        server = EmbeddedRedis(data_dir=tmp_path / "r", port=port).start()
        deadline = time.time() + 10
        while not alloc.sync() and time.time() < deadline:
            time.sleep(0.1)
        alloc.reader.refresh()
        assert not alloc.stale and not alloc.lease.pending.any()
        assert BudgetStore(client, "coupons").used(["total_spend"])[0] == pytest.approx(41 * 3.0)
        assert sum(BudgetStore(client, "coupons").arrivals().values()) == 41
    finally:
        alloc.close()
        client.close()
        server.stop()


def test_background_threads_pick_up_announced_prices_and_write_consumption(redis_url, redis_client):
    """With its threads running (as in a replica), an announcement of new prices reaches the decisions within
    seconds without any call from the test, and consumption reaches Redis through the sync loop; close() returns
    the unused lease."""
    alloc = Allocator(coupon_scenario(), redis_url=redis_url, replica_id="bg", poll_s=30.0)
    try:
        deadline = time.time() + 10
        while alloc.lease.remaining()[0] == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert alloc(request(coupon_a=0.8, coupon_b=0.5))["item"] == "coupon_a"
        DualPriceStore(redis_client).publish("coupons", [0.0, 0.5], ["total_spend", "coupon_a_stock"], CERT,
                                             computed_at=time.time())
        while alloc(request(coupon_a=0.8, coupon_b=0.5))["prices_version"] != 1 and time.time() < deadline:
            time.sleep(0.05)
        out = alloc(request(coupon_a=0.8, coupon_b=0.5))
        assert out["item"] == "coupon_b" and out["prices_version"] == 1 and out["stale"] is False
        budget = BudgetStore(redis_client, "coupons")
        while budget.used(["total_spend"])[0] < 3.0 and time.time() < deadline:
            time.sleep(0.05)
        assert budget.used(["total_spend"])[0] >= 3.0
    finally:
        alloc.close()
    assert "bg" not in BudgetStore(redis_client, "coupons").holders()
    pool = BudgetStore(redis_client, "coupons").pool(["total_spend"])[0]
    assert pool + BudgetStore(redis_client, "coupons").used(["total_spend"])[0] == pytest.approx(10_000.0)


def test_users_tied_on_two_equal_coupons_split_between_them_as_the_planner_certified(redis_client):
    """Equal coupons (same value, same usage) are a tie the hard argmax would always settle by candidate order;
    the allocator decides on the planner's tie-broken values (planner/ties.py), so users split between them, and
    each user's answer is the same every time. The score answered is the plain value's."""
    scenario = coupon_scenario(name="ties", constraints=({"name": "total_spend", "capacity": 1e6, "usage": "spend"},))
    alloc = make(redis_client, Clock(), scenario)
    picks = [alloc(request(f"user-{i}", coupon_b=0.5, coupon_c=0.5)) for i in range(200)]
    share_b = sum(p["item"] == "coupon_b" for p in picks) / len(picks)
    assert 0.3 < share_b < 0.7, (share_b, picks[:3])
    assert all(p["score"] == pytest.approx(0.5) for p in picks)
    again = [alloc(request(f"user-{i}", coupon_b=0.5, coupon_c=0.5))["item"] for i in range(20)]
    assert again == [p["item"] for p in picks[:20]]
