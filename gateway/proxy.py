"""The proxy hot path: an HTTP request to an app's route becomes one router call.

Per request: a request id (kept from `X-Request-Id` or generated), the route from the table, the body read
within the request's deadline (a body still arriving when the deadline passes ends the request with 408), the
router call with what is left of the deadline, then the answer, the metrics, one access line. The request's
`request_id`, `app`, `deployment` and `version` are bound as structlog context variables, so any log line made
while it is answered carries them (aiohttp runs each request in a task of its own, which keeps them apart).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import time
from collections.abc import Callable

from aiohttp import web
from structlog.contextvars import bind_contextvars

from gateway.app_state import ACCESS_LOG, CONFIG, METRICS, ROUTER, STATE
from gateway.http_errors import JSON, RequestTimeout, error_response, header_text
from gateway.load_report import LOAD_REPORTER
from replicas.routing.failures import (
    BadRequest,
    PayloadTooLarge,
    RaygateError,
    RouteNotFound,
)

__all__ = ["ProxyHandler"]

_MAX_REQUEST_ID = 128

# structlog's own context variables for the request's keys, taken once from the tokens bind_contextvars returns
# (bound in a throwaway context): setting four variables directly costs a quarter of bind_contextvars' loop.
_TOKENS = contextvars.Context().run(bind_contextvars, request_id="-", app="-", deployment="-", version="-")
_REQUEST_ID, _APP, _DEPLOYMENT, _VERSION = (_TOKENS[k].var for k in ("request_id", "app", "deployment", "version"))


def _observer(metrics_observe, reporter):
    """What the request path calls once per answer: the Prometheus buffer, and the scaler's window if one is on."""
    if reporter is None:
        return metrics_observe
    report = reporter.observe

    def observe(app: str, deployment: str, version: str, status: int, seconds: float) -> None:
        metrics_observe(app, deployment, version, status, seconds)
        report(app, deployment, version, status, seconds)

    return observe


class ProxyHandler:
    """aiohttp handler for every path that is not a control path. Built once per app; reads the app's state
    through its keys when the app starts (`on_startup`), so a request pays no lookups for them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._new_id = random.Random(os.urandom(16)).getrandbits  # request ids without a syscall per request

    async def on_startup(self, app: web.Application) -> None:
        config = app[CONFIG]
        self.router = app[ROUTER]
        self.state = app[STATE]
        self.observe = _observer(app[METRICS].observe, app.get(LOAD_REPORTER))
        self.max_body = config.max_body_bytes
        access_log = app.get(ACCESS_LOG)
        self.access_log = access_log if config.access_log else None

    def request_id(self, headers) -> str:
        request_id = headers.get("X-Request-Id")
        if not request_id or len(request_id) > _MAX_REQUEST_ID:
            return "%016x" % self._new_id(64)
        if not request_id.isascii() or not request_id.isprintable():
            raise BadRequest("header X-Request-Id must be printable ASCII (at most 128 characters)")
        return request_id

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        headers = request.headers
        path = request.path
        try:
            request_id = self.request_id(headers)
        except BadRequest as error:
            self.observe("-", "-", "-", 400, time.perf_counter() - started)
            return error_response(error)
        route = self.router.table.match(path)
        if route is None:
            self.observe("-", "-", "-", 404, time.perf_counter() - started)
            return error_response(RouteNotFound(f"no app serves path {path!r}"), request_id)
        app_name, deployment = route.name, route.ingress
        _REQUEST_ID.set(request_id)  # = bind_contextvars(request_id=..., app=..., deployment=..., version="-")
        _APP.set(app_name)
        _DEPLOYMENT.set(deployment)
        _VERSION.set("-")
        state = self.state
        state.in_flight += 1
        by_app = state.in_flight_by_app
        by_app[app_name] = by_app.get(app_name, 0) + 1
        if state.in_flight == 1:
            state.idle.clear()
        try:
            response, version, replica = await self.answer(request, request_id, app_name, deployment, path)
        finally:
            state.in_flight -= 1
            by_app[app_name] -= 1
            if state.in_flight == 0:
                state.idle.set()
        self.record(request, request_id, app_name, deployment, version, replica, response.status, started)
        return response

    async def answer(self, request: web.Request, request_id: str, app_name: str, deployment: str,
                     path: str) -> tuple[web.Response, str, str]:
        """(response, version, replica) for a request whose route is known."""
        try:
            headers = request.headers
            pinned = header_text(headers.get("X-Raygate-Version"), "X-Raygate-Version")
            split_key = header_text(headers.get("X-Raygate-Split-Key"), "X-Raygate-Split-Key")
            body = self.complete_body(request)
            timeout_s = None  # the router's default: the route's whole deadline, from now
            if body is None:
                body, timeout_s = await self.read_body(request, app_name, deployment)
            result = await self.router.call(app_name, deployment, body, request_id.encode(), path.encode(),
                                            method=request.method, pinned=pinned, split_key=split_key,
                                            timeout_s=timeout_s)
        except RaygateError as error:
            response = error_response(error, request_id)
            if isinstance(error, (RequestTimeout, PayloadTooLarge)):
                response.force_close()  # the rest of the body is not read: the connection cannot be reused
            return response, "-", "-"
        version, replica = result.version, result.replica_id
        _VERSION.set(version)
        return web.Response(body=result.body, status=result.status, content_type=JSON, headers={
            "X-Request-Id": request_id, "X-Raygate-Version": version, "X-Raygate-Replica": replica}), version, replica

    def complete_body(self, request: web.Request) -> bytes | None:
        """The body when it came whole with the head (the common case: nothing to wait for, so no deadline to
        keep), taken from the buffer as it is (request.read() would join it into a new bytes); else None. 413
        over the size limit."""
        content = request.content
        if not content.is_eof():
            return None
        body = content.read_nowait()
        if len(body) > self.max_body:
            raise PayloadTooLarge(f"request body of {len(body)} bytes is over the limit of {self.max_body} bytes")
        return body

    async def read_body(self, request: web.Request, app_name: str, deployment: str) -> tuple[bytes, float | None]:
        """A body still arriving: (body, seconds of the request's deadline left for the router). Refused over the
        size limit (413), ended by the deadline (408: a slow body counts against the request's deadline)."""
        length = request.content_length
        if length is not None and length > self.max_body:
            raise PayloadTooLarge(f"request body of {length} bytes is over the limit of {self.max_body} bytes")
        view = self.router.deployment_view(app_name, deployment)
        timeout_s = view.route.request_timeout_s if view is not None else None
        try:
            if timeout_s is None:  # no such deployment: the router answers 404 after the read
                return await request.read(), None
            deadline = self.clock() + timeout_s
            body = await asyncio.wait_for(request.read(), timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"request body is over the limit of {self.max_body} bytes") from None
        except TimeoutError:
            raise RequestTimeout(f"request body not received within the deadline of {timeout_s:g}s") from None
        left = deadline - self.clock()
        if left <= 0:
            raise RequestTimeout(f"request body not received within the deadline of {timeout_s:g}s")
        return body, left

    def record(self, request: web.Request, request_id: str, app_name: str, deployment: str, version: str,
               replica: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.observe(app_name, deployment, version, status, elapsed)
        state = self.state
        state.served += 1
        key = (app_name, deployment, version)
        state.traffic[key] = state.traffic.get(key, 0) + 1
        if self.access_log is not None:
            self.access_log.access(request_id, request.method, request.path, app_name, deployment, version, replica,
                                   status, round(elapsed * 1000, 3))
