"""Budget leases on a real Redis: never overspend, shrinking chunks, returns on shutdown and expiry, buffering."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from planner.allocation.budget import BudgetLease, BudgetStore

NAMES = ("spend", "stock")
CAP = np.array([100.0, 10.0])


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def lease(store, holder, clock, **kw):
    kw = {"ttl_s": 30.0, "fraction": 0.2, "min_fraction": 0.0, **kw}
    return BudgetLease(store, holder, NAMES, CAP, bucket_s=60.0, clock=clock, **kw)


@pytest.mark.integration
def test_replicas_together_never_overspend_and_use_nearly_everything(redis_client):
    """Three replicas spend random amounts as long as their leases allow, syncing now and then: the total used
    never exceeds any capacity, the pool plus leases plus used always equals the capacity, and at the end almost
    the whole budget was used."""
    store = BudgetStore(redis_client, "s")
    store.ensure(NAMES, CAP)
    clock = Clock()
    leases = [lease(store, f"r{i}", clock) for i in range(3)]
    rng = np.random.default_rng(0)
    for step in range(3000):
        one = leases[step % 3]
        if step % 7 == 0:
            assert one.sync()
        want = np.array([0.0, 1.0]) if rng.random() < 0.05 else np.array([rng.uniform(0.01, 0.3), 0.0])
        if not one.try_spend(want):  # what a replica does on a hard stop: sync now, try once more
            one.sync()
            one.try_spend(want)
        clock.t += 0.01
    for one in leases:
        one.release()
    used = store.used(NAMES)
    assert np.all(used <= CAP + 1e-9)
    assert np.all(used >= 0.97 * CAP)
    assert np.allclose(store.pool(NAMES) + used, CAP)
    assert store.holders() == {}


@pytest.mark.integration
def test_chunks_shrink_as_the_budget_runs_out(redis_client):
    """Each top-up is a fraction of what remains, so later chunks are smaller."""
    store = BudgetStore(redis_client, "s")
    store.ensure(NAMES, CAP)
    one = lease(store, "r0", Clock())
    one.sync()
    first = one.held.copy()
    assert first == pytest.approx(0.2 * CAP)
    for _ in range(10):
        assert one.try_spend(first / 10)
    one.sync()
    assert np.all(one.held < first) and one.held == pytest.approx(0.2 * 0.8 * CAP)


@pytest.mark.integration
def test_a_killed_replicas_lease_returns_after_its_ttl(redis_client):
    """A replica that stops syncing (killed) holds its lease until the time-to-live passes; the next sync of any
    other replica then returns it to the pool. What it reported before dying stays used."""
    store = BudgetStore(redis_client, "s")
    store.ensure(NAMES, CAP)
    clock = Clock()
    dead, alive = lease(store, "dead", clock, ttl_s=10.0), lease(store, "alive", clock, ttl_s=10.0)
    dead.sync()
    assert dead.try_spend(np.array([5.0, 1.0]))
    dead.sync()
    alive.sync()
    pool_before = store.pool(NAMES)
    clock.t += 5.0
    alive.sync()
    assert "dead" in store.holders()
    clock.t += 6.0
    alive.sync()
    assert "dead" not in store.holders()
    assert store.used(NAMES).tolist() == [5.0, 1.0]
    assert np.all(store.pool(NAMES) > pool_before)
    alive.release()
    assert np.allclose(store.pool(NAMES) + store.used(NAMES), CAP)


@pytest.mark.integration
def test_arrivals_are_counted_per_bucket(redis_client):
    """Arrivals are buffered and written per forecast bucket with the sync."""
    store = BudgetStore(redis_client, "s")
    store.ensure(NAMES, CAP)
    clock = Clock(600.0)
    one = lease(store, "r0", clock)
    for _ in range(3):
        one.count_arrival()
    clock.t = 660.0
    one.count_arrival()
    one.sync()
    assert store.arrivals() == {10: 3, 11: 1}


class FlakyStore:
    """A BudgetStore stand-in whose sync fails while `down` is set, recording what reached it."""

    def __init__(self, real: BudgetStore):
        self.real = real
        self.down = False

    def sync(self, *args, **kw):
        if self.down:
            raise redis.ConnectionError("Redis is down")
        return self.real.sync(*args, **kw)


@pytest.mark.integration
def test_redis_down_decisions_go_on_from_the_lease_and_nothing_is_lost(redis_client):
    """While syncs fail the replica spends what it holds (never more), buffers consumption and arrivals, says it is
    unhealthy; the first sync after Redis returns writes all of it. After the lease's time-to-live without a sync,
    nothing more is spent."""
    real = BudgetStore(redis_client, "s")
    real.ensure(NAMES, CAP)
    flaky = FlakyStore(real)
    clock = Clock()
    one = BudgetLease(flaky, "r0", NAMES, CAP, bucket_s=60.0, clock=clock, ttl_s=30.0, fraction=0.2)
    assert one.sync()
    flaky.down = True
    spent = 0
    while one.try_spend(np.array([1.0, 0.0])):
        one.count_arrival()
        spent += 1
    assert spent == 20  # the whole 20% lease of spend, not a unit more
    assert not one.sync() and not one.healthy and one.pending.tolist() == [20.0, 0.0]
    flaky.down = False
    assert one.sync() and one.healthy
    assert real.used(NAMES).tolist() == [20.0, 0.0] and sum(real.arrivals().values()) == 20
    flaky.down = True
    clock.t += 25.0  # past 0.8 * ttl without a successful sync: the pool may reclaim the lease soon
    assert not one.try_spend(np.array([0.1, 0.0])) and not one.remaining().any()


@pytest.mark.integration
def test_a_flushed_store_is_restored_from_the_replicas_records_and_never_overspends(redis_client):
    """FLUSHDB mid-campaign (a third of the budget spent, three replicas holding leases): the planner's ensure
    makes a new epoch at full capacity, the replicas' next syncs restore the consumption and keep back what the
    others held; spending on until the budget is gone, everything the replicas really spent, the dead one's
    included, stays within capacity (without the restore the whole capacity was handed out a second time)."""
    store = BudgetStore(redis_client, "s")
    first_epoch = store.ensure(NAMES, CAP)
    clock = Clock()
    leases = [lease(store, f"r{i}", clock, ttl_s=10.0) for i in range(3)]
    spent = np.zeros(2)
    step = np.array([0.5, 0.05])

    def spend(one, times):
        nonlocal spent
        for _ in range(times):
            if one.try_spend(step):
                spent = spent + step
            else:
                one.sync()

    for one in leases:
        one.sync()
    while store.used(NAMES)[0] < CAP[0] / 3:
        for one in leases:
            spend(one, 5)
            one.sync()
    alive = leases[:2]  # leases[2] dies with the flush, holding a lease (what it spent was reported)
    for one in alive:
        spend(one, 3)
        one.sync()
    before = store.used(NAMES)
    spend(alive[0], 3)  # reported only after the flush
    redis_client.flushdb()
    assert store.ensure(NAMES, CAP) != first_epoch  # the planner comes first: a new epoch at full capacity
    assert store.used(NAMES).tolist() == [0.0, 0.0]
    alive[0].sync()
    alive[1].sync()
    assert np.all(store.used(NAMES) >= before + 3 * step - 1e-9), "consumption restored, not reset to zero"
    assert alive[0].resets == alive[1].resets == 1
    held = alive[0].held + alive[1].held
    assert np.all(store.pool(NAMES) + store.used(NAMES) + held <= CAP + 1e-9), "others' leases kept back"
    for _ in range(100):
        for one in alive:
            spend(one, 3)
            one.sync()
        clock.t += 0.5  # the reserve of the dead replica's lease returns after its time-to-live (10 s)
    assert np.all(spent <= CAP * (1 + 1e-9)), f"spent {spent} of {CAP}"
    assert np.all(spent >= 0.95 * CAP), "the budget was still usable after the restore"
    assert np.all(store.used(NAMES) <= CAP + 1e-9)
