"""The dual-price store on a real Redis: atomic versioned records, announcements, readers that survive outages."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from planner.store import (
    DualPriceReader,
    DualPrices,
    DualPriceStore,
    certificate_problem,
    price_certificate,
)

pytestmark = pytest.mark.integration

CERT = {"dual_objective": 10.0, "primal_objective": 9.99, "max_violation": 0.0}


def test_publish_read_round_trip(redis_client):
    """A published record reads back whole: prices, names, certificate, time computed, version 1 then 2."""
    store = DualPriceStore(redis_client)
    assert store.read("coupons") is None
    v1 = store.publish("coupons", [0.5, 0.0], ["spend", "count"], CERT, computed_at=1000.0).version
    v2 = store.publish("coupons", [0.6, 0.1], ["spend", "count"], CERT, computed_at=1001.0).version
    assert (v1, v2) == (1, 2)
    rec = store.read("coupons")
    assert rec.version == 2 and rec.lam == (0.6, 0.1) and rec.names == ("spend", "count")
    assert rec.certificate == CERT and rec.computed_at == 1001.0
    with pytest.raises(ValueError):
        store.publish("coupons", [-1.0], ["x"], CERT, computed_at=0.0)


def test_concurrent_writers_get_distinct_increasing_versions(redis_client, redis_url):
    """Writers racing on one scenario get distinct versions 1..N, and the stored record is the highest one's."""
    results: list[int] = []
    lock = threading.Lock()

    def writer(idx):
        client = redis.Redis.from_url(redis_url)
        store = DualPriceStore(client)
        for j in range(25):
            v = store.publish("race", [float(idx), float(j)], ["a", "b"], CERT, computed_at=1.0).version
            with lock:
                results.append(v)
        client.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == list(range(1, 101))
    assert DualPriceStore(redis_client).read("race").version == 100


def test_publish_is_announced(redis_client):
    """Each publish sends its version on the scenario's channel."""
    store = DualPriceStore(redis_client)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.channel("ads"))
    time.sleep(0.05)
    v = store.publish("ads", [1.0], ["k"], CERT, computed_at=1.0).version
    msg = None
    deadline = time.time() + 5
    while msg is None and time.time() < deadline:
        msg = pubsub.get_message(timeout=0.2)
    assert msg is not None and int(msg["data"]) == v
    pubsub.close()


def test_reader_never_goes_back_to_an_older_version(redis_client):
    """A reader keeps the newest version it has seen, even if offered an older record later."""
    store = DualPriceStore(redis_client)
    reader = DualPriceReader(store, "s")
    store.publish("s", [1.0], ["k"], CERT, computed_at=1.0)
    store.publish("s", [2.0], ["k"], CERT, computed_at=2.0)
    assert reader.refresh().version == 2
    old = DualPrices("s", 1, (1.0,), ("k",), CERT, 1.0, epoch=reader.current().epoch)
    assert reader.offer(old) is False and reader.current().version == 2


def test_reader_serves_last_prices_while_redis_is_down(tmp_path):
    """With Redis stopped, the reader keeps returning the last good prices, marked stale with the error; the
    background subscriber picks up new prices by announcement once Redis is back."""
    from deploy.embedded import EmbeddedRedis

    server = EmbeddedRedis(data_dir=tmp_path / "r").start()
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = DualPriceStore(client)
    store.publish("live", [0.25, 0.5], ["a", "b"], CERT, computed_at=5.0)
    reader = DualPriceReader(store, "live")
    assert reader.refresh().lam == (0.25, 0.5) and not reader.stale
    port = server.port
    server.stop()
    got = reader.refresh()
    assert got is not None and got.lam == (0.25, 0.5) and got.version == 1
    assert reader.stale and reader.last_error
    server2 = EmbeddedRedis(data_dir=tmp_path / "r", port=port).start()  # same AOF: version 1 is still there
    try:
        reader.start(poll_s=30.0)
        deadline = time.time() + 10
        while reader.stale and time.time() < deadline:
            time.sleep(0.05)
        assert not reader.stale
        v = store.publish("live", [0.3, 0.6], ["a", "b"], CERT, computed_at=6.0).version
        assert v == 2
        while reader.current().version < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert reader.current().lam == (0.3, 0.6)
    finally:
        reader.stop()
        client.close()
        server2.stop()


def test_keys_share_the_scenario_hash_tag(redis_client):
    """Every key and the channel of one scenario carry the hash tag {namespace:scenario} (one Redis Cluster slot)."""
    store = DualPriceStore(redis_client, namespace="ns")
    store.publish("coupons", [1.0], ["k"], CERT, computed_at=1.0)
    keys = sorted(k.decode() for k in redis_client.keys("*"))
    assert keys == ["{ns:coupons}:duals", "{ns:coupons}:duals:epoch", "{ns:coupons}:duals:version"]
    assert store.channel("coupons").startswith("{ns:coupons}")


def test_after_flushdb_readers_move_to_the_new_prices(redis_client):
    """Issue 8 item 15: a reader holding version 5 sees FLUSHDB and new publishes (versions 1, 2 of a new epoch)
    and moves to them; while nothing is published after the flush it keeps its prices but says stale."""
    store = DualPriceStore(redis_client)
    reader = DualPriceReader(store, "s")
    for v in range(5):
        store.publish("s", [float(v)], ["k"], CERT, computed_at=float(v))
    assert reader.refresh().version == 5 and not reader.stale
    old_epoch = reader.current().epoch
    redis_client.flushdb()
    assert reader.refresh().version == 5 and reader.stale  # flushed, nothing new yet: say so
    store.publish("s", [7.0], ["k"], CERT, computed_at=1.0)
    got = reader.refresh()
    assert got.version == 1 and got.lam == (7.0,) and got.epoch != old_epoch
    assert not reader.stale and reader.resets == 1
    store.publish("s", [8.0], ["k"], CERT, computed_at=2.0)
    assert reader.refresh().lam == (8.0,)


def test_lost_aof_tail_version_going_back_is_a_reset(redis_client):
    """Same epoch but a lower version than held (the counter lost its tail): the reader takes Redis's record."""
    store = DualPriceStore(redis_client)
    reader = DualPriceReader(store, "s")
    for v in range(3):
        store.publish("s", [float(v)], ["k"], CERT, computed_at=float(v))
    assert reader.refresh().version == 3
    redis_client.set(store.version_key("s"), 0)
    redis_client.delete(store.record_key("s"))
    store.publish("s", [9.0], ["k"], CERT, computed_at=10.0)
    assert reader.refresh().lam == (9.0,) and reader.resets == 1


def test_an_older_solve_never_overwrites_a_newer_one(redis_client):
    """A publish computed earlier than the stored record is refused and changes nothing."""
    store = DualPriceStore(redis_client)
    assert store.publish("s", [2.0], ["k"], CERT, computed_at=200.0).accepted
    late = store.publish("s", [1.0], ["k"], CERT, computed_at=100.0)
    assert not late.accepted and late.version == 1 and "later" in late.reason
    rec = store.read("s")
    assert rec.lam == (2.0,) and rec.version == 1


def test_publish_certified_gates_on_tolerances_and_names(redis_client):
    """Prices are published only with the scenario's constraint names and a certificate within tolerance."""
    store = DualPriceStore(redis_client)
    good = price_certificate(100.0, 99.5, 0.001)
    kw = dict(expected_names=("a", "b"), gap_tol=0.01, overshoot_tol=0.005)
    assert not store.publish_certified("s", [1, 2], ["b", "a"], good, 1.0, **kw).accepted
    over = store.publish_certified("s", [1, 2], ["a", "b"], price_certificate(100.0, 99.5, 0.02), 1.0, **kw)
    assert not over.accepted and "overshoot" in over.reason
    wide = store.publish_certified("s", [1, 2], ["a", "b"], price_certificate(100.0, 90.0, 0.0), 1.0, **kw)
    assert not wide.accepted and "gap" in wide.reason
    assert store.read("s") is None
    assert store.publish_certified("s", [1, 2], ["a", "b"], good, 1.0, **kw).accepted


def test_rigorous_gap_charges_the_overshoot():
    """rigorous_gap = 1 - primal / ((1 + overshoot) * dual), beside the plain gap."""
    cert = price_certificate(100.0, 99.0, 0.05)
    assert cert["gap"] == pytest.approx(0.01)
    assert cert["rigorous_gap"] == pytest.approx(1 - 99.0 / (1.05 * 100.0))
    assert certificate_problem(cert, ["a"], ["a"], 0.1, 0.1) is None
    assert "not finite" in certificate_problem({"rigorous_gap": float("nan"), "max_violation": 0}, ["a"], ["a"], 1, 1)


def test_readers_flag_old_prices_stale(redis_client):
    """Prices computed longer ago than stale_after_s are stale even though Redis answers."""
    now = [1000.0]
    store = DualPriceStore(redis_client)
    reader = DualPriceReader(store, "s", clock=lambda: now[0], stale_after_s=30.0)
    store.publish("s", [1.0], ["k"], CERT, computed_at=990.0)
    reader.refresh()
    assert not reader.stale and reader.age_s() == pytest.approx(10.0)
    now[0] = 1021.0
    assert reader.stale
