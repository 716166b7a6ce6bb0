"""Eventing: the consumer that reads a pipeline's source streams and runs its stages, at least once.

One `PipelineConsumer` per process (or per gateway actor) and pipeline; several may run side by side under
different consumer names, sharing the work through the Redis consumer group.

    read    XREADGROUP (`batch_size` per stream, a short BLOCK) while fewer than `max_in_flight` batches are out;
            every `claim_every_s`, XAUTOCLAIM entries pending longer than `claim_idle_s` on any consumer first,
            claiming back to back until none is left
    decode  JSON `data` field -> event {"id": "<source>:<entry id>", "source", "ts": entry time, "data"};
            an entry that is not a JSON object goes to the dead-letter stream ("not JSON")
    stages  each stage through the injected `call(app, deployment, payload) -> dict` in order; a failing call is
            retried `max_retries` times, then the batch is split and each event tried alone; an event failing
            every try is dead-lettered with the error
    sink    deduplicated by output id; retried; on failure the batch stays unacknowledged (reclaimed later)
    commit  one MULTI: the dead letters, XACK of every entry of the batch except those a stateful stage (join)
            still holds plus the entries a stage reports released, and the counters

The guarantee: an entry is acknowledged only after the sink accepted everything derived from it, so any crash
replays it; replays produce the same output ids and the sink drops the repeats (effectively once at the sink).
Memory is bounded by `max_in_flight * batch_size` entries per source plus the join's `max_pending` groups.

A pipeline with a join is run by one consumer at a time (a lease in Redis; the others stand by), because the join
needs to know how far every source has been read: the consumer passes each join call a watermark, per source the
event time up to which all entries were read and already handed to the join (a caught-up source counts as read up
to `now - idle_watermark_lag_s`). A standby that takes the lease claims every pending entry at once, before
reading new ones, so replayed partners meet in the join.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import Awaitable, Callable

import orjson
import structlog

from gateway.events.metrics import EventMetrics, default_metrics
from gateway.events.sinks import CallFn, PostFn, Sink, build_sink
from gateway.events.spec import JoinStage, PipelineSpec
from gateway.events.stages import pipeline_app_name
from gateway.events.store import (
    ConsumerLease,
    DeadLetterStore,
    EventKeys,
    PipelineCounts,
    SourceStreams,
)

__all__ = ["PipelineConsumer", "ConsumerSettings", "CallFn", "source_streams", "consumer_name"]

log = structlog.get_logger("raygate.events")


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = 64  # entries per stream per read
    max_in_flight: int = 4  # batches in the stages at once: the backpressure bound
    block_ms: int = 5  # XREADGROUP BLOCK; short, so a lone event leaves at once
    claim_idle_s: float = 30.0  # entries pending this long on any consumer are reclaimed
    claim_every_s: float = 1.0  # how often XAUTOCLAIM runs
    max_retries: int = 3  # retries of a failing stage call before splitting the batch / dead-lettering
    retry_backoff_s: float = 0.05  # first backoff; doubles per retry
    sink_attempts: int = 5  # sink tries before the batch is left for reclaiming
    idle_tick_s: float = 0.5  # with a join, an empty batch this often while idle, so windows expire
    error_pause_s: float = 0.5  # pause after a failed read (Redis down), so the loop never spins
    lease_ttl_s: float = 3.0  # stateful pipelines: a dead leader's lease lapses after this; a standby takes over
    idle_watermark_lag_s: float = 1.0  # a caught-up source counts as read up to now minus this (producer skew)
    trim_every_s: float = 10.0  # how often HTTP source streams drop entries every consumer has acknowledged

    @classmethod
    def from_spec(cls, spec: PipelineSpec, **overrides) -> "ConsumerSettings":
        return replace(cls(batch_size=spec.batch_size, max_in_flight=spec.max_in_flight, block_ms=spec.block_ms,
                           claim_idle_s=spec.claim_idle_s, max_retries=spec.max_retries), **overrides)


def consumer_name() -> str:
    """A consumer name unique to this process and start."""
    return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def source_streams(pipeline: PipelineSpec, keys: EventKeys) -> dict[str, str]:
    """stream key -> source name, for every source of the pipeline."""
    return {(s.stream or keys.http_source(s.name)): s.name for s in pipeline.sources}


class _StageFailed(Exception):
    pass


class PipelineConsumer:
    """Runs one pipeline: `await consumer.run()` until `stop()`; cancel the task to die abruptly."""

    def __init__(self, pipeline: PipelineSpec, client, call: CallFn, name: str | None = None, *,
                 namespace: str = "raygate", settings: ConsumerSettings | None = None, sink: Sink | None = None,
                 webhook_allowlist: tuple[str, ...] = (), post: PostFn | None = None,
                 metrics: EventMetrics | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable] = asyncio.sleep) -> None:
        self.pipeline = pipeline
        self.call = call
        self.name = name or consumer_name()
        self.settings = settings or ConsumerSettings.from_spec(pipeline)
        self.keys = EventKeys(pipeline.name, namespace)
        self.app = pipeline_app_name(pipeline.name)
        self.streams = SourceStreams(client, self.keys.group)
        self.dead_letters = DeadLetterStore(client, self.keys)
        self.counts = PipelineCounts(client, self.keys)
        self.sink = sink or build_sink(pipeline.sink, client, self.keys, call, self.app, webhook_allowlist, post)
        self.metrics = metrics or default_metrics()
        self.clock = clock
        self.sleep = sleep
        self.stream_sources = source_streams(pipeline, self.keys)
        self.source_stream = {v: k for k, v in self.stream_sources.items()}
        self.stateful = any(isinstance(s, JoinStage) for s in pipeline.stages)
        self.lease = ConsumerLease(client, self.keys, self.name, self.settings.lease_ttl_s)
        self.leading = not self.stateful  # stateless pipelines: every consumer works
        self._takeover = False  # just became leader: claim everything pending before reading new entries
        self._watermark = {s.name: 0.0 for s in pipeline.sources}  # event time read up to, per source
        self._before: dict[int, dict[str, float]] = {}  # batch seq -> watermark before it was read (not yet joined)
        self._seq = 0
        self._pending_watermark = dict(self._watermark)  # the watermark before the last read
        self._slots = asyncio.Semaphore(self.settings.max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self._claim_cursor = {stream: "0-0" for stream in self.stream_sources}
        self._claim_passed: set[str] = set()  # streams whose claim cursor went round in this pass
        self._next_claim = 0.0
        self._last_activity = 0.0
        self._next_trim = 0.0
        self.batches_done = 0  # batches fully acknowledged (for tests and status)

    async def start(self) -> None:
        """Create the consumer groups; retried until Redis answers (the loop must not die at birth)."""
        while True:
            try:
                for stream in self.stream_sources:
                    await self.streams.ensure_group(stream)
                return
            except Exception as exc:  # noqa: BLE001 - Redis away: say so and retry
                log.warning("pipeline_start_failed", pipeline=self.pipeline.name, error=repr(exc))
                await self.sleep(self.settings.error_pause_s)

    def stop(self) -> None:
        """Finish the batches in flight and return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        await self.start()
        log.info("pipeline_consumer_started", pipeline=self.pipeline.name, consumer=self.name)
        keeper = None
        if self.stateful:
            await self._renew_lease()
            keeper = asyncio.get_running_loop().create_task(self._keep_lease())
        try:
            while not self._stopping.is_set():
                if not self.leading:
                    await self.sleep(min(0.1, self.settings.lease_ttl_s / 6))
                    continue
                await self._trim_if_due()
                await self._slots.acquire()
                try:
                    entries = await self._next_entries()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: say so, wait, go on
                    self._slots.release()
                    log.warning("pipeline_read_failed", pipeline=self.pipeline.name, error=repr(exc))
                    await self.sleep(self.settings.error_pause_s)
                    continue
                now = self.clock()
                if not entries and not (self.stateful and now - self._last_activity >= self.settings.idle_tick_s):
                    self._slots.release()
                    continue
                self._last_activity = now
                self._seq += 1
                self._before[self._seq] = self._pending_watermark
                task = asyncio.get_running_loop().create_task(self._process(entries, self._seq))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.stateful and self.leading:
                await self.lease.release()
        finally:
            for task in [*self._tasks, *([keeper] if keeper else [])]:
                task.cancel()
            log.info("pipeline_consumer_stopped", pipeline=self.pipeline.name, consumer=self.name)

    async def _keep_lease(self) -> None:
        """Stateful pipelines: renew (or try to take) the lease every lease_ttl_s / 3, apart from the read loop,
        so a stage that is slow to answer never costs the lease."""
        while True:
            await self.sleep(self.settings.lease_ttl_s / 3)
            await self._renew_lease()

    async def _renew_lease(self) -> None:
        try:
            leading = await self.lease.hold()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - cannot renew: stop reading, a standby may take over
            log.warning("pipeline_lease_failed", pipeline=self.pipeline.name, error=repr(exc))
            leading = False
        if leading and not self.leading:
            log.info("pipeline_leader_acquired", pipeline=self.pipeline.name, consumer=self.name)
            self._takeover, self._next_claim = True, 0.0
            self._claim_cursor = dict.fromkeys(self._claim_cursor, "0-0")
            self._claim_passed = set()
        elif self.leading and not leading:
            log.warning("pipeline_leader_lost", pipeline=self.pipeline.name, consumer=self.name)
        self.leading = leading

    async def _trim_if_due(self) -> None:
        """Drop acknowledged entries of the HTTP source streams (ours alone), so they never grow without bound."""
        now = self.clock()
        if now < self._next_trim:
            return
        self._next_trim = now + self.settings.trim_every_s
        for source in self.pipeline.sources:
            if source.http:
                try:
                    await self.streams.trim_acknowledged(self.source_stream[source.name])
                except Exception as exc:  # noqa: BLE001 - trimming is housekeeping; try again later
                    log.warning("pipeline_trim_failed", pipeline=self.pipeline.name, error=repr(exc))

    async def _next_entries(self) -> list[tuple[str, str, dict | None]]:
        """Reclaimed entries while any are due (back to back), else new ones; keeps the read watermark."""
        self._pending_watermark = dict(self._watermark)
        now = self.clock()
        if now >= self._next_claim:
            min_idle_ms = 0 if self._takeover else int(self.settings.claim_idle_s * 1000)
            claimed = []
            for stream in self.stream_sources:
                if stream not in self._claim_passed:
                    claimed += await self._claim(stream, min_idle_ms)
                    if self._claim_cursor[stream] == "0-0":
                        self._claim_passed.add(stream)
            if len(self._claim_passed) == len(self.stream_sources):  # one full pass over every stream: rest
                self._claim_passed.clear()
                self._takeover = False
                self._next_claim = now + self.settings.claim_every_s
            if claimed:
                self.metrics.reclaimed.labels(self.pipeline.name).inc(len(claimed))
                log.info("pipeline_entries_reclaimed", pipeline=self.pipeline.name, count=len(claimed))
                return claimed  # until the pass is over, claim again next time, before reading new entries
        entries = await self.streams.read(self.name, list(self.stream_sources), self.settings.batch_size,
                                          self.settings.block_ms)
        self._advance_watermark(entries)
        return entries

    def _advance_watermark(self, entries) -> None:
        caught_up = time.time() - self.settings.idle_watermark_lag_s
        newest = dict.fromkeys(self._watermark, caught_up)  # a source with nothing new is read up to now
        for stream, entry_id, _ in entries:
            source = self.stream_sources[stream]
            ts = int(entry_id.split("-", 1)[0]) / 1000.0
            newest[source] = ts if newest[source] == caught_up else max(newest[source], ts)
        for source, ts in newest.items():
            self._watermark[source] = max(self._watermark[source], ts)

    def _join_watermark(self, seq: int) -> dict[str, float]:
        """Safe for batch `seq`: the watermark before the oldest other batch that has not reached the join yet."""
        others = [k for k in self._before if k != seq]
        return dict(self._before[min(others)]) if others else dict(self._watermark)

    async def _claim(self, stream: str, min_idle_ms: int) -> list:
        cursor, entries = await self.streams.claim_idle(self.name, stream, min_idle_ms, self.settings.batch_size,
                                                        self._claim_cursor[stream])
        self._claim_cursor[stream] = cursor
        return entries

    # -- one batch -----------------------------------------------------------------------------------------

    def _decode(self, entries) -> tuple[list[dict], list[dict]]:
        events, dead = [], []
        for stream, entry_id, fields in entries:
            source = self.stream_sources[stream]
            event_id = f"{source}:{entry_id}"
            ts = int(entry_id.split("-", 1)[0]) / 1000.0
            if fields is None:
                continue  # deleted from the stream while pending: nothing to process, just acknowledge
            raw = fields.get(b"data", fields.get("data"))
            if raw is None:
                data = {(k.decode() if isinstance(k, bytes) else k): (v.decode("utf-8", "replace")
                        if isinstance(v, bytes) else v) for k, v in fields.items()}
            else:
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    dead.append({"id": event_id, "source": source, "stage": "decode",
                                 "reason": f"not JSON: {exc}", "data": bytes(raw).decode("utf-8", "replace")})
                    continue
                if not isinstance(data, dict):
                    dead.append({"id": event_id, "source": source, "stage": "decode",
                                 "reason": f"not a JSON object: {type(data).__name__}", "data": data})
                    continue
            events.append({"id": event_id, "source": source, "ts": ts, "data": data})
        return events, dead

    async def _process(self, entries, seq: int) -> None:
        started = time.perf_counter()
        self.metrics.in_flight.labels(self.pipeline.name).inc()
        try:
            events, dead = self._decode(entries)
            outputs, stage_dead, held, released = await self._run_stages(events, seq)
            dead += stage_dead
            new = await self._deliver(outputs)
            acks: dict[str, list[str]] = {}
            for stream, entry_id, _ in entries:
                if f"{self.stream_sources[stream]}:{entry_id}" not in held:
                    acks.setdefault(stream, []).append(entry_id)
            for event_id in released:
                source, _, entry_id = event_id.partition(":")
                if source in self.source_stream:
                    acks.setdefault(self.source_stream[source], []).append(entry_id)
            # dead letters, acknowledgements and counters in one MULTI: one round trip, all or nothing
            async with self.streams.client.pipeline(transaction=True) as pipe:
                self.dead_letters.queue(pipe, dead)
                self.streams.queue_ack(pipe, acks)
                self.counts.queue(pipe, {"read": len(entries), "emitted": new, "dead": len(dead)})
                await pipe.execute()
            self._observe(entries, new, len(outputs) - new, dead, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the batch stays pending and is reclaimed after claim_idle_s
            log.warning("pipeline_batch_failed", pipeline=self.pipeline.name, entries=len(entries), error=repr(exc))
        finally:
            self._before.pop(seq, None)
            self.metrics.in_flight.labels(self.pipeline.name).dec()
            self._slots.release()

    def _observe(self, entries, new: int, repeats: int, dead: list[dict], started: float) -> None:
        name = self.pipeline.name
        self.metrics.read.labels(name).inc(len(entries))
        self.metrics.emitted.labels(name).inc(new)
        self.metrics.duplicates.labels(name).inc(max(0, repeats))
        for d in dead:
            self.metrics.dead.labels(name, d.get("stage") or "").inc()
        self.metrics.batch_latency.labels(name).observe(time.perf_counter() - started)
        self.batches_done += 1

    async def _run_stages(self, events: list[dict], seq: int):
        dead: list[dict] = []
        held: set[str] = set()
        released: list[str] = []
        for stage in self.pipeline.stages:
            is_join = isinstance(stage, JoinStage)
            if not events and not is_join:
                continue
            try:
                answer = await self._call_stage(stage.name, events,
                                                self._join_watermark(seq) if is_join else None)
            finally:
                if is_join:
                    self._before.pop(seq, None)  # this batch has reached the join: later watermarks may pass it
            events = answer.get("events", [])
            dead += answer.get("dead", [])
            held.update(answer.get("held", ()))
            released += answer.get("released", ())
        held.difference_update(released)
        return events, dead, held, released

    async def _call_stage(self, stage: str, events: list[dict], watermark: dict | None) -> dict:
        try:
            return await self._call_with_retries(stage, events, watermark)
        except _StageFailed as failure:
            if len(events) <= 1:
                return {"events": [], "dead": [{"id": e.get("id"), "source": e.get("source"), "stage": stage,
                                                 "reason": str(failure), "data": e.get("data")} for e in events]}
        merged: dict = {"events": [], "dead": [], "held": [], "released": []}
        for event in events:  # a poison event: find it by trying each event alone
            answer = await self._call_stage(stage, [event], watermark)
            for key in merged:
                merged[key] += answer.get(key, [])
        return merged

    async def _call_with_retries(self, stage: str, events: list[dict], watermark: dict | None) -> dict:
        payload = {"events": events} if watermark is None else {"events": events, "watermark": watermark}
        error: BaseException | None = None
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                await self.sleep(self.settings.retry_backoff_s * 2 ** (attempt - 1))
            try:
                answer = await self.call(self.app, stage, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
                self.metrics.stage_failures.labels(self.pipeline.name, stage).inc()
                continue
            if isinstance(answer, dict) and isinstance(answer.get("events", []), list):
                return answer
            error = ValueError(f"stage answered {type(answer).__name__}, not a batch")
        raise _StageFailed(f"stage {stage} failed {self.settings.max_retries + 1} times: "
                           f"{type(error).__name__}: {error}"[:2000])

    async def _deliver(self, outputs: list[dict]) -> int:
        for attempt in range(self.settings.sink_attempts):
            try:
                return await self.sink.deliver(outputs) if outputs else 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pipeline_sink_failed", pipeline=self.pipeline.name, attempt=attempt + 1,
                            error=repr(exc))
                if attempt + 1 == self.settings.sink_attempts:
                    raise
                await self.sleep(self.settings.retry_backoff_s * 2 ** attempt)
        return 0
