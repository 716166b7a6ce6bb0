"""Routing-table acknowledgements (contract 1) on a fake clock."""

from __future__ import annotations

import asyncio

from deploy.acks import Ack, AckTracker, pending_watchers


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tracker() -> tuple[AckTracker, FakeClock]:
    """A tracker that forgets a router silent for 30 s, on a fake clock."""
    clock = FakeClock()
    return AckTracker(gone_after_s=30.0, clock=clock), clock


def test_pending_lists_routers_behind_the_version_and_forgets_silent_ones():
    acks = {"gw-0": Ack(5, 99.0), "gw-1": Ack(4, 99.0), "gone": Ack(1, 10.0)}
    assert pending_watchers(acks, 5, now=100.0, gone_after_s=30.0) == ["gw-1"]
    assert pending_watchers(acks, 4, now=100.0, gone_after_s=30.0) == []


async def test_wait_returns_true_once_every_router_acknowledged():
    tracker, _ = _tracker()
    tracker.record("gw-0", 1)
    tracker.record("gw-1", 1)
    waiter = asyncio.create_task(tracker.wait(2, timeout_s=5.0))
    await asyncio.sleep(0)
    tracker.record("gw-0", 2)
    await asyncio.sleep(0)
    assert not waiter.done()
    tracker.record("gw-1", 2)
    assert await asyncio.wait_for(waiter, 1.0) is True
    assert tracker.timeouts == 0


async def test_wait_gives_up_after_its_timeout_and_counts_it():
    tracker, clock = _tracker()
    tracker.record("gw-0", 1)
    waiter = asyncio.create_task(tracker.wait(2, timeout_s=2.0))
    await asyncio.sleep(0)
    clock.now += 2.5
    tracker.record("gw-1", 2)  # another router's poll wakes the waiter, which sees its deadline passed
    assert await asyncio.wait_for(waiter, 1.0) is False
    assert tracker.timeouts == 1 and tracker.pending(2) == ["gw-0"]


async def test_no_routers_means_nothing_to_wait_for():
    tracker, _ = _tracker()
    assert await tracker.wait(7, timeout_s=0.0) is True


async def test_a_new_process_in_a_gateway_slot_supersedes_the_killed_one():
    """The spare that took over index 0 polls as `gateway-n-0/<its pid>`: the killed process's watcher of that
    slot is no longer waited for, while the other slot still is."""
    tracker, _ = _tracker()
    tracker.record("gateway-n-0/111", 1)
    tracker.record("gateway-n-1/222", 1)
    waiter = asyncio.create_task(tracker.wait(2, timeout_s=5.0))
    await asyncio.sleep(0)
    tracker.record("gateway-n-0/333", 2)  # 111 was SIGKILLed, 333 serves its index now
    await asyncio.sleep(0)
    assert not waiter.done() and tracker.pending(2) == ["gateway-n-1/222"]
    tracker.record("gateway-n-1/222", 2)
    assert await asyncio.wait_for(waiter, 1.0) is True
    assert sorted(tracker.acks) == ["gateway-n-0/333", "gateway-n-1/222"]
    tracker.record("gateway-n-10/444", 2)  # another slot whose name starts alike is not the same slot
    assert "gateway-n-1/222" in tracker.acks


async def test_a_forgotten_router_is_not_waited_for():
    """The controller forgets the handle watcher of a replica it replaced: a wait on it returns at once."""
    tracker, _ = _tracker()
    tracker.record("app.ens.v1#3", 1)
    waiter = asyncio.create_task(tracker.wait(2, timeout_s=5.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    tracker.forget("app.ens.v1#3")
    assert await asyncio.wait_for(waiter, 1.0) is True and tracker.timeouts == 0
    tracker.forget("never-seen")  # nothing to do
