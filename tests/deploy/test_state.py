"""The controller's state store on a real Redis: schema-checked loads, newest revision wins, rejected
documents kept aside, epochs that only go up."""

from __future__ import annotations

import orjson
import pytest
import redis.asyncio as aioredis

from deploy.state import ControllerStateStore, SavedState, SavedStateInvalid

pytestmark = pytest.mark.integration

SPEC = {"apps": [{"name": "a", "route_prefix": "/a", "ingress": "d",
                  "deployments": [{"name": "d", "import_path": "m:f"}]}]}


def _state(revision: int, **changes) -> SavedState:
    fields = dict(schema_version=1, revision=revision, generation=3, spec=SPEC, channel_token="ab" * 16,
                  weights={"a/d": {"v1": 100.0}}, scales={"a/d/v1": 2}, replicas={"a.d.v1#1": ("a", "d", "v1")},
                  retiring=[])
    return SavedState(**(fields | changes))


@pytest.fixture
async def store(redis_client, redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield ControllerStateStore(client, "test:ctl")
    await client.aclose()


async def test_round_trip_and_an_older_revision_never_overwrites_a_newer_one(store):
    assert await store.load() is None
    assert await store.save(_state(2, generation=5))
    assert not await store.save(_state(1, generation=4))  # late, older snapshot: refused
    state, spec = await store.load()
    assert state.revision == 2 and state.generation == 5 and spec.apps[0].name == "a"
    assert await store.saved_revision() == 2


@pytest.mark.parametrize("tamper", [
    lambda d: d | {"schema_version": 2},
    lambda d: d | {"weights": {"a/d": {"v1": "nan"}}},
    lambda d: d | {"scales": {"a/d/v1": 10**9}},
    lambda d: d | {"channel_token": "short"},
    lambda d: {k: v for k, v in d.items() if k != "replicas"},
    lambda d: d | {"spec": {"apps": [{"name": "a"}]}},
    lambda d: d | {"extra": 1},
])
async def test_a_tampered_document_fails_validation_naming_the_field(store, redis_client, tamper):
    doc = tamper(_state(1).model_dump(mode="json"))
    redis_client.set(store.key, orjson.dumps(doc))
    with pytest.raises(SavedStateInvalid):
        await store.load()


async def test_not_json_is_refused_and_set_aside_keeps_it(store, redis_client):
    redis_client.set(store.key, b"{not json")
    with pytest.raises(SavedStateInvalid, match="not JSON"):
        await store.load()
    key = await store.set_aside("bad")
    kept = orjson.loads(redis_client.get(key))
    assert kept["document"] == "{not json" and kept["reason"] == "bad"
    assert await store.load() is None


async def test_epochs_increase(store):
    first = await store.next_epoch()
    assert await store.next_epoch() == first + 1
