"""Allocation scenarios and event pipelines on the live platform: a scenario's allocator answers at its route and
follows newly published prices; a pipeline's stages run as deployments fed by the gateways' consumers, and a stage
replica SIGKILLed mid-stream loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import orjson
import pytest
import ray
import redis
from aiohttp import ClientSession

from deploy.spec import parse_spec

pytestmark = pytest.mark.integration

SCENARIO = {"name": "coupons", "route_prefix": "/allocate/coupons", "horizon_s": 86400, "cycle_s": 10,
            "sample_rate": 0.2, "usage_types": ["spend", "count"],
            "constraints": [{"name": "total_spend", "capacity": 100000, "usage": "spend"},
                            {"name": "coupon_a_stock", "capacity": 5000, "usage": "count", "items": ["coupon_a"]}]}
PIPELINE = {"name": "buys", "sources": [{"name": "app", "http": True}],
            "stages": [{"name": "only_buys", "filter": "event.kind == 'buy' and event.amount > 0"},
                       {"name": "tag", "convert": {"user": "event.user", "amount": "event.amount * 2"}}],
            "sink": {"stream": "events:bought"}}


def wait_until(check, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout_s}s")


@pytest.fixture
def featured(platform, platform_redis_url):
    """The session platform with one scenario and one pipeline added (applied for each test, whatever ran
    before); the original spec restored afterwards."""
    doc = platform.spec.to_dict() | {"scenarios": [SCENARIO], "pipelines": [PIPELINE]}
    platform.platform.apply(parse_spec(doc))
    client = redis.Redis.from_url(platform_redis_url)
    try:
        yield platform, client
    finally:
        platform.platform.apply(platform.spec)
        client.close()


async def _post(session, url, doc, **headers):
    async with session.post(url, data=orjson.dumps(doc), headers={"Content-Type": "application/json", **headers}) as r:
        return r.status, await r.read()


def _request(user: str, value_a: float = 0.8, value_b: float = 0.3) -> dict:
    return {"user": user, "candidates": [
        {"item": "coupon_a", "value": value_a, "usage": {"spend": 3.0, "count": 1}},
        {"item": "coupon_b", "value": value_b, "usage": {"spend": 1.0}}]}


async def test_scenario_decides_at_its_route_and_follows_published_prices(featured):
    """POST /allocate/coupons answers the contract's JSON; bad input is a 400 naming the field; feedback is a 202;
    a newly published price on total_spend that makes every candidate unprofitable turns decisions to null."""
    from planner.store import DualPriceStore

    platform, client = featured
    async with ClientSession() as session:
        status, body = await _post(session, platform.url + "/allocate/coupons", _request("u1"))
        assert status == 200, body
        answer = orjson.loads(body)
        assert set(answer) == {"item", "score", "prices_version", "prices_age_s", "stale"}
        assert answer["item"] == "coupon_a"
        status, body = await _post(session, platform.url + "/allocate/coupons", {"user": "u1", "candidates": []})
        assert status == 400 and b"candidates" in body
        status, body = await _post(session, platform.url + "/allocate/coupons/feedback",
                                   {"user": "u1", "item": "coupon_a", "outcome": 1})
        assert status == 202, body
        certificate = {"dual_objective": 1.0, "primal_objective": 1.0, "max_violation": 0.0}
        published = DualPriceStore(client).publish("coupons", [10.0, 0.0], ["total_spend", "coupon_a_stock"],
                                                   certificate, computed_at=time.time())
        assert published.accepted, published

        async def decided_null() -> bool:
            status, body = await _post(session, platform.url + "/allocate/coupons", _request("u2"))
            answer = orjson.loads(body)
            return status == 200 and answer["item"] is None and answer["prices_version"] >= published.version

        deadline = time.monotonic() + 30
        while not await decided_null():
            assert time.monotonic() < deadline, "decisions never followed the published prices"
            await asyncio.sleep(0.2)
    status = ray.get(platform.platform.controller.status.remote(), timeout=30)
    assert [s["scenario"] for s in status["scenarios"]] == ["coupons"]
    scenario = status["scenarios"][0]  # what platform metrics render (contract 2)
    assert scenario["prices_version"] >= published.version and scenario["price_age_s"] >= 0
    assert scenario["stale"] is False


async def test_pipeline_stages_run_as_deployments_and_survive_a_stage_replica_kill(featured):
    """400 events through HTTP ingestion -> filter -> convert -> stream sink; the filter stage's replica is
    SIGKILLed mid-stream; every buy arrives in the sink exactly once and nothing else does."""
    platform, client = featured
    client.delete("events:bought")
    events = [{"user": f"u{i}", "kind": "buy" if i % 2 == 0 else "view", "amount": i % 7} for i in range(400)]
    expected = {e["user"] for e in events if e["kind"] == "buy" and e["amount"] > 0}
    status = ray.get(platform.platform.controller.status.remote(), timeout=30)
    app = next(a for a in status["apps"] if a["name"] == "events-buys")
    victim = next(r for d in app["deployments"] if d["name"] == "only_buys" for v in d["versions"]
                  for r in v["replicas"] if r["state"] == "RUNNING" and r["pid"] > 0)
    async with ClientSession() as session:
        for index, event in enumerate(events):
            if index == 150:
                os.kill(victim["pid"], signal.SIGKILL)
            status_code, body = await _post(session, platform.url + "/-/events/buys/app", event)
            assert status_code == 202, body

    def outputs():
        entries = client.xrange("events:bought")
        return [orjson.loads(fields[b"data"]) for _, fields in entries]

    def all_arrived():
        got = outputs()
        users = [o.get("data", o).get("user") for o in got]
        return users if len(set(users)) >= len(expected) else None

    users = wait_until(all_arrived, 120, "every buy in the sink")
    assert sorted(users) == sorted(expected), "each expected output exactly once, nothing else"
    amounts = {o.get("data", o)["user"]: o.get("data", o)["amount"] for o in outputs()}
    assert all(amounts[e["user"]] == 2 * e["amount"] for e in events if e["user"] in expected), "convert ran"
    status = ray.get(platform.platform.controller.status.remote(), timeout=30)
    assert [p["pipeline"] for p in status["pipelines"]] == ["buys"]


async def test_ten_thousand_events_on_the_platform_through_a_killed_stage_replica_and_consumer(platform,
                                                                                              platform_redis_url):
    """10,000 events (web stream + app HTTP source) through filter -> convert -> join -> stream sink, with the
    stages as deployments and the gateways as consumers: the filter stage's replica and then each gateway process
    (one of them is the join's leading consumer) are SIGKILLed mid-stream; every expected output arrives exactly
    once, nothing else does, and malformed events are dead letters with their reason."""
    import redis.asyncio as aioredis

    from tests.gateway.events.test_eventing import assert_exactly_expected, settle
    from tests.gateway.events.workload import dead_entries, orders_pipeline, produce, sink_entries

    namespace = "raygate"  # the platform's: its consumers use its key namespace
    pipeline = orders_pipeline(namespace, claim_idle_s=1.0)
    doc = pipeline.model_dump(mode="json")
    doc["name"] = "orders"
    doc["stages"][1] = {"name": "enrich", "convert": {"user": "event.user", "kind": "event.kind",
                                                     "amount": "event.amount", "cents": "event.amount * 100"},
                        "sources": ["web"]}
    spec = parse_spec(platform.spec.to_dict() | {"pipelines": [doc]})
    platform.platform.apply(spec)
    pipeline = spec.pipelines[0]
    client = aioredis.Redis.from_url(platform_redis_url)
    try:
        await client.delete(pipeline.sink.stream)
        status = ray.get(platform.platform.controller.status.remote(), timeout=30)
        app = next(a for a in status["apps"] if a["name"] == "events-orders")
        stage_pid = next(r["pid"] for d in app["deployments"] if d["name"] == "only_buys" for v in d["versions"]
                         for r in v["replicas"] if r["state"] == "RUNNING" and r["pid"] > 0)
        gateway_pids = [g["pid"] for g in status["gateways"] if g.get("pid", 0) > 0 and g["state"] == "serving"]
        assert len(gateway_pids) == 2
        work = await produce(client, pipeline, namespace)
        assert work.produced == 10_000
        # Here the convert stage is a field mapping over event.user, so a buy without a user is refused there,
        # before the join would refuse it for its missing key.
        work.dead = {k: ("enrich: missing field 'user'" if "join key" in v else v) for k, v in work.dead.items()}

        async def out_at_least(n: int) -> None:
            deadline = time.monotonic() + 120
            while await client.xlen(pipeline.sink.stream) < n:
                assert time.monotonic() < deadline, f"fewer than {n} outputs in 120 s"
                await asyncio.sleep(0.05)

        await out_at_least(len(work.outputs) // 5)
        os.kill(stage_pid, signal.SIGKILL)
        await out_at_least(2 * len(work.outputs) // 5)
        os.kill(gateway_pids[0], signal.SIGKILL)
        await out_at_least(3 * len(work.outputs) // 5)
        os.kill(gateway_pids[1], signal.SIGKILL)
        assert await client.xlen(pipeline.sink.stream) < len(work.outputs), "finished before the kills: proves nothing"
        assert await settle(client, pipeline, namespace, len(work.outputs), len(work.dead), timeout_s=180)
        assert_exactly_expected(await sink_entries(client, pipeline.sink.stream), work,
                                await dead_entries(client, pipeline, namespace))
    finally:
        platform.platform.apply(platform.spec)
        await client.aclose()
