"""The router's failover rules, deterministically: a fake clock, fake replicas behind a fake connection factory,
a seeded rng, and monitor passes run by the test (`fleet.check()`), never by a timer."""

from __future__ import annotations

import asyncio

import pytest

from replicas.routing.failures import DeadlineExceeded, ReplicaFailed
from replicas.routing.policy import FailoverPolicy
from tests.replicas.routing.fakes import QUIET, Fleet


async def _until(predicate, tries: int = 200) -> None:
    """Let the loop run (no time passes on the fake clock) until `predicate()` holds."""
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_five_5xx_in_a_row_eject_a_replica_whose_peers_answer_fine():
    """Reason `errors`, on the fifth 500 from that replica in a row, while its peer's answers are all 200."""
    fleet = Fleet({"v1": 2})
    bad = fleet.replicas["v1-0"]
    bad.status = 500
    statuses = []
    while bad.received < 5:
        assert not fleet.observer.of("ejected")  # not before the fifth
        statuses.append((await fleet.call()).status)
    assert fleet.observer.of("ejected") == [("ejected", "v1-0", "errors")]
    assert fleet.replicas["v1-1"].received > 0 and statuses.count(500) == 5
    before = bad.received
    for _ in range(20):
        assert (await fleet.call()).replica_id == "v1-1"
    assert bad.received == before


async def test_errors_everywhere_eject_nobody():
    """A deployment-wide problem (every replica answers 500) is not an outlier: nothing is ejected."""
    fleet = Fleet({"v1": 3})
    for replica in fleet.replicas.values():
        replica.status = 500
    for _ in range(30):
        assert (await fleet.call()).status == 500
    assert not fleet.observer.of("ejected")


async def test_an_unanswered_ping_ejects_with_reason_ping_timeout():
    """An idle replica whose loop froze: no request is pending, so only the ping can tell, and the reason says so."""
    fleet = Fleet({"v1": 2})
    for _ in range(10):
        await fleet.call()  # open both connections
    fleet.replicas["v1-0"].pongs = False
    fleet.clock.advance(0.2)
    fleet.check()  # both connections are due a ping
    fleet.clock.advance(0.4)
    fleet.check()  # 0.4 s: not yet
    assert not fleet.observer.of("ejected")
    fleet.clock.advance(0.2)
    fleet.check()  # 0.6 s > ping_timeout_s
    assert fleet.observer.of("ejected") == [("ejected", "v1-0", "ping_timeout")]


async def _sent_to(fleet: Fleet, replica_id: str) -> asyncio.Future:
    """Calls until one reaches `replica_id` (which hangs) and waits there; that call, still waiting."""
    target = fleet.replicas[replica_id]
    before = target.received
    while True:
        waiting = asyncio.ensure_future(fleet.call())
        await _until(lambda: waiting.done() or target.received > before)
        if not waiting.done():
            return waiting


async def test_a_ping_timeout_leaves_a_sent_non_idempotent_request_to_finish():
    """A replica's loop stalls past ping_timeout_s with a POST of a non-idempotent deployment in flight: it is
    ejected (new requests go to its peer) but the POST may have reached the model, so its connection stays open and
    the POST gets the replica's own answer when the loop runs again: a 200, not a 502."""
    fleet = Fleet({"v1": 2})
    for replica in fleet.replicas.values():
        replica.service_s = 0.3  # a 0.3 s model: a request counts as stalled only after 20 x 0.3 s
    for _ in range(10):
        await fleet.call()
    frozen = fleet.replicas["v1-0"]
    frozen.hang, frozen.pongs = True, False
    waiting = await _sent_to(fleet, "v1-0")
    connection = fleet.slot("v1-0").connection
    fleet.clock.advance(0.2)
    fleet.check()  # pinged
    fleet.clock.advance(0.6)
    fleet.check()  # the ping is 0.6 s old
    assert fleet.observer.of("ejected") == [("ejected", "v1-0", "ping_timeout")]
    assert not connection.closed and not waiting.done()
    frozen.hang = False
    assert {(await fleet.call()).replica_id for _ in range(10)} == {"v1-1"}  # ejected: nothing new goes there
    connection.answer_pending()
    result = await waiting
    assert (result.status, result.replica_id, result.attempts) == (200, "v1-0", 1)
    assert not fleet.observer.of("retried")


@pytest.mark.parametrize("answers", [True, False], ids=["answered", "never_answered"])
async def test_a_probes_fresh_connection_leaves_the_old_ones_call_to_finish_or_expire(answers):
    """Re-admission opens a fresh connection; a non-idempotent call still waiting on the old one is neither failed
    nor forgotten: it gets the replica's answer when one comes, or ends at its deadline (504), and the old
    connection is closed once nothing waits on it."""
    fleet = Fleet({"v1": 2})
    for _ in range(10):
        await fleet.call()
    fleet.replicas["v1-0"].hang = True
    waiting = await _sent_to(fleet, "v1-0")
    slot = fleet.slot("v1-0")
    old = slot.connection
    assert fleet.router.eject(fleet.view(), slot, "ping_timeout")
    fleet.clock.advance(QUIET.base_ejection_s)
    assert await fleet.router.health.probe(slot)  # pings are answered: readmitted on a new connection
    assert slot.connection is not old and not old.closed and old in fleet.router.finishing
    fleet.check()
    assert not waiting.done() and old in fleet.router.finishing
    if answers:
        old.answer_pending()
        result = await waiting
        assert (result.status, result.replica_id, result.attempts) == (200, "v1-0", 1)
    else:
        fleet.clock.advance(60.0)  # past the call's deadline
        fleet.check()
        with pytest.raises(DeadlineExceeded):
            await waiting
    fleet.check()
    assert old.closed and old not in fleet.router.finishing


async def test_a_stalled_request_ejects_and_is_retried_elsewhere_at_once():
    """Half-alive: a request waits far past the peers' median; the replica is ejected (`stalled`), its connection
    closed, and the waiting idempotent request is answered by a peer without waiting for its deadline."""
    fleet = Fleet({"v1": 3}, idempotent=True)
    for _ in range(30):
        await fleet.call()  # latencies known (1 ms each)
    fleet.replicas["v1-0"].hang = True
    waiting = await _sent_to(fleet, "v1-0")
    assert not waiting.done()
    fleet.clock.advance(QUIET.stall_min_s - 0.05)
    fleet.check()
    assert not fleet.observer.of("ejected") and not waiting.done()  # younger than stall_min_s
    fleet.clock.advance(0.1)
    fleet.check()
    assert fleet.observer.of("ejected") == [("ejected", "v1-0", "stalled")]
    result = await waiting
    assert result.status == 200 and result.replica_id != "v1-0" and result.attempts == 2
    assert fleet.observer.of("retried") == [("retried", "connection_lost")]


async def test_at_most_half_are_ejected_but_a_lost_connection_is_exempt():
    fleet = Fleet({"v1": 2})
    for _ in range(10):
        await fleet.call()
    for replica in fleet.replicas.values():
        replica.pongs = False
    fleet.clock.advance(0.2)
    fleet.check()
    fleet.clock.advance(0.6)
    fleet.check()
    assert len(fleet.observer.of("ejected")) == 1  # the cap: 1 of 2
    kept = next(s for s in fleet.router.slots() if not s.probation)
    assert fleet.router.eject(fleet.view(), kept, "ping_timeout") is False
    assert fleet.router.eject(fleet.view(), kept, "connection_lost") is True


async def test_ejections_in_a_row_double_and_good_behaviour_resets_them():
    fleet = Fleet({"v1": 4})
    slot = fleet.slot("v1-0")
    durations = []
    for _ in range(6):
        assert fleet.router.eject(fleet.view(), slot, "ping_timeout")
        durations.append(slot.ejected_until - fleet.clock())
        fleet.clock.advance(durations[-1])
        await fleet.router.health.probe(slot)  # answers: readmitted
        assert not slot.probation
    assert durations == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]  # capped at max_ejection_s
    fleet.clock.advance(QUIET.good_behaviour_s)
    fleet.router.eject(fleet.view(), slot, "ping_timeout")
    assert slot.ejected_until - fleet.clock() == 1.0


async def test_readmission_needs_a_fresh_connection_answering_a_probe():
    """While the replica stays frozen the probe fails and it stays out; once it answers on a new connection, it is
    chosen again."""
    fleet = Fleet({"v1": 2})
    for _ in range(10):
        await fleet.call()
    frozen = fleet.replicas["v1-0"]
    frozen.pongs = False
    fleet.clock.advance(0.2)
    fleet.check()
    fleet.clock.advance(0.6)
    fleet.check()
    slot = fleet.slot("v1-0")
    assert slot.probation
    opened = frozen.connections
    fleet.clock.advance(1.0)
    fleet.check()  # due: probe (fails)
    await _until(lambda: not slot.probing)
    assert slot.probation and frozen.connections == opened + 1
    record = fleet.router.ejections[-1]
    assert record["replica_id"] == "v1-0" and record["readmitted_at"] is None  # out longer than its `for_s`
    frozen.pongs = True
    fleet.check()  # not due yet (re-probed after base_ejection_s)
    assert not slot.probing
    fleet.clock.advance(1.0)
    fleet.check()
    await _until(lambda: not slot.probation)
    assert frozen.connections == opened + 2
    assert record["readmitted_at"] is not None and record["readmitted_at"] >= record["at"]
    before = frozen.received
    for _ in range(20):
        await fleet.call()
    assert frozen.received > before


async def test_retry_budget_exhausted_answers_502():
    """Lost connections on an idempotent deployment: retried while the budget allows, then ReplicaFailed (502)."""
    fleet = Fleet({"v1": 3}, idempotent=True, policy=FailoverPolicy(monitor_interval_s=3600, retry_ratio=0.0,
                                                                    retry_min_per_s=0.1, retry_window_s=10.0))
    for replica in fleet.replicas.values():
        replica.drop = True
    with pytest.raises(ReplicaFailed) as failed:
        await fleet.call()
    assert failed.value.status == 502
    assert len(fleet.observer.of("retried")) == 1  # the budget held one retry (0.1/s x 10 s)
    assert sum(r.received for r in fleet.replicas.values()) == 2


async def test_max_retries_bounds_the_attempts():
    fleet = Fleet({"v1": 5}, idempotent=True, max_retries=2)
    for replica in fleet.replicas.values():
        replica.drop = True
    with pytest.raises(ReplicaFailed):
        await fleet.call()
    assert sum(r.received for r in fleet.replicas.values()) == 3


async def test_a_sent_non_idempotent_request_is_not_retried():
    fleet = Fleet({"v1": 2})
    fleet.replicas["v1-0"].drop = True
    fleet.replicas["v1-1"].drop = True
    with pytest.raises(ReplicaFailed):
        await fleet.call(method="POST")
    assert sum(r.received for r in fleet.replicas.values()) == 1
    assert not fleet.observer.of("retried")


async def test_an_unreachable_replica_costs_nothing_even_when_not_idempotent():
    """Never sent: another replica takes it, whatever the method."""
    fleet = Fleet({"v1": 2})
    fleet.replicas["v1-0"].refuse = True
    for _ in range(10):
        assert (await fleet.call(method="POST")).replica_id == "v1-1"


async def test_version_fallback_when_the_chosen_version_has_no_live_replica():
    """One replica per version (the quickstart's shape): v1's only replica is ejected, its traffic goes to v2 and
    the observer hears which way."""
    fleet = Fleet({"v1": 1, "v2": 1}, weights={"v1": 90, "v2": 10})
    assert fleet.router.eject(fleet.view(), fleet.slot("v1-0"), "ping_timeout")
    results = [await fleet.call() for _ in range(20)]
    assert {r.version for r in results} == {"v2"}
    assert ("fell_back", "v1", "v2") in fleet.observer.events


async def test_a_frozen_single_replica_fails_over_to_the_other_version_at_once():
    """The quickstart as shipped, SIGSTOP on v1's replica: its waiting requests move to v2 when the monitor ejects it,
    long before their deadline."""
    fleet = Fleet({"v1": 1, "v2": 1}, weights={"v1": 100, "v2": 1}, idempotent=True, request_timeout_s=10.0)
    for _ in range(20):
        await fleet.call()
    fleet.replicas["v1-0"].hang = True
    fleet.replicas["v1-0"].pongs = False
    waiting = [asyncio.ensure_future(fleet.call()) for _ in range(5)]
    await _until(lambda: fleet.replicas["v1-0"].received >= 20 + 5 - fleet.replicas["v2-0"].received)
    for _ in range(4):
        fleet.clock.advance(0.1)
        fleet.check()
    results = await asyncio.gather(*waiting)
    assert all(r.status == 200 and r.version == "v2" for r in results)
    assert fleet.observer.of("ejected")[0][1:] == ("v1-0", "stalled")


async def test_a_hedge_fires_and_the_second_replica_answers_first():
    fleet = Fleet({"v1": 2}, idempotent=True, hedge_after_s=0.01)
    stuck = fleet.replicas["v1-0"]
    stuck.hang = True
    while True:  # the seeded rng picks replicas in a fixed order: stop once the stuck one was tried first
        before = stuck.received
        result = await asyncio.wait_for(fleet.call(), 5)
        if stuck.received > before:
            break
    assert result.replica_id == "v1-1" and result.status == 200
    assert fleet.log[-2][0] == "v1-0" and fleet.log[-1][0] == "v1-1"  # sent to the stuck one first


async def test_mirror_percent_below_100_copies_that_share():
    fleet = Fleet({"v1": 1, "shadow": 1}, weights={"v1": 100, "shadow": 0}, mirror={"shadow": 25})
    for _ in range(400):
        await fleet.call()
    await _until(lambda: not fleet.router.background)
    copies = fleet.replicas["shadow-0"].received
    assert 70 <= copies <= 130, copies  # 25% of 400, seeded
    assert len(fleet.observer.of("mirrored")) == copies


async def test_mirror_copies_are_dropped_when_the_shadow_is_full():
    fleet = Fleet({"v1": 1, "shadow": 1}, weights={"v1": 100, "shadow": 0}, mirror={"shadow": 100},
                  max_ongoing_requests=2)
    fleet.replicas["shadow-0"].hang = True
    for _ in range(5):
        assert (await fleet.call()).version == "v1"  # the primary never waits for the shadow
    await _until(lambda: fleet.replicas["shadow-0"].received == 2)
    assert [e for e in fleet.observer.of("mirrored") if e[2] == 0] == [("mirrored", "shadow", 0)] * 3
    fleet.router.close()


async def test_deadline_of_a_request_held_by_a_replica():
    """The monitor expires a call whose deadline passed (no timer per request): 504."""
    fleet = Fleet({"v1": 1}, request_timeout_s=1.0)
    fleet.replicas["v1-0"].hang = True
    pending = asyncio.ensure_future(fleet.call())
    await _until(lambda: fleet.replicas["v1-0"].received)
    fleet.clock.advance(1.0)
    fleet.check()
    with pytest.raises(DeadlineExceeded):
        await pending


async def test_a_5xx_from_the_only_usable_replica_is_returned_not_queued():
    """Its peer is ejected: the 500 is the answer (after the retries the usable replica allows), never a wait for a
    replica that cannot come."""
    fleet = Fleet({"v1": 2}, idempotent=True)
    assert fleet.router.eject(fleet.view(), fleet.slot("v1-0"), "ping_timeout")
    fleet.replicas["v1-1"].status = 500
    result = await asyncio.wait_for(fleet.call(), 2)
    assert result.status == 500 and result.replica_id == "v1-1" and result.attempts == 1
    assert fleet.replicas["v1-0"].received == 0


async def test_requests_queued_for_a_frozen_single_replica_fall_back_when_it_is_ejected():
    """The version's only replica is full of requests it will never answer and more wait in its queue: once it is
    ejected, the queued ones go to the other version too (not wait for the replica's replacement)."""
    fleet = Fleet({"v1": 1, "v2": 1}, weights={"v1": 100, "v2": 1}, idempotent=True, max_ongoing_requests=2)
    for _ in range(10):
        await fleet.call()
    frozen = fleet.replicas["v1-0"]
    frozen.hang = True
    calls = [asyncio.ensure_future(fleet.call(split_key="k")) for _ in range(6)]  # "k" sticks to v1
    await _until(lambda: frozen.received == 12)  # 10 answered, 2 held
    assert not any(c.done() for c in calls)
    fleet.clock.advance(0.3)
    fleet.check()
    results = await asyncio.wait_for(asyncio.gather(*calls), 2)
    assert [r.version for r in results] == ["v2"] * 6


class _OnlyTheFirstIsDropped(list):
    """Fleet.log that lets the first request a replica receives drop its connection, and no later one."""

    def __init__(self, replicas) -> None:
        super().__init__()
        self.replicas = list(replicas)
        for replica in self.replicas:
            replica.drop = True

    def append(self, item) -> None:
        super().append(item)
        if len(self) > 1:
            for replica in self.replicas:
                replica.drop = False


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
async def test_get_and_head_are_idempotent_by_default_and_post_is_not(method):
    """README "Failover": with `idempotent` unset, GET and HEAD count as idempotent: a request lost with its
    replica's connection is sent again and answered; a POST is not sent again."""
    fleet = Fleet({"v1": 2}, idempotent=None)
    fleet.log = _OnlyTheFirstIsDropped(fleet.replicas.values())
    if method == "POST":
        with pytest.raises(ReplicaFailed):
            await fleet.call(method=method)
        assert len(fleet.log) == 1 and not fleet.observer.of("retried")
    else:
        assert (await fleet.call(method=method)).status == 200
        assert len(fleet.log) == 2 and fleet.observer.of("retried")
