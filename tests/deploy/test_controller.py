"""The controller's runtime changes, acknowledgements and token rotation on stubs: no Ray, no Redis."""

from __future__ import annotations

import asyncio

import pytest

from deploy.controller import Controller
from deploy.policy import ControllerConfig, ControllerPolicy
from deploy.reconcile import RUNNING
from deploy.records import ReplicaRecord, VersionState
from deploy.replica_ops import rotate_channel_tokens
from deploy.spec import parse_spec, resolve_versions

SPEC = parse_spec({"apps": [{"name": "q", "route_prefix": "/q", "ingress": "lin", "deployments": [{
    "name": "lin", "import_path": "m:f", "max_replicas": 8,
    "versions": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}]}]}]})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StubMethod:
    def __init__(self, fn) -> None:
        self.fn = fn
        self.calls = []

    def remote(self, *args):
        self.calls.append(args)

        async def run():
            return self.fn(*args)

        return run()


class StubReplica:
    def __init__(self, rotates: bool = True) -> None:
        def rotate(new, grace):
            if not rotates:
                raise AttributeError("rotate_channel_token")
            return True

        self.rotate_channel_token = StubMethod(rotate)


async def _controller(clock=None) -> Controller:
    ctl = Controller(ControllerConfig(policy=ControllerPolicy(ack_timeout_s=2.0)), clock=clock or FakeClock())
    started = asyncio.get_running_loop().create_future()
    started.set_result(None)
    ctl._started = started  # no gateways, no Redis: the state is set by hand below
    ctl.spec = SPEC
    for key, resolved in resolve_versions(SPEC).items():
        state = VersionState(resolved)
        record = ReplicaRecord(f"{key[2]}#1", key, StubReplica(), 0.0, resolved.fingerprint, state=RUNNING)
        state.replicas[record.replica_id] = record
        ctl.versions[key] = state
    ctl.publish()
    return ctl


async def test_bad_weights_are_refused_and_change_nothing():
    ctl = await _controller()
    before = ctl.table
    for bad in ("nan", float("inf"), None, [1], True, "2", -5):
        with pytest.raises(ValueError, match=r"weights\.v2"):
            await ctl.set_weights("q", "lin", {"v2": bad})
    with pytest.raises(KeyError):
        await ctl.set_weights("q", "nope", {"v2": 1})
    with pytest.raises(ValueError, match="positive"):
        await ctl.set_weights("q", "lin", {"v1": 0, "v2": 0})
    assert ctl.table is before and ctl.weights == {}


async def test_a_split_publishes_a_table_with_the_new_weights_merged():
    ctl = await _controller()
    version = ctl.table.version
    await ctl.set_weights("q", "lin", {"v2": 50})
    answer = await ctl.set_weights("q", "lin", {"v1": 25})
    assert answer["weights"] == {"v1": 25.0, "v2": 50.0}
    route = ctl.table.deployment("q", "lin")
    assert [v.weight for v in route.versions] == [25.0, 50.0] and ctl.table.version == version + 2


async def test_scale_is_typed_and_capped_by_max_replicas():
    ctl = await _controller()
    for bad in (10**9, 2.5, True, "2", 9):
        with pytest.raises(ValueError, match="num_replicas"):
            await ctl.scale("q", "lin", "v1", bad)
    with pytest.raises(KeyError):
        await ctl.scale("q", "lin", "v9", 1)
    assert (await ctl.scale("q", "lin", "v1", 8))["target"] == 8 and ctl.target(("q", "lin", "v1")) == 8


async def test_table_versions_come_from_the_epoch_not_the_clock():
    """Versions are epoch << 32 | counter: a later epoch (a restarted controller) is always newer."""
    ctl = await _controller()
    ctl.epoch = 7
    ctl.publish()
    assert ctl.table.version >> 32 == 7


async def test_a_router_ahead_of_a_memory_only_controller_gets_a_newer_table():
    ctl = await _controller()
    known = ctl.table.version + 1000
    table = await ctl.watch_table(known, 0.01, "gateway-0-1")
    assert table is not None and table.version > known


async def test_retired_replicas_are_drained_only_after_every_router_acknowledged():
    """watch_table(known_version, ..., watcher_id) acknowledges; retire waits for it before draining."""
    ctl = await _controller()
    drained = []

    async def drain_and_kill(record):
        drained.append(record.replica_id)

    ctl.ops.drain_and_kill = drain_and_kill
    await ctl.watch_table(ctl.table.version, 0.01, "gateway-0-11")
    state = ctl.versions[("q", "lin", "v2")]
    victim = state.replicas.pop("v2#1")
    ctl.publish()
    retire = asyncio.create_task(ctl.retire([victim]))
    await asyncio.sleep(0.05)
    assert drained == [] and ctl.acks.pending(ctl.table.version) == ["gateway-0-11"]
    await ctl.watch_table(ctl.table.version, 0.01, "gateway-0-11")
    await asyncio.wait_for(retire, 1.0)
    assert drained == ["v2#1"] and ctl.acks.timeouts == 0


async def test_a_split_returns_only_once_every_router_runs_the_new_table():
    """README: `raygate split` returns once every gateway acknowledged the table with the new weights."""
    ctl = await _controller()
    await ctl.watch_table(ctl.table.version, 0.01, "gateway-0-21")
    before = ctl.table.version
    split = asyncio.create_task(ctl.set_weights("q", "lin", {"v2": 50}))
    for _ in range(200):  # bounded: until the new table is published and waits for its acknowledgement
        if ctl.table.version > before and ctl.acks.pending(ctl.table.version) == ["gateway-0-21"]:
            break
        await asyncio.sleep(0.005)
    assert ctl.acks.pending(ctl.table.version) == ["gateway-0-21"] and not split.done()
    await ctl.watch_table(ctl.table.version, 0.01, "gateway-0-21")
    await asyncio.wait_for(split, 1.0)
    assert ctl.acks.timeouts == 0


async def test_retire_gives_up_waiting_after_the_ack_timeout_and_counts_it():
    ctl = await _controller(clock=__import__("time").monotonic)
    drained = []

    async def drain_and_kill(record):
        drained.append(record.replica_id)

    ctl.ops.drain_and_kill = drain_and_kill
    await ctl.watch_table(ctl.table.version, 0.01, "gateway-1-12")  # then goes quiet
    victim = ctl.versions[("q", "lin", "v1")].replicas.pop("v1#1")
    ctl.publish()
    ctl.policy = ControllerPolicy(ack_timeout_s=0.1)
    await asyncio.wait_for(ctl.retire([victim]), 3.0)
    assert drained == ["v1#1"] and ctl.acks.timeouts == 1


async def test_token_rotation_asks_every_adopted_replica_and_reports_refusals():
    good = ReplicaRecord("a", ("q", "lin", "v1"), StubReplica(), 0.0, "f")
    old = ReplicaRecord("b", ("q", "lin", "v1"), StubReplica(rotates=False), 0.0, "f")
    refused = await rotate_channel_tokens([good, old], b"n" * 16, 30.0, 1.0)
    assert refused == [old] and good.actor.rotate_channel_token.calls == [(b"n" * 16, 30.0)]


async def test_a_controller_that_cannot_reach_redis_gives_up_with_a_clear_error_and_no_password():
    """Bounded wait, then RedisUnreachable naming the address (without the password); nothing starts empty."""
    from deploy.embedded import free_port
    from deploy.persistence import RedisUnreachable

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    ctl = Controller(ControllerConfig(redis_url=url, policy=ControllerPolicy(redis_wait_s=0.3, redis_retry_s=0.05)))
    with pytest.raises(RedisUnreachable, match="cannot reach Redis at redis://127.0.0.1") as error:
        await ctl.persistence.open()
    assert "hunter2" not in str(error.value) and ctl.spec.apps == () and ctl.persistence.store is None
