"""`pipeline_status()`: lag, rates, pending and dead-letter counts of one pipeline, read from Redis, and the same
figures set on the Prometheus gauges. Reads only; any consumer process (or `raygate status`) may call it."""

from __future__ import annotations

from gateway.events.eventing import source_streams
from gateway.events.metrics import EventMetrics
from gateway.events.spec import PipelineSpec
from gateway.events.store import (
    DeadLetterStore,
    EventKeys,
    PipelineCounts,
    SourceStreams,
)

__all__ = ["pipeline_status"]


def _int(value) -> int | None:
    return None if value is None else int(value)


async def pipeline_status(client, pipeline: PipelineSpec, namespace: str = "raygate", redis_url: str | None = None,
                          metrics: EventMetrics | None = None, rate_window_s: int = 10) -> dict:
    """{"pipeline", "redis_url", "sources": {name: {stream, lag, pending, consumers}}, "lag", "pending",
    "dead_letters", "totals": {read, emitted, dead}, "rates": {read_per_s, ...}}."""
    keys = EventKeys(pipeline.name, namespace)
    streams = SourceStreams(client, keys.group)
    sources = {}
    for stream, name in source_streams(pipeline, keys).items():
        info = await streams.group_info(stream)
        sources[name] = {"stream": stream,
                         "lag": _int(info.get("lag")) if info else None,  # None: Redis cannot tell (or no group)
                         "pending": _int(info.get("pending")) if info else 0,
                         "consumers": _int(info.get("consumers")) if info else 0}
    dead = await DeadLetterStore(client, keys).count()
    counts = PipelineCounts(client, keys)
    status = {
        "pipeline": pipeline.name,
        "redis_url": redis_url,
        "sources": sources,
        "lag": sum(s["lag"] or 0 for s in sources.values()),
        "pending": sum(s["pending"] or 0 for s in sources.values()),
        "dead_letters": dead,
        "dead_letter_stream": keys.dead,
        "totals": await counts.totals(),
        "rates": await counts.rates(rate_window_s),
    }
    if metrics is not None:
        for name, s in sources.items():
            metrics.lag.labels(pipeline.name, name).set(s["lag"] or 0)
            metrics.pending.labels(pipeline.name, name).set(s["pending"] or 0)
        metrics.dead_letters.labels(pipeline.name).set(dead)
    return status
