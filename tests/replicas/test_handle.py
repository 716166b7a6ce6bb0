"""Deployment handles over a real router and real in-process replicas (loopback channel, no Ray): retries through
the router, `call_sync` from a worker thread, and the table watch that acknowledges as the replica's id."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from replicas.callable import UserCallable
from replicas.channel.server import ChannelServerProtocol, ReplicaCore
from replicas.context import ReplicaContext
from replicas.handle import DeploymentCallError, DeploymentHandle
from replicas.routing.table import ReplicaInfo, VersionRoute
from replicas.runtime import LoopThread
from tests.replicas.tables import route, table

TOKEN = b"handle-token"


def triple(payload):
    return {"y": payload["x"] * 3}


class FakeRef:
    """What `actor.method.remote()` returns: something to await."""

    def __init__(self, value) -> None:
        self.value = value

    def __await__(self):
        async def value():
            return await self.value if isinstance(self.value, asyncio.Future) else self.value

        return value().__await__()


class FakeController:
    def __init__(self, first) -> None:
        self.table = first
        self.polls: list[tuple[int, str]] = []
        outer = self

        class _Get:
            def remote(self):
                return FakeRef(outer.table)

        class _Watch:
            def remote(self, known_version, timeout_s, watcher_id):
                outer.polls.append((known_version, watcher_id))
                return FakeRef(asyncio.get_running_loop().create_future())  # no change: waits

        self.get_table, self.watch_table = _Get(), _Watch()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def deployment():
    """A loop thread (the replica's loop), one live replica of `dep` and one that cannot be reached."""
    runner = LoopThread("test-handle-loop")

    async def start():
        core = ReplicaCore(runner.loop, UserCallable(triple, False, None, None), 8, TOKEN)
        server = await runner.loop.create_server(lambda: ChannelServerProtocol(core), "127.0.0.1", 0)
        return core, server

    core, server = runner.run(start(), 5)
    live = ReplicaInfo("dep#live", "app", "dep", "v1", "127.0.0.1", server.sockets[0].getsockname()[1])
    dead = ReplicaInfo("dep#dead", "app", "dep", "v1", "127.0.0.1", _closed_port())
    first = table(3, route([VersionRoute("v1", 100, (dead, live))], idempotent=True), token=TOKEN)
    controller = FakeController(first)
    context = ReplicaContext(app="app", deployment="caller", version="v1", replica_id="app.caller.v1#1",
                             loop=runner.loop, controller_name="ctl", namespace="ns")
    yield context, controller, core
    runner.run(_close(server, core), 5)


async def _close(server, core):
    server.close()
    core.close()


def test_call_sync_from_a_worker_thread_retries_through_the_router(deployment):
    """The unreachable replica costs no failure: the router tries the live one; every answer is the model's."""
    context, controller, core = deployment
    handle = DeploymentHandle("dep", context=context, find_controller=lambda _: controller)
    answers = []
    worker = threading.Thread(target=lambda: answers.extend(handle.call_sync({"x": i}) for i in range(20)))
    worker.start()
    worker.join(20)
    assert answers == [{"y": 3 * i} for i in range(20)]
    assert core.processed == 20


def test_the_handle_router_acknowledges_its_table_as_the_replica(deployment):
    context, controller, _ = deployment
    handle = DeploymentHandle("dep", context=context, find_controller=lambda _: controller)
    assert handle.call_sync({"x": 1}) == {"y": 3}
    assert controller.polls and controller.polls[-1] == (3, "app.caller.v1#1")


def test_errors_of_the_called_deployment_raise_deployment_call_error(deployment):
    context, controller, _ = deployment
    handle = DeploymentHandle("dep", context=context, find_controller=lambda _: controller)
    with pytest.raises(DeploymentCallError) as error:
        handle.call_sync({"no_x": 1})
    assert error.value.status == 500
    with pytest.raises(DeploymentCallError) as missing:
        DeploymentHandle("nope", context=context, find_controller=lambda _: controller).call_sync({"x": 1})
    assert missing.value.status == 404


def test_call_sync_on_the_loop_is_refused_instead_of_deadlocking(deployment):
    context, controller, _ = deployment
    handle = DeploymentHandle("dep", context=context, find_controller=lambda _: controller)

    async def on_loop():
        with pytest.raises(RuntimeError, match="would block"):
            handle.call_sync({"x": 1})
        return await handle.call({"x": 2})

    assert asyncio.run_coroutine_threadsafe(on_loop(), context.loop).result(10) == {"y": 6}
