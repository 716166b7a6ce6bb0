"""The gateway's HTTP app end to end in one process: real HTTP, real channel to in-process replicas, no Ray.

Pins the error mapping of DESIGN.md: 400 bad body, 404 unknown route/version, 413 too large, 503 with
Retry-After when queues are full, 504 deadline, 502 when a replica fails after retries, 500 from user code;
retries and hedging as the router promises them; readiness while draining; mirror counters; the structlog
context of a request.
"""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest
import structlog
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry

from gateway.app_state import ADMIN, ROUTER, STATE
from gateway.config import GatewayConfig
from gateway.http_app import build_app
from gateway.lifecycle import Listener, drain, provide
from gateway.metrics import GatewayMetrics, MetricsObserver
from replicas.callable import UserCallable
from replicas.channel.server import ChannelServerProtocol, ReplicaCore
from replicas.routing.failures import BadRequest
from replicas.routing.router import Router
from replicas.routing.table import (
    AppRoute,
    ReplicaInfo,
    RoutingTable,
    VersionRoute,
)
from tests.replicas.tables import route as make_route

TOKEN = b"t0ken"


class Calls:
    """Requests seen by a group of replicas; the first `block_first` of them wait for `gate`."""

    def __init__(self, block_first: int = 0) -> None:
        self.seen: list[str] = []
        self.block_first = block_first
        self.gate = threading.Event()
        self.lock = threading.Lock()


class Echo:
    def __init__(self, name: str = "", calls: Calls | None = None, gate: threading.Event | None = None) -> None:
        self.name = name
        self.calls = calls
        self.gate = gate

    def __call__(self, payload):
        if isinstance(payload, dict) and payload.get("raise"):
            raise RuntimeError("model exploded")
        if self.calls is not None:
            with self.calls.lock:
                self.calls.seen.append(self.name)
                blocked = len(self.calls.seen) <= self.calls.block_first
            if blocked:
                self.calls.gate.wait(10)
        if self.gate is not None:
            self.gate.wait(10)
        return {"echo": payload}


class FakeAdmin:
    def __init__(self) -> None:
        self.weights = None

    async def apply(self, spec_doc, wait):
        """Validates as the controller does: a refused spec is a BadRequest naming the field."""
        from deploy.spec import SpecError, parse_spec

        try:
            parse_spec(spec_doc, "<submitted spec>")
        except SpecError as exc:
            raise BadRequest(str(exc)) from None
        return {"generation": 1, "state": "applying"}

    async def apply_status(self):
        return {"generation": 1, "state": "applied"}

    async def status(self):
        return {"apps": [], "generation": 1, "apply": {}, "table_version": 1, "gateways": 1}

    async def set_weights(self, app, deployment, weights):
        self.weights = (app, deployment, weights)
        return {"weights": weights}

    async def scale(self, app, deployment, version, num_replicas):
        return {"target": num_replicas}

    async def shutdown(self):
        return None


class RecordingObserver(MetricsObserver):
    """Counts like the gateway does and keeps the structlog context seen inside each retry."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__(metrics)
        self.contexts: list[dict] = []

    def retried(self, app: str, deployment: str, reason: str) -> None:
        self.contexts.append(structlog.contextvars.get_contextvars())
        super().retried(app, deployment, reason)


class Harness:
    """Replicas on loopback, a router and the aiohttp app on a real port (the gateway's own Listener)."""

    def __init__(self) -> None:
        self.servers = []
        self.cores = []
        self.listener = None
        self.session = None

    async def replica(self, target, name, version="v1", max_ongoing=16) -> ReplicaInfo:
        loop = asyncio.get_running_loop()
        core = ReplicaCore(loop, UserCallable(target, False, None, None), max_ongoing, TOKEN)
        server = await loop.create_server(lambda: ChannelServerProtocol(core), "127.0.0.1", 0)
        self.servers.append(server)
        self.cores.append(core)
        return ReplicaInfo(name, "app", "dep", version, "127.0.0.1", server.sockets[0].getsockname()[1])

    def table(self, number, versions, **route_options) -> RoutingTable:
        route = make_route(versions, **route_options)
        return RoutingTable(version=number, apps=(AppRoute("app", "/api", "dep"),),
                            deployments={("app", "dep"): route}, channel_token=TOKEN)

    async def start(self, versions, config: GatewayConfig | None = None, **route_options):
        self.metrics = GatewayMetrics(CollectorRegistry())
        self.observer = RecordingObserver(self.metrics)
        self.router = Router(asyncio.get_running_loop(), observer=self.observer)
        self.router.update_table(self.table(1, versions, **route_options))
        self.admin = FakeAdmin()
        self.config = config or GatewayConfig(max_body_bytes=1024, access_log=False, admin_token="adm")
        self.app = build_app(self.config, self.metrics, [provide(ROUTER, self.router), provide(ADMIN, self.admin)])
        self.listener = Listener(self.app, self.config)
        self.port = await self.listener.start("127.0.0.1", 0)
        self.session = ClientSession()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def post(self, path, body, **headers):
        async with self.session.post(self.url(path), data=body, headers=headers) as response:
            return response.status, response.headers.copy(), await response.read()

    async def get(self, path, **headers):
        async with self.session.get(self.url(path), headers=headers) as response:
            return response.status, await response.read()

    async def metric_text(self) -> str:
        self.metrics.flush()
        return self.metrics.render().decode()

    async def close(self):
        if self.session is not None:
            await self.session.close()
        if self.listener is not None and self.app[STATE].state != "stopped":
            await self.listener.stop()
        self.router.close()
        for server in self.servers:
            server.close()
        for core in self.cores:
            core.close()


async def wait_until(condition, timeout_s: float = 5.0, what: str = "condition"):
    """Poll `condition` (bounded) instead of sleeping a guessed time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def harness():
    h = Harness()
    yield h
    await h.close()


async def test_success_headers_and_request_id(harness):
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    status, headers, body = await harness.post("/api/x", b'{"a": 1}', **{"X-Request-Id": "abc-123"})
    assert status == 200 and orjson.loads(body) == {"echo": {"a": 1}}
    assert headers["X-Request-Id"] == "abc-123"
    assert headers["X-Raygate-Version"] == "v1" and headers["X-Raygate-Replica"] == "r1"
    status, headers, _ = await harness.post("/api", b"{}")
    assert status == 200 and len(headers["X-Request-Id"]) == 16  # generated


async def test_error_mapping(harness):
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    status, _, body = await harness.post("/nowhere", b"{}")
    assert status == 404 and orjson.loads(body)["error"]["code"] == "route_not_found"
    status, _, body = await harness.post("/api", b"{oops")
    assert status == 400 and orjson.loads(body)["error"]["code"] == "bad_request"
    status, _, body = await harness.post("/api", b"x" * 5000)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "payload_too_large"
    status, headers, body = await harness.post("/api", b'{"raise": true}', **{"X-Request-Id": "rid-9"})
    error = orjson.loads(body)["error"]
    assert status == 500 and error["code"] == "model_error" and error["request_id"] == "rid-9"
    status, _, _ = await harness.post("/api", b'{"fine": 1}')
    assert status == 200  # the replica keeps serving after a user error
    status, _, body = await harness.post("/api", b"{}", **{"X-Raygate-Version": "v9"})
    assert status == 404 and orjson.loads(body)["error"]["code"] == "unknown_version"


async def test_chunked_body_over_the_limit_is_a_413_json_error(harness):
    """A body sent chunked (no Content-Length) is still cut at max_body_bytes, with the JSON error."""
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])

    async def chunks():
        for _ in range(10):
            yield b"x" * 512

    async with harness.session.post(harness.url("/api"), data=chunks()) as r:
        assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
        body = await r.json()
        assert r.status == 413 and body["error"]["code"] == "payload_too_large"
    assert harness.cores[0].in_flight == 0  # nothing reached the replica


async def test_full_queue_answers_503_with_retry_after_and_deadline_504(harness):
    """With one slot busy and a queue of one, a third request is refused at once; a queued one times out."""
    calls = Calls(block_first=1)
    replica = await harness.replica(Echo("r1", calls), "r1", max_ongoing=1)
    await harness.start([VersionRoute("v1", 100, (replica,))], max_ongoing_requests=1, max_queued_requests=1,
                        request_timeout_s=1.0)
    first = asyncio.ensure_future(harness.post("/api", b"{}"))
    await wait_until(lambda: calls.seen, what="the first request to reach the replica")
    second = asyncio.ensure_future(harness.post("/api", b"{}"))
    await wait_until(lambda: harness.app[STATE].in_flight == 2, what="the second request to queue")
    assert 'raygate_requests_in_flight{app="app"} 2.0' in await harness.metric_text()  # one running, one queued
    status, headers, body = await harness.post("/api", b"{}")
    assert status == 503 and headers["Retry-After"] == "1"
    assert orjson.loads(body)["error"]["code"] == "overloaded"
    status, _, body = await second
    assert status == 504 and orjson.loads(body)["error"]["code"] == "deadline_exceeded"
    calls.gate.set()
    await first


async def test_unreachable_replica_is_passed_over_even_for_a_non_idempotent_post(harness):
    """A request that was never sent (connection refused) may go elsewhere whatever the method: the router
    uses the live replica, and no request fails."""
    live = await harness.replica(Echo(), "live")
    dead = ReplicaInfo("dead", "app", "dep", "v1", "127.0.0.1", 1)
    await harness.start([VersionRoute("v1", 100, (dead, live))])  # idempotent unset: POST is not idempotent
    results = [await harness.post("/api", b'{"n": 1}') for _ in range(20)]
    assert all(status == 200 and headers["X-Raygate-Replica"] == "live" for status, headers, _ in results)


def _abort_connection_to(router: Router, replica_id: str) -> None:
    for slot in router.slots():
        if slot.replica_id == replica_id:
            slot.connection.transport.abort()  # the connection drops while the request runs


async def _one_held_request(harness, body: bytes = b"{}", headers: dict | None = None, **route_options):
    """Two replicas `a` and `b`; one request sent and held by the replica it reached (until `calls.gate`).
    -> (calls, the pending request, that replica's name)."""
    calls = Calls(block_first=1)
    a = await harness.replica(Echo("a", calls), "a")
    b = await harness.replica(Echo("b", calls), "b")
    await harness.start([VersionRoute("v1", 100, (a, b))], **route_options)
    pending = asyncio.ensure_future(harness.post("/api", body, **(headers or {})))
    await wait_until(lambda: calls.seen, what="the request to reach a replica")
    return calls, pending, calls.seen[0]


async def test_request_sent_to_a_replica_that_dies_is_retried_elsewhere_when_idempotent(harness):
    """An idempotent deployment: the request reached one replica, whose connection then dropped; the router
    sends it again to the other replica, and the client sees a 200 from there. The retry runs inside the
    request, with the request's structlog context bound."""
    calls, pending, first = await _one_held_request(harness, b'{"n": 1}', {"X-Request-Id": "rid-retry"},
                                                    idempotent=True, request_timeout_s=5.0)
    _abort_connection_to(harness.router, first)
    status, headers, _ = await pending
    calls.gate.set()
    other = "b" if first == "a" else "a"
    assert status == 200 and headers["X-Raygate-Replica"] == other
    assert calls.seen == [first, other]  # sent, lost, sent again: a real retry, not a first choice
    assert harness.observer.contexts == [{"request_id": "rid-retry", "app": "app", "deployment": "dep",
                                          "version": "-"}]


async def test_non_idempotent_request_is_not_retried_after_a_lost_connection(harness):
    """POST to a deployment that is not idempotent: a replica dying mid-request gives 502, not a retry."""
    calls, pending, first = await _one_held_request(harness, request_timeout_s=5.0)
    _abort_connection_to(harness.router, first)
    status, _, body = await pending
    calls.gate.set()
    assert status == 502 and orjson.loads(body)["error"]["code"] == "replica_failed"
    assert len(calls.seen) == 1  # never sent twice


async def test_a_sent_non_idempotent_post_gets_its_answer_from_a_replica_ejected_for_a_ping_timeout(harness):
    """POST to a deployment that is not idempotent; the replica running it stops reading its connection (a loop
    stalled under load), so its pings go unanswered past ping_timeout_s and it is ejected. The POST may have
    reached the model, so it is neither failed (502) nor sent again: once the replica reads again and the model
    finishes, the client gets that replica's 200."""
    calls, pending, first = await _one_held_request(harness, request_timeout_s=10.0)
    stalled = harness.cores[0 if first == "a" else 1]
    for connection in stalled.connections:
        connection.transport.pause_reading()
    await wait_until(lambda: [(e["replica_id"], e["reason"]) for e in harness.router.ejections]
                     == [(first, "ping_timeout")], what="the ping-timeout ejection")
    assert not pending.done()
    for connection in stalled.connections:
        connection.transport.resume_reading()
    calls.gate.set()
    status, headers, _ = await pending
    assert status == 200 and headers["X-Raygate-Replica"] == first
    assert calls.seen == [first]  # never sent twice


async def test_hedge_sends_a_second_copy_that_answers(harness):
    """With hedge_after_s, an idempotent request stuck on one replica is also sent to the other, which
    answers. Whichever replica gets the request first holds it: without a hedge the request would wait
    for its 5 s deadline (504), so the 200 from the other replica is the hedge's."""
    calls = Calls(block_first=1)
    a = await harness.replica(Echo("a", calls), "a")
    b = await harness.replica(Echo("b", calls), "b")
    await harness.start([VersionRoute("v1", 100, (a, b))], idempotent=True, hedge_after_s=0.05,
                        request_timeout_s=5.0)
    try:
        status, headers, _ = await harness.post("/api", b'{"n": 1}')
    finally:
        calls.gate.set()
    assert status == 200
    assert len(calls.seen) == 2 and headers["X-Raygate-Replica"] == calls.seen[1] != calls.seen[0]


async def test_deadline_passes_while_the_replica_holds_the_request(harness):
    """A request already sent to a replica that never answers ends with 504 once its deadline passes."""
    gate = threading.Event()
    replica = await harness.replica(Echo(gate=gate), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))], request_timeout_s=0.5)
    try:
        status, _, body = await asyncio.wait_for(harness.post("/api", b"{}"), 5)
    finally:
        gate.set()
    assert status == 504 and orjson.loads(body)["error"]["code"] == "deadline_exceeded"


async def test_version_split_pinning_and_stickiness(harness):
    one = await harness.replica(Echo(), "a", "v1")
    two = await harness.replica(Echo(), "b", "v2")
    await harness.start([VersionRoute("v1", 50, (one,)), VersionRoute("v2", 50, (two,))])
    pinned = {(await harness.post("/api", b"{}", **{"X-Raygate-Version": "v2"}))[1]["X-Raygate-Version"]
              for _ in range(10)}
    assert pinned == {"v2"}
    for key in ("k1", "k2", "k3"):
        seen = {(await harness.post("/api", b"{}", **{"X-Raygate-Split-Key": key}))[1]["X-Raygate-Version"]
                for _ in range(5)}
        assert len(seen) == 1


async def test_mirrored_copies_are_counted_by_version_and_status(harness):
    """Every request is copied to the weight-0 `shadow` version; its answers are counted, not returned."""
    primary = await harness.replica(Echo(), "p", "v1")
    shadow = await harness.replica(Echo(), "s", "shadow")
    await harness.start([VersionRoute("v1", 100, (primary,)), VersionRoute("shadow", 0, (shadow,), 100)])
    for _ in range(5):
        status, headers, _ = await harness.post("/api", b"{}")
        assert status == 200 and headers["X-Raygate-Version"] == "v1"
    line = 'raygate_mirror_requests_total{app="app",code="200",deployment="dep",version="shadow"} 5.0'
    text = ""
    for _ in range(500):  # bounded: the copies finish after the primaries
        text = await harness.metric_text()
        if line in text:
            break
        await asyncio.sleep(0.01)
    assert line in text
    assert 'raygate_mirror_latency_seconds_count{app="app",deployment="dep",version="shadow"} 5.0' in text


async def test_health_ready_routes_and_metrics(harness):
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    await harness.post("/api", b"{}")
    assert (await harness.get("/-/healthz"))[0] == 200
    assert (await harness.get("/-/ready"))[0] == 200
    status, body = await harness.get("/-/routes")
    assert status == 200 and orjson.loads(body) == {"/api": {"app": "app", "ingress": "dep"}}
    status, body = await harness.get("/metrics")
    text = body.decode()
    assert 'raygate_requests_total{app="app",code="200",deployment="dep",version="v1"} 1.0' in text
    assert "raygate_request_latency_seconds_bucket" in text
    assert 'raygate_requests_in_flight{app="app"} 0.0' in text
    status, body = await harness.get("/-/nothing-here")
    assert status == 404 and orjson.loads(body)["error"]["code"] == "not_found"
    async with harness.session.post(harness.url("/-/ready")) as r:
        assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"


async def test_ready_is_503_while_draining_and_in_flight_requests_finish(harness):
    """Stopping: /-/ready answers 503 at once while a request is still being answered; the request then
    completes with 200 and only then does the gateway stop listening."""
    calls = Calls(block_first=1)
    replica = await harness.replica(Echo("r1", calls), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    pending = asyncio.ensure_future(harness.post("/api", b"{}"))
    await wait_until(lambda: calls.seen, what="the request to reach the replica")
    stopping = asyncio.ensure_future(drain(harness.listener, minimum_s=0.0, timeout_s=10))
    await wait_until(lambda: harness.app[STATE].state == "draining", what="draining")
    status, body = await harness.get("/-/ready")
    assert status == 503 and orjson.loads(body) == {"status": "draining"}
    assert not stopping.done()
    calls.gate.set()
    status, _, _ = await pending
    assert status == 200
    assert await stopping is True
    assert harness.app[STATE].state == "stopped"


async def test_admin_api_needs_the_bearer_token(harness):
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    for path in ("/-/admin/status", "/-/admin/no-such-thing"):  # the token is checked before the path
        status, body = await harness.get(path)
        assert status == 401 and orjson.loads(body)["error"]["code"] == "unauthorized"
    status, _ = await harness.get("/-/admin/status", Authorization="Bearer nope")
    assert status == 401
    auth = {"Authorization": "Bearer adm"}
    status, body = await harness.get("/-/admin/status", **auth)
    assert status == 200 and "gateway" in orjson.loads(body)
    status, body = await harness.get("/-/admin/no-such-thing", **auth)
    assert status == 404 and orjson.loads(body)["error"]["code"] == "not_found"
    async with harness.session.post(harness.url("/-/admin/split"), headers=auth,
                                    json={"app": "app", "deployment": "dep", "weights": {"v1": 30}}) as r:
        assert r.status == 200
    assert harness.admin.weights == ("app", "dep", {"v1": 30.0})
    async with harness.session.post(harness.url("/-/admin/split"), headers=auth,
                                    json={"app": "app", "deployment": "dep", "weights": {"v1": "lots"}}) as r:
        assert r.status == 400 and "weights.v1" in (await r.json())["error"]["message"]
    async with harness.session.post(harness.url("/-/admin/deploy"), headers=auth,
                                    json={"apps": [{"name": "x"}]}) as r:
        body = await r.json()
        assert r.status == 400 and "apps[0].route_prefix" in body["error"]["message"]
    async with harness.session.post(harness.url("/-/admin/deploy"), headers=auth, data=b"") as r:
        assert r.status == 400 and "empty" in (await r.json())["error"]["message"]  # never "remove every app"
    async with harness.session.post(harness.url("/-/admin/deploy"), headers=auth, data=b"x" * 5000) as r:
        assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"


async def test_openapi_lists_control_admin_and_app_routes(harness):
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    status, body = await harness.get("/-/openapi.json")
    document = orjson.loads(body)
    assert status == 200 and document["openapi"].startswith("3.")
    assert {"/-/healthz", "/-/ready", "/-/routes", "/metrics", "/-/admin/deploy", "/-/admin/split", "/api"} <= \
        set(document["paths"])
    assert document["paths"]["/-/admin/split"]["post"]["security"] == [{"bearer": []}]


async def test_admin_bodies_are_bounded_before_they_reach_the_controller(harness):
    """Weights must be finite and non-negative (YAML's .inf and .nan included); replica counts whole numbers
    within the wire's bound: each refusal is a 400 naming the field, and the backend is never asked."""
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    auth = {"Authorization": "Bearer adm", "Content-Type": "application/yaml"}
    for weight in (".inf", ".nan", "-1", "true", "'2'"):
        body = f"{{app: app, deployment: dep, weights: {{v1: {weight}}}}}".encode()
        async with harness.session.post(harness.url("/-/admin/split"), headers=auth, data=body) as r:
            assert r.status == 400 and "weights.v1" in (await r.json())["error"]["message"], weight
    for count in ("1e30", "2.5", "-1", "true", "99999999999999999999"):
        body = f"{{app: app, deployment: dep, version: v1, num_replicas: {count}}}".encode()
        async with harness.session.post(harness.url("/-/admin/scale"), headers=auth, data=body) as r:
            assert r.status == 400 and "num_replicas" in (await r.json())["error"]["message"], count
    assert harness.admin.weights is None


def test_access_lines_are_one_json_object_per_line_with_event_and_ts_last(tmp_path):
    """The access line's shape (as structlog's JSONRenderer wrote it before): the request's fields in order,
    then "event" and "ts"; buffered until the stream is flushed; other lines through `info` in the same shape."""
    import time

    from gateway.access_log import open_access_log

    path = tmp_path / "access.jsonl"
    log, stream = open_access_log(str(path))
    before = time.time()
    log.access("rid-1", "POST", "/api", "app", "dep", "v1", "r1", 200, 1.234)
    log.info("note", weird=object())
    assert path.read_bytes() == b""  # not flushed yet: no syscall per request
    stream.flush()
    lines = path.read_bytes().splitlines()
    access, note = orjson.loads(lines[0]), orjson.loads(lines[1])
    assert list(access) == ["request_id", "method", "path", "app", "deployment", "version", "replica", "status",
                            "ms", "event", "ts"]
    assert access["event"] == "access" and access["status"] == 200 and access["ms"] == 1.234
    assert before <= access["ts"] <= time.time()
    assert note["event"] == "note" and note["weird"].startswith("<object")
    stream.close()
