"""The dual-price store on a real Redis: atomic versioned records, announcements, readers that survive outages."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from planner.store import DualPriceReader, DualPrices, DualPriceStore

pytestmark = pytest.mark.integration

CERT = {"dual_objective": 10.0, "primal_objective": 9.99, "max_violation": 0.0}


def test_publish_read_round_trip(redis_client):
    """A published record reads back whole: prices, names, certificate, time computed, version 1 then 2."""
    store = DualPriceStore(redis_client)
    assert store.read("coupons") is None
    v1 = store.publish("coupons", [0.5, 0.0], ["spend", "count"], CERT, computed_at=1000.0)
    v2 = store.publish("coupons", [0.6, 0.1], ["spend", "count"], CERT, computed_at=1001.0)
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
            v = store.publish("race", [float(idx), float(j)], ["a", "b"], CERT, computed_at=time.time())
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
    v = store.publish("ads", [1.0], ["k"], CERT, computed_at=1.0)
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
    old = DualPrices("s", 1, (1.0,), ("k",), CERT, 1.0)
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
        v = store.publish("live", [0.3, 0.6], ["a", "b"], CERT, computed_at=6.0)
        assert v == 2
        while reader.current().version < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert reader.current().lam == (0.3, 0.6)
    finally:
        reader.stop()
        client.close()
        server2.stop()
