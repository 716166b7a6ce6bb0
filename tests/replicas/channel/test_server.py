"""The replica's channel server and the router's channel client, over real loopback TCP (no Ray)."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from replicas.callable import ImportPathError, load_callable
from replicas.channel.client import (
    ReplicaConnection,
    ReplicaUnreachable,
)
from replicas.channel.frames import (
    STATUS_BAD_REQUEST,
    STATUS_BUSY,
    STATUS_DRAINING,
    STATUS_OK,
    STATUS_USER_ERROR,
)
from replicas.channel.server import _BATCH_BELOW_S, ChannelServerProtocol, ReplicaCore

TOKEN = b"secret-token"


class Model:
    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate

    def __call__(self, payload):
        if payload.get("raise"):
            raise ValueError("bad input value")
        if self.gate is not None:
            self.gate.wait(5)
        return {"double": payload["v"] * 2}


async def async_model(payload):
    await asyncio.sleep(0)
    return {"echo": payload}


async def _serve(target, max_ongoing=8):
    from replicas.callable import UserCallable

    loop = asyncio.get_running_loop()
    user = UserCallable(target=target, is_async=asyncio.iscoroutinefunction(target), instance=None,
                        health_check=None)
    core = ReplicaCore(loop, user, max_ongoing, TOKEN)
    server = await loop.create_server(lambda: ChannelServerProtocol(core), "127.0.0.1", 0)
    return core, server, server.sockets[0].getsockname()[1]


async def test_sync_model_answers_and_errors_are_mapped():
    """200 with the result; 400 for bad JSON; 500 carrying the request id for a raising model, which keeps serving."""
    core, server, port = await _serve(Model(), max_ongoing=64)
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", port, TOKEN)
    try:
        answers = await asyncio.gather(*(conn.request(b"r%d" % i, b"/", orjson.dumps({"v": i})) for i in range(50)))
        assert [orjson.loads(body)["double"] for _, body in answers] == [2 * i for i in range(50)]
        status, body = await conn.request(b"rid-bad", b"/", b"{not json")
        assert status == STATUS_BAD_REQUEST and b"not valid JSON" in body
        status, body = await conn.request(b"rid-42", b"/", orjson.dumps({"raise": True}))
        error = orjson.loads(body)["error"]
        assert status == STATUS_USER_ERROR and error["request_id"] == "rid-42" and "bad input value" in error["message"]
        status, body = await conn.request(b"r", b"/", orjson.dumps({"v": 4}))
        assert (status, orjson.loads(body)) == (STATUS_OK, {"double": 8})
        assert core.errors == 2 and core.in_flight == 0
    finally:
        conn.close()
        server.close()
        core.close()


async def test_async_model_runs_on_the_loop():
    core, server, port = await _serve(async_model)
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", port, TOKEN)
    status, body = await conn.request(b"r", b"/", b'{"a": 1}')
    assert (status, orjson.loads(body)) == (STATUS_OK, {"echo": {"a": 1}})
    conn.close()
    server.close()


async def test_max_ongoing_is_enforced_and_drain_refuses_new_work():
    """Past max_ongoing_requests the replica answers BUSY; while draining it answers DRAINING and waits."""
    gate = threading.Event()
    core, server, port = await _serve(Model(gate), max_ongoing=2)
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", port, TOKEN)
    try:
        running = [asyncio.ensure_future(conn.request(b"r", b"/", b'{"v": 1}')) for _ in range(2)]
        await asyncio.sleep(0.1)
        status, _ = await conn.request(b"r", b"/", b'{"v": 1}')
        assert status == STATUS_BUSY and core.rejected == 1
        drained = asyncio.ensure_future(core.drain(5))
        await asyncio.sleep(0.05)
        status, _ = await conn.request(b"r", b"/", b'{"v": 1}')
        assert status == STATUS_DRAINING
        assert not drained.done()
        gate.set()
        assert [s for s, _ in await asyncio.gather(*running)] == [STATUS_OK, STATUS_OK]
        assert await drained is True
    finally:
        conn.close()
        server.close()
        core.close()


async def test_wrong_token_is_disconnected_before_anything_is_sent():
    """A client holding the wrong token fails the challenge: unreachable (the request never left), not lost."""
    core, server, port = await _serve(Model())
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", port, b"wrong")
    with pytest.raises(ReplicaUnreachable):
        await asyncio.wait_for(conn.request(b"r", b"/", b'{"v": 1}'), 5)
    assert core.processed == 0 and core.refused_connections == 1
    server.close()
    core.close()


async def test_unreachable_replica():
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", 1, TOKEN)
    with pytest.raises(ReplicaUnreachable):
        await conn.request(b"r", b"/", b"{}")


def test_load_callable_errors_name_the_problem():
    with pytest.raises(ImportPathError, match="cannot import module 'no_such_module_xyz'"):
        load_callable("no_such_module_xyz:Thing")
    with pytest.raises(ImportPathError, match="has no attribute 'Missing'"):
        load_callable("deploy.examples.models:Missing")
    with pytest.raises(ImportPathError, match="takes no init_args"):
        load_callable("json:dumps", (1,))
    assert load_callable("deploy.examples.models:Linear", (), {"scale": 2.0}).target({"x": [1.0] * 16})["y"] != 0


async def test_bad_input_from_user_code_answers_400_and_is_not_an_error():
    from replicas.user_errors import BadInput

    def picky(payload):
        raise BadInput("x must be positive")

    core, server, port = await _serve(picky)
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", port, TOKEN)
    status, body = await conn.request(b"rid-3", b"/", b"{}")
    error = orjson.loads(body)["error"]
    assert status == STATUS_BAD_REQUEST and error == {"code": "bad_input", "message": "x must be positive",
                                                      "request_id": "rid-3"}
    assert core.errors == 0
    conn.close()
    server.close()
    core.close()


class _Answers:
    """User code that answers what the request asks for: a status of its choosing, a non-finite value, its path."""

    wants_request_path = True

    def __call__(self, payload, path=None):
        from replicas import Reply

        if payload.get("accept"):
            return Reply({"queued": True}, status=202)
        if "value" in payload:
            return {"nested": [1.0, {"y": float(payload["value"])}]}
        return {"path": path}


async def test_reply_status_non_finite_results_and_the_request_path():
    """`Reply(status=202)` answers 202; a NaN/inf anywhere in the result is a 422 naming its JSON path (not a 200
    with null, and not a failure that counts against the replica); code that asks for it receives the path."""
    user = load_callable(f"{__name__}:_Answers")
    assert user.wants_path
    loop = asyncio.get_running_loop()
    core = ReplicaCore(loop, user, 8, TOKEN)
    server = await loop.create_server(lambda: ChannelServerProtocol(core), "127.0.0.1", 0)
    conn = ReplicaConnection(loop, "127.0.0.1", server.sockets[0].getsockname()[1], TOKEN)
    try:
        status, body = await conn.request(b"r1", b"/alloc/feedback", b'{"accept": true}')
        assert (status, orjson.loads(body)) == (202, {"queued": True})
        for value in ("inf", "-inf", "nan"):
            status, body = await conn.request(b"r2", b"/x", orjson.dumps({"value": value}))
            error = orjson.loads(body)["error"]
            assert status == 422 and error["code"] == "non_finite_result" and "$.nested[1].y" in error["message"]
        status, body = await conn.request(b"r3", b"/x", orjson.dumps({"value": 1e300}))
        assert (status, orjson.loads(body)) == (STATUS_OK, {"nested": [1.0, {"y": 1e300}]})
        status, body = await conn.request(b"r4", b"/api/sub/path", b"{}")
        assert orjson.loads(body) == {"path": "/api/sub/path"}
        assert core.errors == 0
    finally:
        conn.close()
        server.close()
        core.close()


def test_reply_refuses_a_status_outside_2xx():
    """A Reply can only choose a success status; errors are BadInput (400) or exceptions (500)."""
    from replicas import Reply

    with pytest.raises(ValueError, match="200-299"):
        Reply({}, status=500)


class Rendezvous:
    """A sync model whose calls all wait for each other: they answer only if `parties` of them run at once."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=2.0)

    def __call__(self, payload):
        self.barrier.wait()  # BrokenBarrierError (a 500) when the calls run one after another
        return {"ok": True}


async def test_a_fresh_replica_runs_concurrent_sync_calls_on_worker_threads():
    """Four calls sent at once to a replica that has served nothing yet run side by side (max_ongoing 8)."""
    core, server, port = await _serve(Rendezvous(4), max_ongoing=8)
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", port, TOKEN)
    try:
        answers = await asyncio.gather(*(conn.request(b"r%d" % i, b"/", b"{}") for i in range(4)))
        assert [status for status, _ in answers] == [STATUS_OK] * 4
    finally:
        conn.close()
        server.close()
        core.close()


class SlowFirstThenRendezvous:
    """Fast calls until `arm()`; then one slow call (`{"slow": true}`) and three that answer only side by side."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(3, timeout=2.0)

    def __call__(self, payload):
        if payload.get("slow"):
            time.sleep(0.05)
        elif payload.get("meet"):
            self.barrier.wait()
        return {"ok": True}


async def test_a_batch_that_turns_slow_hands_the_rest_to_worker_threads():
    """Once calls measure fast they run in batches; a batch whose first call turns slow must not make the calls
    behind it wait on the same thread (three of them here answer only when they run at once)."""
    core, server, port = await _serve(SlowFirstThenRendezvous(), max_ongoing=8)
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", port, TOKEN)
    try:
        for _ in range(40):  # fast calls bring the measured cost under the batching threshold
            await asyncio.gather(*(conn.request(b"w", b"/", b"{}") for _ in range(4)))
        assert core._call_seconds < _BATCH_BELOW_S
        bodies = [b'{"slow": true}'] + [b'{"meet": true}'] * 3
        answers = await asyncio.gather(*(conn.request(b"r%d" % i, b"/", body) for i, body in enumerate(bodies)))
        assert [status for status, _ in answers] == [STATUS_OK] * 4
    finally:
        conn.close()
        server.close()
        core.close()
