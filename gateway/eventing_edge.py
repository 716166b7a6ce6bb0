"""Event pipelines at the gateway: HTTP ingestion (`POST /-/events/<pipeline>/<source>`) and the consumers.

Every gateway process runs one consumer per pipeline in the pipeline's Redis consumer group (stateless pipelines:
all of them work; pipelines with a join: one leader at a time, by lease), and hands batches to the stage
deployments through the same router as HTTP requests. Pipelines come with the routing table (its `pipelines`
field), so a deploy that adds, changes or removes one reaches every gateway with the table.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import orjson
import structlog
from aiohttp import web

from gateway.app_state import ROUTER
from gateway.events.eventing import PipelineConsumer
from gateway.events.ingest import EventRejected, append_event
from gateway.events.spec import PipelineSpec
from gateway.http_errors import error_response, json_response
from replicas.routing.failures import RaygateError

__all__ = ["EVENTS", "EVENTS_PREFIX", "EventsEdge", "events_context", "handle_events"]

EVENTS_PREFIX = "/-/events/"

log = structlog.get_logger("raygate.events")


class _Rejected(RaygateError):
    def __init__(self, rejected: EventRejected) -> None:
        super().__init__(rejected.message, retry_after=1.0 if rejected.status == 503 else None)
        self.status, self.code = rejected.status, rejected.code


class EventsEdge:
    """The pipelines this gateway knows, their consumers, and the Redis client both use."""

    def __init__(self, client, router, namespace: str, consumer_prefix: str) -> None:
        self.client = client  # redis.asyncio client, owned by events_context
        self.router = router
        self.namespace = namespace
        self.consumer_prefix = consumer_prefix  # consumer names: <prefix>-<pipeline>
        self.pipelines: dict[str, PipelineSpec] = {}
        self._docs: dict[str, dict] = {}
        self._consumers: dict[str, tuple[PipelineConsumer, asyncio.Task]] = {}

    async def call(self, app: str, deployment: str, payload: dict) -> dict:
        """A stage call through the router (the same split, choice, retries and failover as HTTP)."""
        result = await self.router.call(app, deployment, orjson.dumps(payload), os.urandom(8).hex().encode(),
                                        method="POST")
        if result.status != 200:
            raise RuntimeError(f"stage {app}/{deployment} answered {result.status}: "
                               f"{result.body[:200].decode('utf-8', 'replace')}")
        return orjson.loads(result.body)

    def update(self, pipeline_docs) -> None:
        """Start consumers for new or changed pipelines and stop the ones that went (from a table update)."""
        docs = {doc["name"]: doc for doc in pipeline_docs}
        for name in [n for n in self._docs if docs.get(n) != self._docs[n]]:
            self._stop(name)
        for name, doc in docs.items():
            if name in self._consumers:
                continue
            pipeline = PipelineSpec.model_validate(doc)
            consumer = PipelineConsumer(pipeline, self.client, self.call, f"{self.consumer_prefix}-{name}",
                                        namespace=self.namespace)
            task = asyncio.get_running_loop().create_task(consumer.run())
            self._consumers[name] = (consumer, task)
            self.pipelines[name] = pipeline
            log.info("pipeline_consumer_started", pipeline=name, consumer=consumer.name)
        self._docs = docs

    def _stop(self, name: str) -> None:
        consumer, _ = self._consumers.pop(name, (None, None))
        self.pipelines.pop(name, None)
        self._docs.pop(name, None)
        if consumer is not None:
            consumer.stop()  # finishes its batches in flight; close() awaits the task

    async def close(self, timeout_s: float = 10.0) -> None:
        tasks = [task for _, task in self._consumers.values()]
        for name in list(self._consumers):
            self._stop(name)
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()


EVENTS = web.AppKey("events", EventsEdge)


def events_context(redis_url: str | None, namespace: str, consumer_prefix: str):
    """The Redis client and the pipeline consumers (none without Redis: /-/events answers 503)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if not redis_url:
            yield
            return
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
        edge = app[EVENTS] = EventsEdge(client, app[ROUTER], namespace, consumer_prefix)
        edge.update(app[ROUTER].table.pipelines)
        yield
        await edge.close()
        await client.aclose()

    return context


class _NoEvents(RaygateError):
    status, code, retry_after = 503, "events_unavailable", 1.0


class _UnknownPipeline(RaygateError):
    status, code = 404, "unknown_pipeline"


async def handle_events(request: web.Request) -> web.StreamResponse:
    """POST /-/events/<pipeline>/<source>: a JSON object appended to the source's stream -> 202 {"id": ...}."""
    if request.method != "POST":
        return error_response(_UnknownPipeline(f"use POST on {request.path}"))
    edge = request.app.get(EVENTS)
    if edge is None:
        return error_response(_NoEvents("event ingestion needs Redis; this gateway has none"))
    parts = request.path[len(EVENTS_PREFIX):].split("/")
    pipeline = edge.pipelines.get(parts[0]) if len(parts) == 2 else None
    if pipeline is None:
        return error_response(_UnknownPipeline(f"no pipeline at {request.path} (POST /-/events/<pipeline>/<source>)"))
    body = await request.read()
    try:
        event_id = await append_event(edge.client, pipeline, parts[1], body, edge.namespace)
    except EventRejected as rejected:
        return error_response(_Rejected(rejected))
    return json_response({"id": event_id}, 202)
