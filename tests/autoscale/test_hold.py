"""Scale-to-zero at the router: requests for a version with no replica are held (bounded, with their deadline)
until a replica joins the table; past the bound 503 with Retry-After, past the deadline 504. Fake clock."""

from __future__ import annotations

import asyncio

import pytest

from replicas.routing.failures import DeadlineExceeded, Overloaded
from replicas.routing.hold import EXPIRED, FULL, HOLD, HoldPolicy, Holds, decide_hold
from replicas.routing.table import VersionRoute
from tests.replicas.routing.fakes import FakeReplica, Fleet
from tests.replicas.tables import route, table


def test_decide_hold_holds_until_the_bound_or_the_deadline():
    """Below the bound and before the deadline: hold; at the bound: full; at or past the deadline: expired
    (the deadline wins over the bound)."""
    policy = HoldPolicy(max_held=2)
    assert decide_hold(0, now=10.0, deadline=11.0, policy=policy) == HOLD
    assert decide_hold(1, now=10.0, deadline=11.0, policy=policy) == HOLD
    assert decide_hold(2, now=10.0, deadline=11.0, policy=policy) == FULL
    assert decide_hold(0, now=11.0, deadline=11.0, policy=policy) == EXPIRED
    assert decide_hold(5, now=12.0, deadline=11.0, policy=policy) == EXPIRED


def test_holds_refuse_with_503_retry_after_or_504_and_signal_demand():
    """A refusal past the bound is a 503 whose Retry-After is the policy's; past the deadline a 504; a held
    request tells the listener its version at once."""
    signalled = []
    holds = Holds(HoldPolicy(max_held=1, retry_after_s=7.0), on_hold=signalled.append)
    holds.hold(("a", "d", "v1"), 0, now=1.0, deadline=2.0)
    assert signalled == [("a", "d", "v1")]
    with pytest.raises(Overloaded) as full:
        holds.hold(("a", "d", "v1"), 1, now=1.0, deadline=2.0)
    assert full.value.status == 503 and full.value.headers() == {"Retry-After": "7"}
    with pytest.raises(DeadlineExceeded) as late:
        holds.hold(("a", "d", "v1"), 0, now=2.0, deadline=2.0)
    assert late.value.status == 504
    assert signalled == [("a", "d", "v1")]  # refusals signal nothing


async def _until(predicate, tries: int = 200) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def _with_replica(fleet: Fleet, version: int) -> None:
    """The first replica of v1 joins the routing table (as the controller publishes it once ready)."""
    replica = FakeReplica("v1-0", "v1", 2000)
    fleet.replicas[replica.info.replica_id] = replica
    fleet.by_port[replica.info.port] = replica
    fleet.router.update_table(table(version, route([VersionRoute("v1", 100.0, (replica.info,), 0.0)])))


async def test_a_request_for_a_version_at_zero_is_held_then_served_when_a_replica_joins():
    """With no replica, three requests wait (the router reports them queued and signals the demand once each);
    when a replica joins the table every one of them is answered 200."""
    fleet = Fleet({"v1": 0})
    signalled = []
    fleet.router.holds.on_hold = signalled.append
    calls = [asyncio.create_task(fleet.call()) for _ in range(3)]
    await _until(lambda: len(signalled) == 3)
    assert fleet.router.load_by_version()[("app", "dep", "v1")] == (0.0, 3.0)
    assert not any(call.done() for call in calls)
    _with_replica(fleet, 2)
    results = await asyncio.gather(*calls)
    assert [r.status for r in results] == [200, 200, 200]
    assert fleet.replicas["v1-0"].received == 3


async def test_held_requests_past_the_bound_get_503_and_past_their_deadline_504():
    """max_held 1: a second request is refused at once with Retry-After; the held one gets a 504 once the clock
    passes its deadline with still no replica."""
    fleet = Fleet({"v1": 0}, request_timeout_s=5.0)
    fleet.router.holds = Holds(HoldPolicy(max_held=1, retry_after_s=3.0))
    held = asyncio.create_task(fleet.call())
    await _until(lambda: fleet.router.load_by_version()[("app", "dep", "v1")][1] == 1.0)
    with pytest.raises(Overloaded) as refused:
        await fleet.call()
    assert refused.value.headers() == {"Retry-After": "3"}
    fleet.clock.advance(5.0)
    fleet.view().by_name["v1"].queue.wake_all()  # the deadline timer, without waiting 5 real seconds
    with pytest.raises(DeadlineExceeded):
        await held
