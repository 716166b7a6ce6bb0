"""The arrival history in a real Redis: atomic appends, a bounded stream, reload after a restart."""

import pytest

from autoscale.history import ArrivalHistoryStore

pytestmark = pytest.mark.integration

KEY = ("shop", "ranker", "v2")


def test_append_load_and_bound(redis_client):
    """Buckets come back in order, only for the same bucket length, and the stream stays near its cap."""
    store = ArrivalHistoryStore(redis_client, namespace="t", max_buckets=100)
    assert store.load(KEY, 60.0) == []
    store.append(KEY, [(i, float(i) / 2) for i in range(10)], bucket_s=60.0)
    store.append(KEY, [(10, 7.5)], bucket_s=30.0)  # from an older config: ignored on load
    assert store.load(KEY, 60.0) == [(i, float(i) / 2) for i in range(10)]
    for start in range(10, 1000, 100):
        store.append(KEY, [(i, 1.0) for i in range(start, start + 100)], bucket_s=60.0)
    assert redis_client.xlen(store.arrivals_key(KEY)) < 300  # MAXLEN ~ trims by whole nodes
    loaded = store.load(KEY, 60.0)
    assert len(loaded) == 100 and loaded[-1] == (1009, 1.0)


def test_lead_time_survives_a_new_store_and_forget_clears(redis_client):
    ArrivalHistoryStore(redis_client, namespace="t").save_lead_time(KEY, 42.5)
    fresh = ArrivalHistoryStore(redis_client, namespace="t")
    assert fresh.load_lead_time(KEY) == 42.5
    fresh.forget(KEY)
    assert fresh.load_lead_time(KEY) is None


def test_bad_values_are_refused(redis_client):
    store = ArrivalHistoryStore(redis_client, namespace="t")
    with pytest.raises(ValueError):
        store.append(KEY, [(1, float("nan"))], bucket_s=60.0)
    with pytest.raises(ValueError):
        store.save_lead_time(KEY, -1.0)
    assert store.load(KEY, 60.0) == []
