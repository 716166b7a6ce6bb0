"""The consumer on a real Redis: 10,000 events through filter -> convert -> join -> sink with the consumer killed
mid-stream, every expected output exactly once and nothing else; dead letters with reasons."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.events.eventing import PipelineConsumer
from gateway.events.local import LocalStages
from gateway.events.metrics import EventMetrics
from gateway.events.status import pipeline_status
from tests.gateway.events.workload import (
    dead_entries,
    orders_pipeline,
    produce,
    sink_entries,
)

pytestmark = pytest.mark.integration


def consumer(pipeline, client, namespace, name, stages=None, **kwargs):
    stages = stages or LocalStages.for_pipeline(pipeline)
    return PipelineConsumer(pipeline, client, stages.call, name, namespace=namespace,
                            metrics=EventMetrics(CollectorRegistry()), **kwargs)


async def kill(task: asyncio.Task) -> None:
    """Cancel abruptly, as a crash would, and wait for the task to end. Cancels again if one is lost: on Python
    3.11 a cancel that races redis-py's own read timeout can be swallowed (asyncio.timeout, fixed in 3.12)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)


async def wait_until(predicate, timeout_s: float, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(every_s)
    return False


async def settle(client, pipeline, namespace, expected_outputs: int, expected_dead: int, timeout_s: float = 60):
    """Wait for the expected counts and an empty pending list, then a little longer for late duplicates."""
    async def done():
        status = await pipeline_status(client, pipeline, namespace)
        return (await client.xlen(pipeline.sink.stream) >= expected_outputs
                and status["dead_letters"] >= expected_dead and status["pending"] == 0 and status["lag"] == 0)
    if not await wait_until(done, timeout_s):
        status = await pipeline_status(client, pipeline, namespace)
        raise AssertionError(f"not settled: sink {await client.xlen(pipeline.sink.stream)}/{expected_outputs}, "
                             f"dead {status['dead_letters']}/{expected_dead}, pending {status['pending']}, "
                             f"lag {status['lag']}")
    await asyncio.sleep(1.5)  # any replay still coming would add entries now
    return True


def assert_exactly_expected(outputs, work, dead):
    ids = [i for i, _ in outputs]
    duplicates = len(ids) - len(set(ids))
    assert duplicates == 0, f"{duplicates} duplicate outputs"
    missing = work.outputs - set(ids)
    unexpected = set(ids) - work.outputs
    assert not missing, f"{len(missing)} outputs lost, e.g. {sorted(missing)[:3]}"
    assert not unexpected, f"{len(unexpected)} unexpected outputs, e.g. {sorted(unexpected)[:3]}"
    got_dead = {d["id"]: d["reason"] for d in dead}
    for event_id, reason in work.dead.items():
        assert event_id in got_dead, f"dead letter for {event_id} missing"
        assert reason in got_dead[event_id]


async def test_ten_thousand_events_exactly_once_through_a_sigkilled_consumer(events_redis, events_redis_url,
                                                                             namespace):
    """A consumer process (stages and join window in it) is SIGKILLed mid-stream; a new consumer reclaims its
    pending entries with XAUTOCLAIM, and every expected output is in the sink exactly once, nothing else."""
    pipeline = orders_pipeline(namespace)
    work = await produce(events_redis, pipeline, namespace)
    assert work.produced == 10_000
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "tests.gateway.events._consumer_proc", events_redis_url,
                             namespace, "doomed"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    proc.stdin.write(orjson.dumps(pipeline.model_dump(mode="json")))
    proc.stdin.close()
    try:
        assert proc.stdout.readline().strip() == b"ready"

        async def some_out():
            return await events_redis.xlen(pipeline.sink.stream) >= len(work.outputs) // 4
        assert await wait_until(some_out, 60, every_s=0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    sink_at_kill = await events_redis.xlen(pipeline.sink.stream)
    pending_at_kill = (await events_redis.xpending(pipeline.sources[0].stream, f"{namespace}:{pipeline.name}"))
    assert sink_at_kill < len(work.outputs), "the consumer finished before it was killed; the test proves nothing"

    survivor = consumer(pipeline, events_redis, namespace, "survivor")
    task = asyncio.create_task(survivor.run())
    try:
        assert await settle(events_redis, pipeline, namespace, len(work.outputs), len(work.dead))
    finally:
        survivor.stop()
        await asyncio.wait_for(task, 10)
    outputs = await sink_entries(events_redis, pipeline.sink.stream)
    assert_exactly_expected(outputs, work, await dead_entries(events_redis, pipeline, namespace))
    if pending_at_kill["pending"]:
        assert survivor.metrics.reclaimed.labels(pipeline.name)._value.get() > 0
    pair = next(data for i, data in outputs if "+" in i)
    assert pair["web"]["cents"] == pair["web"]["amount"] * 100 and pair["app"]["user"] == pair["user"]


async def test_cancelled_consumer_task_and_replays_deliver_exactly_once(events_redis, namespace):
    """A consumer task cancelled mid-batch (sink written, acknowledgements not) and a second consumer sharing
    the group: the outputs are still exactly the expected set."""
    pipeline = orders_pipeline(namespace, batch_size=16)
    work = await produce(events_redis, pipeline, namespace, web_events=1500)
    first = consumer(pipeline, events_redis, namespace, "first")
    task = asyncio.create_task(first.run())

    async def some_out():
        return await events_redis.xlen(pipeline.sink.stream) >= len(work.outputs) // 3
    assert await wait_until(some_out, 30, every_s=0.005)
    await kill(task)
    assert await events_redis.xlen(pipeline.sink.stream) < len(work.outputs)
    second, third = (consumer(pipeline, events_redis, namespace, n) for n in ("second", "third"))
    tasks = [asyncio.create_task(c.run()) for c in (second, third)]
    try:
        assert await settle(events_redis, pipeline, namespace, len(work.outputs), len(work.dead))
    finally:
        for c in (second, third):
            c.stop()
        await asyncio.gather(*tasks)
    assert_exactly_expected(await sink_entries(events_redis, pipeline.sink.stream), work,
                            await dead_entries(events_redis, pipeline, namespace))
    status = await pipeline_status(events_redis, pipeline, namespace, redis_url="redis://x")
    assert status["dead_letters"] == len(work.dead) and status["pending"] == 0 and status["lag"] == 0
    # counters are written after the acknowledgement, so a batch cut off by the cancel may be missing from them
    assert len(work.outputs) - 4 * pipeline.batch_size <= status["totals"]["emitted"] <= len(work.outputs)
    assert status["redis_url"] == "redis://x" and set(status["sources"]) == {"web", "app"}
