"""A gateway's resources as aiohttp cleanup contexts, the listening socket, and the graceful drain.

Each resource is a generator with one `yield`: what comes before it starts the resource and sets it on the app,
what comes after releases it. aiohttp enters them in order when the app starts and leaves them in reverse when
it stops; background tasks are cancelled, then awaited. The gateway actor uses, in this order:

    access_log_context -> router_context -> admin_context -> watcher_context -> flusher_context

`Listener` serves an app on a port shared by the node's gateways (SO_REUSEPORT) through the app's front door
(proxied paths skip aiohttp's routing: gateway/http_app.py), with aiohttp's connection handler answering its own
errors as JSON, a cap on open connections (503, then close) and the header timeout
(a connection that sends no complete request head in time is closed). `drain` stops a gateway gracefully: not
ready at once, then zero requests in flight (and a minimum time, so balancers notice), then the cleanup.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway.access_log import open_access_log
from gateway.app_state import (
    ACCESS_LOG,
    ACCESS_STREAM,
    ADMIN,
    CONFIG,
    DRAINING,
    METRICS,
    ROUTER,
    SERVING,
    STATE,
    STOPPED,
)
from gateway.config import GatewayConfig
from gateway.http_app import PROXY, front_door
from gateway.http_errors import JsonErrorRequestHandler, refusal_bytes
from replicas.routing.router import Router
from replicas.runtime import stop_task

__all__ = [
    "Listener",
    "access_log_context",
    "admin_context",
    "drain",
    "flusher_context",
    "provide",
    "router_context",
    "watcher_context",
]


def provide(key: web.AppKey, value: Any):
    """A cleanup context that only sets `app[key] = value` (unit tests: a ready router, a fake admin)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[key] = value
        yield

    return context


def access_log_context(log_dir: str):
    """Access lines in <log_dir>/access-<pid>.jsonl (stdout when empty); flushed and closed at the end."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if not app[CONFIG].access_log:
            app[ACCESS_LOG] = app[ACCESS_STREAM] = None
            yield
            return
        path = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            path = os.path.join(log_dir, f"access-{os.getpid()}.jsonl")
        app[ACCESS_LOG], app[ACCESS_STREAM] = open_access_log(path)
        stream = app[ACCESS_STREAM]
        yield
        try:
            stream.flush()
            if path is not None:
                stream.close()
        except (OSError, ValueError):
            pass

    return context


def router_context(controller, observer, clock: Callable[[], float] = time.monotonic):
    """The router, with the controller's current table before the first connection is taken (a restarted
    gateway knows every route at once); closed at the end (its connections and its monitor)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        router = Router(asyncio.get_running_loop(), observer=observer, clock=clock)
        router.update_table(await controller.current_table.remote())
        app[ROUTER] = router
        yield
        router.close()

    return context


def admin_context(backend):
    """The admin API's backend (None: the admin API answers 401 everywhere)."""
    return provide(ADMIN, backend)


def watcher_context(controller, watcher_id: str, on_update=None):
    """A task following the controller's routing table (each poll acknowledges the version this gateway runs)."""
    from replicas.routing.watcher import follow_routing_table

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(follow_routing_table(
            controller, app[ROUTER], watcher_id=watcher_id, on_update=on_update))
        yield
        await stop_task(task)

    return context


def flusher_context(period_s: float):
    """Buffered metrics to the node's shared files and access lines to disk, every `period_s`, and at the end."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]

        def flush() -> None:
            metrics.flush()
            stream = app.get(ACCESS_STREAM)
            if stream is not None:
                stream.flush()

        async def every_period() -> None:
            while True:
                await asyncio.sleep(period_s)
                try:
                    flush()
                except (OSError, ValueError):
                    pass

        task = asyncio.get_running_loop().create_task(every_period())
        yield
        await stop_task(task)
        flush()

    return context


class _Refuse(asyncio.Protocol):
    """A connection over the cap: one 503 answer, then closed."""

    ANSWER = refusal_bytes(503, "overloaded", "this gateway process has too many open connections", 1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.ANSWER)  # type: ignore[attr-defined]
        transport.close()


class Listener:
    """An app on a port shared with the node's other gateways, with the hardening of the module docstring."""

    def __init__(self, app: web.Application, config: GatewayConfig) -> None:
        self.app = app
        self.config = config
        # aiohttp's keep-alive timer runs from the moment a connection opens and from each answer, and closes
        # a connection still waiting for a complete request head when it fires: our header timeout.
        self._handler_kwargs = {"keepalive_timeout": config.header_timeout_s, "access_log": None}
        self.runner = web.AppRunner(app, handle_signals=False, **self._handler_kwargs)
        self._server: asyncio.AbstractServer | None = None

    def _connection(self) -> asyncio.Protocol:
        server = self.runner.server
        if len(server.connections) >= self.config.max_connections:
            return _Refuse()
        return JsonErrorRequestHandler(server, loop=asyncio.get_running_loop(), **self._handler_kwargs)

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Start the app (its cleanup contexts), then listen; returns the port (useful with port 0)."""
        await self.runner.setup()
        server = self.runner.server
        if PROXY in self.app:  # an app of build_app's
            server.request_handler = front_door(self.app, server.request_handler)
        self._server = await asyncio.get_running_loop().create_server(
            self._connection, host or self.config.host, self.config.port if port is None else port,
            reuse_port=True, backlog=4096)
        self.app[STATE].state = SERVING
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close the connections, then the app's cleanup contexts in reverse."""
        if self._server is not None:
            self._server.close()
        await self.runner.cleanup()
        self.app[STATE].state = STOPPED


async def drain(listener: Listener, minimum_s: float, timeout_s: float,
                clock: Callable[[], float] = time.monotonic) -> bool:
    """Not ready at once; wait for zero in flight (at most `timeout_s`) and at least `minimum_s` in all; stop.
    Returns whether every in-flight request finished."""
    state = listener.app[STATE]
    state.state = DRAINING
    started = clock()
    try:
        await asyncio.wait_for(state.idle.wait(), timeout_s)
        finished = True
    except TimeoutError:
        finished = False
    left = minimum_s - (clock() - started)
    if left > 0:
        await asyncio.sleep(left)
    await listener.stop()
    return finished
