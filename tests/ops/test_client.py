"""The client SDK: retry rules, budget, endpoint health as pure parts; then against small aiohttp servers on
127.0.0.1 started here (refused, dropped, 503, slow), and against the real platform (integration)."""

from __future__ import annotations

import asyncio
import json
import random
import socket

import pytest
from aiohttp import web

from raygate import (
    AsyncClient,
    Client,
    ClientConfig,
    ModelError,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from raygate.endpoints import EndpointSet
from raygate.policy import (
    CONNECT_FAILED,
    SEND_FAILED,
    TIMED_OUT,
    Outcome,
    RetryBudget,
    backoff_s,
    may_retry,
)

FAST = ClientConfig(timeout_s=2.0, deadline_s=5.0, backoff_base_s=0.01, backoff_max_s=0.05, probe_interval_s=0.05,
                    probe_timeout_s=0.5, refresh_interval_s=0.05)


# -- pure parts ---------------------------------------------------------------------------------------
def test_retry_rules_never_repeat_a_call_that_may_have_run_unless_idempotent():
    """Refused connections are retried for any call; anything that may have been delivered only when idempotent;
    a gateway refusal that ran nothing (overloaded/no_replicas) for any call; a model's 500 never."""
    assert may_retry(Outcome(failure=CONNECT_FAILED), idempotent=False)
    for outcome in (Outcome(failure=SEND_FAILED), Outcome(failure=TIMED_OUT), Outcome(status=502),
                    Outcome(status=504), Outcome(status=503, code="http_503")):
        assert not may_retry(outcome, idempotent=False), outcome
        assert may_retry(outcome, idempotent=True), outcome
    assert may_retry(Outcome(status=503, code="overloaded"), idempotent=False)
    assert may_retry(Outcome(status=503, code="no_replicas"), idempotent=False)
    for status in (400, 404, 413, 500):
        assert not may_retry(Outcome(status=status, code="x"), idempotent=True)


def test_retry_budget_allows_a_share_of_calls_and_refills_with_time():
    """With ratio 0.5 and no time-based refill, 10 calls earn 5 retries; time adds min_per_s tokens a second."""
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, cap=100, now=0.0)
    for _ in range(10):
        budget.on_call(0.0)
    assert sum(budget.try_spend(0.0) for _ in range(20)) == 5
    refilling = RetryBudget(ratio=0.0, min_per_s=2.0, cap=3, now=0.0)
    assert sum(refilling.try_spend(0.0) for _ in range(5)) == 2  # starts with min(cap, min_per_s)
    assert sum(refilling.try_spend(10.0) for _ in range(5)) == 3  # capped


def test_backoff_is_immediate_across_endpoints_and_jittered_on_the_same_one():
    config = ClientConfig(backoff_base_s=0.1, backoff_max_s=1.0)
    rng = random.Random(7)
    assert backoff_s(config, 3, same_endpoint=False, retry_after=None, rng=rng) == 0.0
    delays = [backoff_s(config, 3, same_endpoint=True, retry_after=None, rng=rng) for _ in range(200)]
    assert all(0 <= d <= 0.8 for d in delays) and len(set(delays)) > 100
    assert backoff_s(config, 1, True, retry_after=30.0, rng=rng) == 1.0  # Retry-After, capped


def test_endpoint_health_fails_over_and_back_in_preference_order():
    endpoints = EndpointSet(["http://a:1", "http://b:1/", "http://c:1"], down_after_errors=2)
    assert endpoints.candidates() == ["http://a:1", "http://b:1", "http://c:1"]
    assert not endpoints.record_failure("http://a:1", 1.0, "http_503", immediately=False)
    assert endpoints.record_failure("http://a:1", 2.0, "http_503", immediately=False)
    assert endpoints.record_failure("http://b:1", 3.0, "connect_failed", immediately=True)
    assert endpoints.candidates() == ["http://c:1", "http://a:1", "http://b:1"]  # then longest-out first
    assert endpoints.mark_up("http://a:1")
    assert endpoints.candidates()[0] == "http://a:1"  # fail-back to the preferred endpoint
    endpoints.replace(["http://c:1", "http://b:1"])  # a new order from the Keeper keeps known health
    assert endpoints.candidates() == ["http://c:1", "http://b:1"]


# -- against local servers ----------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """An aiohttp server on 127.0.0.1 whose behaviour a test sets: answer, 503, slow, drop the connection."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name, self.port = name, port
        self.mode = "ok"
        self.seen: list[dict] = []
        self.ready = True
        self.runner = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/-/ready":
            return web.json_response({"status": "ready"}, status=200 if self.ready else 503)
        body = await request.read()
        self.seen.append({"path": request.path, "headers": request.headers.copy(), "body": body})
        rid = request.headers.get("X-Request-Id", "")
        if self.mode == "drop":
            request.transport.close()
            await asyncio.sleep(1)
        if self.mode == "slow":
            await asyncio.sleep(3)
        if self.mode == "overloaded":
            return web.json_response({"error": {"code": "overloaded", "message": "queue full", "request_id": rid}},
                                     status=503, headers={"Retry-After": "0"})
        if self.mode == "model_error":
            return web.json_response({"error": {"code": "model_error", "message": "boom", "request_id": rid}},
                                     status=500)
        if request.path == "/missing":
            return web.json_response({"error": {"code": "route_not_found", "message": "no app serves '/missing'",
                                                "request_id": rid}}, status=404)
        return web.json_response({"server": self.name}, headers={"X-Raygate-Version": "v1", "X-Request-Id": rid})

    async def start(self) -> Server:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def servers():
    started = [await Server("a").start(), await Server("b").start()]
    yield started
    for server in started:
        if server.runner is not None:
            await server.stop()


async def test_refused_connection_fails_over_even_for_a_non_idempotent_call(servers):
    """Nothing was sent to a closed port, so a POST goes to the next endpoint; headers ride along."""
    dead = f"http://127.0.0.1:{_closed_port()}"
    async with AsyncClient([dead, servers[0].url], config=FAST) as client:
        answer = await client.post("/app", json={"x": 1}, split_key="user-1", version="v2", request_id="rid-1")
    assert answer.json() == {"server": "a"} and answer.endpoint == servers[0].url
    assert [a[1] for a in answer.attempts] == [CONNECT_FAILED, "200"]
    headers = servers[0].seen[0]["headers"]
    assert headers["X-Raygate-Split-Key"] == "user-1" and headers["X-Raygate-Version"] == "v2"
    assert headers["X-Request-Id"] == "rid-1" and json.loads(servers[0].seen[0]["body"]) == {"x": 1}
    assert answer.version == "v1" and answer.request_id == "rid-1"


async def test_dropped_connection_is_not_retried_unless_the_call_is_idempotent(servers):
    """The gateway got the POST and the connection dropped: it may have run, so it is not sent again; the same
    call marked idempotent is answered by the other endpoint."""
    servers[0].mode = "drop"
    async with AsyncClient([servers[0].url, servers[1].url], config=FAST) as client:
        with pytest.raises(Unavailable) as failed:
            await client.post("/app", json={})
        assert len(servers[0].seen) == 1 and not servers[1].seen
        assert failed.value.attempts[0][1] == SEND_FAILED
        servers[0].ready = False  # stays out: its probe fails
        answer = await client.post("/app", json={}, idempotent=True)
    assert answer.json() == {"server": "b"}


async def test_overloaded_answer_is_retried_and_a_model_error_is_not(servers):
    """503 overloaded (nothing ran) is retried for a POST and lands on the other endpoint; a 500 from the
    model is raised with the gateway's code, message and request id, sent once."""
    servers[0].mode = "overloaded"
    async with AsyncClient([servers[0].url, servers[1].url], config=FAST) as client:
        answer = await client.post("/app", json={})
        assert answer.json() == {"server": "b"}
        servers[0].mode, servers[1].mode = "model_error", "model_error"
        before = len(servers[0].seen) + len(servers[1].seen)
        with pytest.raises(ModelError) as failed:
            await client.post("/app", json={}, idempotent=True, request_id="r-500")
        assert len(servers[0].seen) + len(servers[1].seen) == before + 1
        assert (failed.value.status, failed.value.code, failed.value.request_id) == (500, "model_error", "r-500")
        with pytest.raises(NotFound) as missing:
            servers[0].mode = servers[1].mode = "ok"
            await client.get("/missing")
        assert missing.value.code == "route_not_found" and "no app serves" in missing.value.message


async def test_every_endpoint_overloaded_raises_overloaded_after_the_attempts(servers):
    for server in servers:
        server.mode = "overloaded"
    config = ClientConfig(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02, deadline_s=5)
    async with AsyncClient([s.url for s in servers], config=config) as client:
        with pytest.raises(Overloaded) as failed:
            await client.post("/app", json={})
    assert len(failed.value.attempts) == 3 and failed.value.retry_after == 0.0


async def test_slow_endpoint_times_out_and_idempotent_calls_fail_over(servers):
    servers[0].mode = "slow"
    config = ClientConfig(timeout_s=0.3, deadline_s=5.0, probe_interval_s=10)
    async with AsyncClient([servers[0].url, servers[1].url], config=config) as client:
        with pytest.raises(Timeout):
            await client.post("/app", json={})  # may have run: not sent again
        assert not servers[1].seen
        answer = await client.get("/app")  # GET is idempotent
    assert answer.json() == {"server": "b"} and answer.attempts[0][1] == TIMED_OUT


async def test_retry_budget_stops_retries_when_spent(servers):
    servers[0].mode = servers[1].mode = "overloaded"
    config = ClientConfig(budget_ratio=0.0, budget_min_per_s=0.0, max_attempts=4, backoff_max_s=0.01)
    async with AsyncClient([s.url for s in servers], config=config) as client:
        with pytest.raises(Overloaded) as failed:
            await client.post("/app", json={})
    assert len(failed.value.attempts) == 1


async def test_fails_over_when_the_preferred_endpoint_stops_and_fails_back_when_it_returns(servers):
    """Passive: a refused connection takes A out; active: once A answers /-/ready again, calls go back to A."""
    preferred, other = servers
    async with AsyncClient([preferred.url, other.url], config=FAST) as client:
        assert (await client.get("/x")).endpoint == preferred.url
        await preferred.stop()
        for _ in range(5):
            assert (await client.get("/x")).endpoint == other.url
        assert client.endpoints()[0]["healthy"] is False
        restarted = await Server("a2", port=preferred.port).start()
        servers[0] = restarted
        for _ in range(200):  # the probe brings A back within a few probe periods
            if client.endpoints()[0]["healthy"]:
                break
            await asyncio.sleep(0.05)
        assert (await client.get("/x")).json() == {"server": "a2"}


async def test_endpoints_follow_the_keeper_file(servers, tmp_path):
    """The endpoint order comes from a Keeper's JSON file and changes when the file does."""
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": [servers[0].url, servers[1].url]}))
    async with AsyncClient(keeper=str(path), config=FAST) as client:
        assert (await client.get("/x")).endpoint == servers[0].url
        path.write_text(json.dumps({"endpoints": [servers[1].url, servers[0].url]}))
        for _ in range(200):
            if client.endpoints()[0]["url"] == servers[1].url:
                break
            await asyncio.sleep(0.05)
        assert (await client.get("/x")).endpoint == servers[1].url


def test_blocking_client_shares_the_same_behaviour():
    """The blocking client runs the same code on a private loop: failover from a closed port works."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(Server("s").start())
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with Client([f"http://127.0.0.1:{_closed_port()}", server.url], config=FAST) as client:
            assert client.post("/a", json={"x": 1}).json() == {"server": "s"}
            assert client.endpoints()[0]["healthy"] is False
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


# -- against the real platform ------------------------------------------------------------------------
X = {"x": [float(i) for i in range(1, 17)]}


@pytest.mark.integration
def test_client_against_real_gateways(platform):
    """A dead endpoint first, then the platform: calls fail over, keep split keys sticky, pin versions, and
    errors come back as the gateway's JSON contract."""
    with Client([f"http://127.0.0.1:{_closed_port()}", platform.url], config=FAST) as client:
        answer = client.post("/linear", json=X, idempotent=True)
        assert set(answer.json()) == {"y"} and answer.endpoint == platform.url
        assert answer.replica.startswith("quickstart.linear.") and answer.version in ("v1", "v2")
        versions = {client.post("/linear", json=X, split_key="user-7").version for _ in range(10)}
        assert len(versions) == 1
        assert client.post("/linear", json=X, version="v2").version == "v2"
        with pytest.raises(NotFound) as missing:
            client.post("/nothing-here", json=X)
        assert missing.value.code == "route_not_found" and missing.value.request_id


@pytest.mark.integration
async def test_async_client_against_real_gateways(platform):
    async with AsyncClient([platform.url], config=FAST) as client:
        answers = await asyncio.gather(*(client.post("/linear", json=X, idempotent=True) for _ in range(50)))
    assert all("y" in a.json() for a in answers)
