"""Consumer failure paths on a real Redis: poison events, failing sinks, backpressure, HTTP ingestion, sinks to a
deployment and a webhook, status and metrics."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.events.eventing import ConsumerSettings, PipelineConsumer
from gateway.events.ingest import EventRejected, append_event
from gateway.events.metrics import EventMetrics
from gateway.events.spec import PipelineSpec
from gateway.events.status import pipeline_status
from tests.gateway.events.test_eventing import kill, wait_until

pytestmark = pytest.mark.integration


def simple_pipeline(namespace, stages, sink=None, **knobs) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": f"p-{namespace}", "sources": [{"name": "in", "http": True}], "stages": stages,
        "sink": sink or {"stream": f"{namespace}:out"}, **knobs})


class ScriptedStages:
    """A call function with per-stage behaviour, recording concurrency."""

    def __init__(self, behaviour):
        self.behaviour = behaviour  # deployment -> async fn(events) -> answer
        self.calls: list[tuple[str, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def call(self, app, deployment, payload):
        self.calls.append((deployment, len(payload["events"])))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self.behaviour[deployment](payload["events"])
        finally:
            self.in_flight -= 1


def run(consumer):
    return asyncio.create_task(consumer.run())


async def stop(consumer, task):
    consumer.stop()
    await asyncio.wait_for(task, 10)


def make_consumer(pipeline, client, namespace, call, **settings):
    base = ConsumerSettings.from_spec(pipeline, retry_backoff_s=0.001, **settings)
    return PipelineConsumer(pipeline, client, call, "c1", namespace=namespace, settings=base,
                            metrics=EventMetrics(CollectorRegistry()))


async def out_ids(client, stream):
    return [f[b"id"].decode() for _, f in await client.xrange(stream)]


async def test_poison_event_is_dead_lettered_with_its_error_and_the_rest_flow(events_redis, namespace):
    """A stage that fails whenever a batch holds the poison event: after retries the batch is split, the poison
    event alone lands in the dead-letter stream with the error, every other event reaches the sink."""
    async def picky(events):
        if any(e["data"].get("poison") for e in events):
            raise RuntimeError("cannot digest poison")
        return {"events": events}
    stages = ScriptedStages({"picky": picky})
    pipeline = simple_pipeline(namespace, [{"name": "picky", "custom": "x.y:Z"}], max_retries=2)
    ids = [await append_event(events_redis, pipeline, "in", orjson.dumps({"n": n, "poison": n == 7}), namespace)
           for n in range(20)]
    consumer = make_consumer(pipeline, events_redis, namespace, stages.call)
    task = run(consumer)
    assert await wait_until(lambda: _len(events_redis, f"{namespace}:out", 19), 10)
    await stop(consumer, task)
    assert sorted(await out_ids(events_redis, f"{namespace}:out")) == sorted(i for n, i in enumerate(ids) if n != 7)
    (dead,) = await events_redis.xrange(f"{namespace}:events:{pipeline.name}:dead")
    fields = {k.decode(): v.decode() for k, v in dead[1].items()}
    assert fields["id"] == ids[7] and fields["stage"] == "picky"
    assert "failed 3 times" in fields["reason"] and "cannot digest poison" in fields["reason"]
    status = await pipeline_status(events_redis, pipeline, namespace)
    assert status["dead_letters"] == 1 and status["pending"] == 0


async def _len(client, stream, n):
    return await client.xlen(stream) >= n


async def test_failing_sink_leaves_entries_pending_until_it_recovers(events_redis, namespace):
    """While the sink refuses, nothing is acknowledged; once it accepts, every event arrives exactly once."""
    healthy = asyncio.Event()

    class FlakySink:
        def __init__(self):
            self.seen: list[str] = []

        async def deliver(self, events):
            if not healthy.is_set():
                raise ConnectionError("sink down")
            self.seen += [e["id"] for e in events]
            return len(events)
    sink = FlakySink()
    pipeline = simple_pipeline(namespace, [], claim_idle_s=0.3)
    ids = [await append_event(events_redis, pipeline, "in", b'{"n": 1}', namespace) for _ in range(10)]
    base = ConsumerSettings.from_spec(pipeline, retry_backoff_s=0.01, sink_attempts=2, claim_every_s=0.1)
    consumer = PipelineConsumer(pipeline, events_redis, None, "c1", namespace=namespace, settings=base, sink=sink,
                                metrics=EventMetrics(CollectorRegistry()))
    task = run(consumer)

    async def all_pending():
        return (await pipeline_status(events_redis, pipeline, namespace))["pending"] == 10
    assert await wait_until(all_pending, 10)
    await asyncio.sleep(0.3)  # several sink attempts and reclaims later: still nothing delivered or acknowledged
    assert (await pipeline_status(events_redis, pipeline, namespace))["pending"] == 10 and sink.seen == []
    healthy.set()

    async def drained():
        return (await pipeline_status(events_redis, pipeline, namespace))["pending"] == 0
    assert await wait_until(drained, 10)
    await stop(consumer, task)
    assert sorted(set(sink.seen)) == sorted(ids)


async def test_slow_stage_bounds_in_flight_batches_and_lag_grows_instead(events_redis, namespace):
    """Backpressure: a slow stage never has more than max_in_flight batches, reads stop meanwhile (the group's
    lag grows), and nothing is lost."""
    gate = asyncio.Event()

    async def slow(events):
        await gate.wait()
        return {"events": events}
    stages = ScriptedStages({"slow": slow})
    pipeline = simple_pipeline(namespace, [{"name": "slow", "custom": "x.y:Z"}], batch_size=10, max_in_flight=2)
    for n in range(100):
        await append_event(events_redis, pipeline, "in", orjson.dumps({"n": n}), namespace)
    consumer = make_consumer(pipeline, events_redis, namespace, stages.call)
    task = run(consumer)

    async def two_batches_out():
        return (await pipeline_status(events_redis, pipeline, namespace))["pending"] == 20
    assert await wait_until(two_batches_out, 10)
    await asyncio.sleep(0.3)  # the consumer keeps looping meanwhile; it must not read more
    status = await pipeline_status(events_redis, pipeline, namespace)
    assert stages.max_in_flight == 2 and status["pending"] == 20 and status["lag"] == 80
    gate.set()
    assert await wait_until(lambda: _len(events_redis, f"{namespace}:out", 100), 10)
    await stop(consumer, task)
    assert stages.max_in_flight == 2
    assert len(set(await out_ids(events_redis, f"{namespace}:out"))) == 100


async def test_http_append_validates_body_size_and_source(events_redis, namespace):
    pipeline = PipelineSpec.model_validate({
        "name": "h", "sources": [{"name": "in", "http": True}, {"name": "s", "stream": f"{namespace}:s"}],
        "sink": {"stream": f"{namespace}:out"}, "max_body_bytes": 100})
    event_id = await append_event(events_redis, pipeline, "in", b'{"a": 1}', namespace)
    assert event_id.startswith("in:")
    (entry,) = await events_redis.xrange(f"{namespace}:events:h:src:in")
    assert entry[0].decode() == event_id[3:] and orjson.loads(entry[1][b"data"]) == {"a": 1}
    for body, source, status, code in [(b"{bad", "in", 400, "bad_json"), (b"[1]", "in", 400, "bad_event"),
                                       (b'{"a": "' + b"x" * 200 + b'"}', "in", 413, "too_large"),
                                       (b"{}", "nope", 404, "unknown_source"), (b"{}", "s", 404, "unknown_source")]:
        with pytest.raises(EventRejected) as info:
            await append_event(events_redis, pipeline, source, body, namespace)
        assert (info.value.status, info.value.code) == (status, code)


async def test_deployment_sink_gets_each_output_once(events_redis, namespace):
    """The deployment sink calls the target with the outputs not delivered before (replays filtered out)."""
    received: list[str] = []

    async def call(app, deployment, payload):
        if deployment == "target":
            assert app == "downstream"
            received.extend(e["id"] for e in payload["events"])
            return {"ok": True}
        return {"events": payload["events"]}
    pipeline = simple_pipeline(namespace, [{"name": "pass", "filter": "event.n >= 0"}],
                               sink={"deployment": "target", "app": "downstream"})
    ids = [await append_event(events_redis, pipeline, "in", orjson.dumps({"n": n}), namespace) for n in range(30)]
    consumer = make_consumer(pipeline, events_redis, namespace, call)
    again = await consumer.sink.deliver([{"id": ids[0], "data": {}}])  # as if a replay reached the sink first
    task = run(consumer)
    assert await wait_until(lambda: _true(len(received) >= 29), 10)
    await asyncio.sleep(0.3)
    await stop(consumer, task)
    assert again == 1 and sorted(received) == sorted(ids)


async def _true(value):
    return value


async def test_webhook_sink_posts_to_an_allowed_url_over_http(events_redis, namespace):
    """Outputs are POSTed as {"events": [...]} to a real loopback HTTP server on the allow list."""
    from aiohttp import ClientSession, web

    got: list[str] = []

    async def hook(request):
        got.extend(e["id"] for e in (await request.json())["events"])
        return web.json_response({"ok": True})
    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    async with ClientSession() as session:
        async def post(target, body):
            async with session.post(target, data=body, headers={"Content-Type": "application/json"}) as resp:
                return resp.status
        pipeline = simple_pipeline(namespace, [], sink={"webhook": url})
        ids = [await append_event(events_redis, pipeline, "in", b'{"x": 1}', namespace) for _ in range(5)]
        consumer = PipelineConsumer(pipeline, events_redis, None, "c1", namespace=namespace,
                                    webhook_allowlist=(f"http://127.0.0.1:{port}/",), post=post,
                                    metrics=EventMetrics(CollectorRegistry()))
        task = run(consumer)
        assert await wait_until(lambda: _true(len(got) >= 5), 10)
        await stop(consumer, task)
    await runner.cleanup()
    assert sorted(got) == sorted(ids)
    from gateway.events.sinks import SinkRejected
    with pytest.raises(SinkRejected, match="not on the allowed list"):
        PipelineConsumer(pipeline, events_redis, None, "c2", namespace=namespace,
                         webhook_allowlist=("https://elsewhere.example/",), post=post,
                         metrics=EventMetrics(CollectorRegistry()))


async def test_status_reports_lag_rates_and_sets_gauges(events_redis, namespace):
    pipeline = simple_pipeline(namespace, [])
    for _ in range(7):
        await append_event(events_redis, pipeline, "in", b"{}", namespace)
    metrics = EventMetrics(CollectorRegistry())
    consumer = PipelineConsumer(pipeline, events_redis, None, "c1", namespace=namespace, metrics=metrics)
    await consumer.start()
    status = await pipeline_status(events_redis, pipeline, namespace, metrics=metrics)
    assert status["lag"] == 7 and status["pending"] == 0 and status["sources"]["in"]["consumers"] == 0
    assert metrics.lag.labels(pipeline.name, "in")._value.get() == 7
    task = run(consumer)
    assert await wait_until(lambda: _len(events_redis, f"{namespace}:out", 7), 10)
    await stop(consumer, task)
    status = await pipeline_status(events_redis, pipeline, namespace, metrics=metrics)
    assert status["lag"] == 0 and status["totals"]["read"] == 7 and status["totals"]["emitted"] == 7
    assert status["rates"]["read_per_s"] >= 0
    assert metrics.read.labels(pipeline.name)._value.get() == 7


async def test_http_stream_is_trimmed_after_acknowledgement_and_lag_stays_known(events_redis, namespace):
    """Memory: acknowledged entries of an HTTP source stream are dropped; lag is still reported."""
    pipeline = simple_pipeline(namespace, [])
    for _ in range(50):
        await append_event(events_redis, pipeline, "in", b"{}", namespace)
    consumer = make_consumer(pipeline, events_redis, namespace, None, trim_every_s=0.05)
    task = run(consumer)
    assert await wait_until(lambda: _len(events_redis, f"{namespace}:out", 50), 10)
    stream = f"{namespace}:events:{pipeline.name}:src:in"

    async def trimmed():
        return await events_redis.xlen(stream) == 0
    assert await wait_until(trimmed, 5)
    await append_event(events_redis, pipeline, "in", b"{}", namespace)
    assert await wait_until(lambda: _len(events_redis, f"{namespace}:out", 51), 5)
    await stop(consumer, task)
    status = await pipeline_status(events_redis, pipeline, namespace)
    assert status["sources"]["in"]["lag"] == 0 and status["pending"] == 0


async def test_full_backlog_answers_503(events_redis, namespace):
    pipeline = simple_pipeline(namespace, [], max_backlog=3)
    for _ in range(3):
        await append_event(events_redis, pipeline, "in", b"{}", namespace)
    with pytest.raises(EventRejected) as info:
        await append_event(events_redis, pipeline, "in", b"{}", namespace)
    assert (info.value.status, info.value.code) == (503, "backlog_full")


async def test_stream_sink_dedupes_and_caps_its_length(events_redis, namespace):
    """The sink script appends each id once, and keeps about maxlen entries."""
    from gateway.events.store import EventKeys, StreamSinkStore

    store = StreamSinkStore(events_redis, f"{namespace}:capped", EventKeys("p", namespace), ttl_s=60, maxlen=100)
    batch = [{"id": f"in:{i}-0", "data": {"i": i}} for i in range(1000)]
    assert await store.append_new(batch) == 1000
    assert await store.append_new(batch[:10] + [{"id": "in:new-0", "data": {}}]) == 1
    assert 100 <= await events_redis.xlen(f"{namespace}:capped") < 300
    assert await events_redis.ttl(f"{namespace}:events:p:seen:in:5-0") > 0


async def test_one_leader_runs_a_join_pipeline_and_a_standby_takes_over(events_redis, namespace):
    """With a join, only the lease holder reads; when it stops renewing (cancelled), a standby takes the lease
    after lease_ttl_s and claims everything pending at once."""
    await asyncio.wait_for(_leader_and_standby(events_redis, namespace), 30)


async def _leader_and_standby(events_redis, namespace):
    from gateway.events.local import LocalStages
    from tests.gateway.events.workload import orders_pipeline

    pipeline = orders_pipeline(namespace)
    consumers = [PipelineConsumer(pipeline, events_redis, LocalStages.for_pipeline(pipeline).call, name,
                                  namespace=namespace, metrics=EventMetrics(CollectorRegistry()),
                                  settings=ConsumerSettings.from_spec(pipeline, lease_ttl_s=0.6))
                 for name in ("a", "b")]
    tasks = [run(c) for c in consumers]
    try:
        assert await wait_until(lambda: _true(any(c.leading for c in consumers)), 5)
        await asyncio.sleep(0.3)
        assert sum(c.leading for c in consumers) == 1
        leader, standby = (consumers if consumers[0].leading else consumers[::-1])
        await events_redis.xadd(f"{namespace}:in:web", {"data": b'{"kind": "buy", "amount": 2, "user": "u1"}'})
        assert await wait_until(lambda: _true(leader.batches_done > 0), 5)
        assert standby.batches_done == 0
        await kill(tasks[consumers.index(leader)])
        assert not standby.leading
        assert await wait_until(lambda: _true(standby.leading), 3)
        assert await wait_until(lambda: _true(standby.metrics.reclaimed.labels(pipeline.name)._value.get() >= 1), 3)
    finally:
        for task in tasks:
            await kill(task)
