"""The gateway's HTTP app end to end in one process: real HTTP, real channel to in-process replicas, no Ray.

Pins the error mapping of DESIGN.md: 400 bad body, 404 unknown route/version, 413 too large, 503 with
Retry-After when queues are full, 504 deadline, 502 when a replica fails after retries, 500 from user code.
"""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig
from gateway.http_app import build_app
from gateway.metrics import GatewayMetrics
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


class Echo:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate

    def __call__(self, payload):
        if isinstance(payload, dict) and payload.get("raise"):
            raise RuntimeError("model exploded")
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


class Harness:
    """Replicas on loopback, a router and the aiohttp app on a real port."""

    def __init__(self) -> None:
        self.servers = []
        self.cores = []

    async def replica(self, target, name, version="v1", max_ongoing=16) -> ReplicaInfo:
        loop = asyncio.get_running_loop()
        core = ReplicaCore(loop, UserCallable(target, False, None, None), max_ongoing, TOKEN)
        server = await loop.create_server(lambda: ChannelServerProtocol(core), "127.0.0.1", 0)
        self.servers.append(server)
        self.cores.append(core)
        return ReplicaInfo(name, "app", "dep", version, "127.0.0.1", server.sockets[0].getsockname()[1])

    async def start(self, versions, **route_options):
        self.router = Router(asyncio.get_running_loop())
        route = make_route(versions, **route_options)
        self.router.update_table(RoutingTable(version=1, apps=(AppRoute("app", "/api", "dep"),),
                                              deployments={("app", "dep"): route}, channel_token=TOKEN))
        self.metrics = GatewayMetrics(CollectorRegistry())
        self.admin = FakeAdmin()
        config = GatewayConfig(max_body_bytes=1024, access_log=False, admin_token="adm")
        self.server = TestServer(build_app(config, self.router, self.metrics, self.admin), host="127.0.0.1")
        await self.server.start_server()
        self.session = ClientSession()
        return self

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def post(self, path, body, **headers):
        async with self.session.post(self.url(path), data=body, headers=headers) as response:
            return response.status, response.headers.copy(), await response.read()

    async def close(self):
        await self.session.close()
        await self.server.close()
        self.router.close()
        for server in self.servers:
            server.close()
        for core in self.cores:
            core.close()


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


async def test_full_queue_answers_503_with_retry_after_and_deadline_504(harness):
    """With one slot busy and a queue of one, a third request is refused at once; a queued one times out."""
    gate = threading.Event()
    replica = await harness.replica(Echo(gate), "r1", max_ongoing=1)
    await harness.start([VersionRoute("v1", 100, (replica,))], max_ongoing_requests=1, max_queued_requests=1,
                        request_timeout_s=1.0)
    first = asyncio.ensure_future(harness.post("/api", b"{}"))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(harness.post("/api", b"{}"))
    await asyncio.sleep(0.1)
    async with harness.session.get(harness.url("/metrics")) as r:
        assert 'raygate_requests_in_flight{app="app"} 2.0' in await r.text()  # one running, one queued
    status, headers, body = await harness.post("/api", b"{}")
    assert status == 503 and headers["Retry-After"] == "1"
    assert orjson.loads(body)["error"]["code"] == "overloaded"
    status, _, body = await second
    assert status == 504 and orjson.loads(body)["error"]["code"] == "deadline_exceeded"
    gate.set()
    await first


async def test_dead_replica_is_retried_elsewhere_when_idempotent(harness):
    """A replica that cannot be reached costs no failed request: the router uses the live one."""
    live = await harness.replica(Echo(), "live")
    dead = ReplicaInfo("dead", "app", "dep", "v1", "127.0.0.1", 1)
    await harness.start([VersionRoute("v1", 100, (dead, live))])
    results = [await harness.post("/api", b'{"n": 1}') for _ in range(20)]
    assert all(status == 200 and headers["X-Raygate-Replica"] == "live" for status, headers, _ in results)


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


async def test_health_ready_routes_and_metrics(harness):
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    await harness.post("/api", b"{}")
    async with harness.session.get(harness.url("/-/healthz")) as r:
        assert r.status == 200
    async with harness.session.get(harness.url("/-/ready")) as r:
        assert r.status == 200
    async with harness.session.get(harness.url("/-/routes")) as r:
        assert await r.json() == {"/api": {"app": "app", "ingress": "dep"}}
    async with harness.session.get(harness.url("/metrics")) as r:
        text = await r.text()
    assert 'raygate_requests_total{app="app",code="200",deployment="dep",version="v1"} 1.0' in text
    assert "raygate_request_latency_seconds_bucket" in text
    assert 'raygate_requests_in_flight{app="app"} 0.0' in text


async def test_admin_api_needs_the_bearer_token(harness):
    replica = await harness.replica(Echo(), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))])
    async with harness.session.get(harness.url("/-/admin/status")) as r:
        assert r.status == 401
    async with harness.session.get(harness.url("/-/admin/status"), headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401
    auth = {"Authorization": "Bearer adm"}
    async with harness.session.get(harness.url("/-/admin/status"), headers=auth) as r:
        assert r.status == 200 and "gateway" in await r.json()
    async with harness.session.post(harness.url("/-/admin/split"), headers=auth,
                                    json={"app": "app", "deployment": "dep", "weights": {"v1": 30}}) as r:
        assert r.status == 200
    assert harness.admin.weights == ("app", "dep", {"v1": 30.0})
    async with harness.session.post(harness.url("/-/admin/deploy"), headers=auth,
                                    json={"apps": [{"name": "x"}]}) as r:
        body = await r.json()
        assert r.status == 400 and "apps[0].route_prefix" in body["error"]["message"]


async def test_hedged_request_is_answered_by_the_second_replica(harness):
    """With hedge_after_s, an idempotent request stuck on one replica is also sent to another; first wins."""
    gate = threading.Event()
    stuck = await harness.replica(Echo(gate), "stuck")
    quick = await harness.replica(Echo(), "quick")
    await harness.start([VersionRoute("v1", 100, (stuck, quick))], idempotent=True, hedge_after_s=0.05,
                        request_timeout_s=5.0)
    # make the stuck replica the one chosen first: it is less loaded than a busy quick one
    try:
        answers = await asyncio.gather(*(harness.post("/api", b'{"n": 1}') for _ in range(6)))
    finally:
        gate.set()
    assert all(status == 200 for status, _, _ in answers)
    assert all(headers["X-Raygate-Replica"] == "quick" for _, headers, _ in answers)


async def test_non_idempotent_request_is_not_retried_after_a_lost_connection(harness):
    """POST to a deployment that is not idempotent: a replica dying mid-request gives 502, not a retry."""
    gate = threading.Event()
    doomed = await harness.replica(Echo(gate), "doomed")
    await harness.start([VersionRoute("v1", 100, (doomed,))], request_timeout_s=5.0)
    pending = asyncio.ensure_future(harness.post("/api", b"{}"))
    await asyncio.sleep(0.2)
    harness.servers[0].close()
    for slot in harness.router.slots():
        slot.connection.transport.abort()  # the connection drops while the request runs
    status, _, body = await pending
    gate.set()
    assert status == 502 and orjson.loads(body)["error"]["code"] == "replica_failed"


async def test_deadline_passes_while_the_replica_holds_the_request(harness):
    """A request already sent to a replica that never answers ends with 504 once its deadline passes."""
    gate = threading.Event()
    replica = await harness.replica(Echo(gate), "r1")
    await harness.start([VersionRoute("v1", 100, (replica,))], request_timeout_s=0.5)
    try:
        status, _, body = await asyncio.wait_for(harness.post("/api", b"{}"), 5)
    finally:
        gate.set()
    assert status == 504 and orjson.loads(body)["error"]["code"] == "deadline_exceeded"
