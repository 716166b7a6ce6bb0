"""Where a pipeline's results go, each deduplicated by output id: a Redis stream, a deployment, or a webhook.

A sink's `deliver(events)` returns once the results are accepted; it raises when they were not, and the consumer
then leaves the input entries unacknowledged (they are retried, and reclaimed if this consumer dies).
"""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

import orjson

from gateway.events.spec import SinkSpec, webhook_allowed
from gateway.events.store import DeliveredIds, EventKeys, StreamSinkStore

__all__ = ["Sink", "StreamSink", "DeploymentSink", "WebhookSink", "SinkRejected", "build_sink", "CallFn", "PostFn"]

CallFn = Callable[[str, str, dict], Awaitable[dict]]  # (app, deployment, payload) -> answer
PostFn = Callable[[str, bytes], Awaitable[int]]  # (url, JSON body) -> HTTP status


class SinkRejected(RuntimeError):
    """The sink did not accept the batch (the entries stay unacknowledged)."""


class Sink(Protocol):
    async def deliver(self, events: list[dict]) -> int:
        """Deliver `events`; return how many were new (not delivered before)."""


class StreamSink:
    """XADD each new output to a stream; the dedupe marker and the append are one atomic script."""

    def __init__(self, store: StreamSinkStore) -> None:
        self.store = store

    async def deliver(self, events: list[dict]) -> int:
        return await self.store.append_new(events)


class DeploymentSink:
    """Calls a deployment with {"events": [...]} (the outputs not delivered before), then marks them delivered."""

    def __init__(self, call: CallFn, app: str, deployment: str, delivered: DeliveredIds) -> None:
        self.call = call
        self.app = app
        self.deployment = deployment
        self.delivered = delivered

    async def deliver(self, events: list[dict]) -> int:
        fresh = await self.delivered.undelivered(events)
        if fresh:
            await self.call(self.app, self.deployment, {"events": fresh})
            await self.delivered.mark(fresh)
        return len(fresh)


class WebhookSink:
    """POSTs {"events": [...]} to a URL on the operator's allow list; 2xx means accepted."""

    def __init__(self, url: str, allowlist: tuple[str, ...], post: PostFn, delivered: DeliveredIds) -> None:
        if not webhook_allowed(url, allowlist):
            raise SinkRejected(f"webhook {url!r} is not on the allowed list")
        self.url = url
        self.post = post
        self.delivered = delivered

    async def deliver(self, events: list[dict]) -> int:
        fresh = await self.delivered.undelivered(events)
        if fresh:
            status = await self.post(self.url, orjson.dumps({"events": fresh}))
            if not 200 <= status < 300:
                raise SinkRejected(f"webhook answered {status}")
            await self.delivered.mark(fresh)
        return len(fresh)


def build_sink(spec: SinkSpec, client, keys: EventKeys, call: CallFn, app: str,
               webhook_allowlist: tuple[str, ...] = (), post: PostFn | None = None) -> Sink:
    """The sink `spec` asks for; `app` is the default app of a deployment sink."""
    if spec.stream:
        return StreamSink(StreamSinkStore(client, spec.stream, keys, spec.dedupe_ttl_s, spec.maxlen))
    delivered = DeliveredIds(client, keys, spec.dedupe_ttl_s)
    if spec.deployment:
        return DeploymentSink(call, spec.app or app, spec.deployment, delivered)
    if post is None:
        raise SinkRejected("a webhook sink needs a post function")
    return WebhookSink(spec.webhook, tuple(webhook_allowlist), post, delivered)
