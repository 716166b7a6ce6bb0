"""HTTP sources: what the gateway's `POST /-/events/<pipeline>/<source>` does with a body."""

from __future__ import annotations

import orjson

from gateway.events.spec import PipelineSpec
from gateway.events.store import EventKeys, SourceStreams

__all__ = ["EventRejected", "append_event"]


class EventRejected(ValueError):
    """The event was refused; `status` and `code` are the HTTP answer (404 unknown source, 413, 400, 503 when the
    backlog is full: answer with Retry-After)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def append_event(client, pipeline: PipelineSpec, source: str, body: bytes,
                       namespace: str = "raygate") -> str:
    """Validate `body` (a JSON object, at most `pipeline.max_body_bytes`) and append it to the HTTP source's
    stream; return the event id ("<source>:<entry id>"), the id the event carries through the pipeline."""
    spec = pipeline.source(source)
    if spec is None or not spec.http:
        raise EventRejected(404, "unknown_source", f"pipeline {pipeline.name!r} has no HTTP source {source!r}")
    if len(body) > pipeline.max_body_bytes:
        raise EventRejected(413, "too_large", f"event larger than {pipeline.max_body_bytes} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventRejected(400, "bad_json", f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventRejected(400, "bad_event", f"an event must be a JSON object, got {type(data).__name__}")
    keys = EventKeys(pipeline.name, namespace)
    streams = SourceStreams(client, keys.group)
    if await streams.backlog(keys.http_source(source)) >= pipeline.max_backlog:
        raise EventRejected(503, "backlog_full", f"pipeline {pipeline.name!r} has {pipeline.max_backlog} events "
                            "waiting; retry later")
    entry_id = await streams.append(keys.http_source(source), orjson.dumps(data))
    return f"{source}:{entry_id}"
