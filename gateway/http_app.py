"""The aiohttp application of a gateway: the proxy hot path, health and readiness, routes, metrics, admin."""

from __future__ import annotations

import asyncio
import hmac
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import yaml
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from replicas.routing.failures import (
    BadRequest,
    PayloadTooLarge,
    RaygateError,
    RouteNotFound,
    Unauthorized,
    error_body,
)
from replicas.routing.router import Router

__all__ = ["AdminBackend", "GatewayState", "build_app", "ROUTER", "STATE", "METRICS"]


class AdminBackend(Protocol):
    """What the admin API asks of the control plane (the controller actor, or a fake in unit tests)."""

    async def apply(self, spec_doc: dict, wait: bool) -> dict: ...
    async def apply_status(self) -> dict: ...
    async def status(self) -> dict: ...
    async def set_weights(self, app: str, deployment: str, weights: dict[str, float]) -> dict: ...
    async def scale(self, app: str, deployment: str, version: str, num_replicas: int) -> dict: ...
    async def shutdown(self) -> None: ...


@dataclass
class GatewayState:
    draining: bool = False  # set when the gateway stops: /-/ready answers 503
    in_flight: int = 0  # requests being answered by this process
    in_flight_by_app: dict = field(default_factory=dict)  # app -> requests being answered
    served: int = 0  # requests answered by this process
    traffic: dict = field(default_factory=dict)  # (app, deployment, version) -> requests answered
    idle: asyncio.Event = field(default_factory=asyncio.Event)


ROUTER = web.AppKey("router", Router)
STATE = web.AppKey("state", GatewayState)
METRICS = web.AppKey("metrics", GatewayMetrics)
CONFIG = web.AppKey("config", GatewayConfig)
ADMIN = web.AppKey("admin", object)

_JSON = "application/json"


def _error_response(error: RaygateError, request_id: str | None) -> web.Response:
    headers = error.headers()
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return web.Response(body=error_body(error.code, error.message, request_id), status=error.status,
                        content_type=_JSON, headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON)


def build_app(config: GatewayConfig, router: Router, metrics: GatewayMetrics,
              admin: AdminBackend | None = None, access_log=None, before_scrape=None) -> web.Application:
    """The gateway's app. `access_log` is a structlog logger for one line per request (None: no lines);
    `before_scrape` is awaited before /metrics renders (the actor makes its sibling processes flush)."""
    app = web.Application(client_max_size=config.max_body_bytes)
    state = GatewayState()
    state.idle.set()
    metrics.in_flight_source = lambda: state.in_flight_by_app
    in_flight_by_app = state.in_flight_by_app
    app[ROUTER], app[STATE], app[METRICS], app[CONFIG], app[ADMIN] = router, state, metrics, config, admin
    max_body = config.max_body_bytes
    log_access = config.access_log and access_log is not None
    observe = metrics.observe
    ids = random.Random(os.urandom(16))  # request ids without a syscall per request
    new_id = ids.getrandbits
    perf_counter = time.perf_counter

    async def proxy(request: web.Request) -> web.Response:
        started = perf_counter()
        headers = request.headers
        request_id = headers.get("X-Request-Id")
        if not request_id or len(request_id) > 128:
            request_id = "%016x" % new_id(64)
        path = request.path
        route = router.table.match(path)
        if route is None:
            error = RouteNotFound(f"no app serves path {path!r}")
            observe("-", "-", "-", 404, perf_counter() - started)
            return _error_response(error, request_id)
        app_name, deployment = route.name, route.ingress
        version, replica = "-", "-"
        state.in_flight += 1
        in_flight_by_app[app_name] = in_flight_by_app.get(app_name, 0) + 1
        if state.in_flight == 1:
            state.idle.clear()
        try:
            length = request.content_length
            if length is not None and length > max_body:
                raise PayloadTooLarge(f"request body of {length} bytes is over the limit of {max_body} bytes")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise PayloadTooLarge(f"request body is over the limit of {max_body} bytes") from None
            result = await router.call(
                app_name, deployment, body, request_id.encode(), path.encode(), method=request.method,
                pinned=headers.get("X-Raygate-Version"), split_key=headers.get("X-Raygate-Split-Key"))
            version, replica, status = result.version, result.replica_id, result.status
            response = web.Response(body=result.body, status=status, content_type=_JSON, headers={
                "X-Request-Id": request_id, "X-Raygate-Version": version, "X-Raygate-Replica": replica})
        except RaygateError as error:
            status = error.status
            response = _error_response(error, request_id)
        finally:
            state.in_flight -= 1
            in_flight_by_app[app_name] -= 1
            if state.in_flight == 0:
                state.idle.set()
        elapsed = perf_counter() - started
        observe(app_name, deployment, version, status, elapsed)
        state.served += 1
        key = (app_name, deployment, version)
        state.traffic[key] = state.traffic.get(key, 0) + 1
        if log_access:
            access_log.info("access", request_id=request_id, method=request.method, path=path, app=app_name,
                            deployment=deployment, version=version, replica=replica, status=status,
                            ms=round(elapsed * 1000, 3))
        return response

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "alive", "pid": os.getpid()})

    async def ready(request: web.Request) -> web.Response:
        if state.draining:
            return _json({"status": "draining"}, 503)
        if router.table.version == 0:
            return _json({"status": "no routing table yet"}, 503)
        return _json({"status": "ready", "table_version": router.table.version})

    async def routes(request: web.Request) -> web.Response:
        table = router.table
        return _json({a.route_prefix: {"app": a.name, "ingress": a.ingress} for a in table.apps})

    async def metrics_handler(request: web.Request) -> web.Response:
        metrics.flush()  # on this loop, where observations are made
        if before_scrape is not None:
            await before_scrape()
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # One catch-all route: the proxy path pays for a single match; control paths are found by a dict lookup.
    control = {("GET", "/-/healthz"): healthz, ("GET", "/-/ready"): ready, ("GET", "/-/routes"): routes,
               ("GET", "/metrics"): metrics_handler}
    control.update(_admin_handlers(config, admin, state))

    async def dispatch(request: web.Request) -> web.Response:
        path = request.path
        if path.startswith("/-/") or path == "/metrics":
            handler = control.get((request.method, path))
            if handler is not None:
                return await handler(request)
            if any(p == path for _, p in control):
                return _error_response(BadRequest(f"method {request.method} not allowed on {path}"), None)
        return await proxy(request)

    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def _admin_handlers(config: GatewayConfig, admin: AdminBackend | None, state: GatewayState) -> dict:
    token = config.admin_token.encode()

    def guarded(handler):
        async def wrapper(request: web.Request) -> web.Response:
            try:
                if admin is None or not token:
                    raise Unauthorized("the admin API is disabled on this gateway (no admin token configured)")
                offered = request.headers.get("Authorization", "")
                if not offered.startswith("Bearer ") or not hmac.compare_digest(offered[7:].encode(), token):
                    raise Unauthorized("missing or wrong bearer token")
                return await handler(request)
            except RaygateError as error:
                return _error_response(error, None)
            except (KeyError, ValueError) as error:
                message = error.args[0] if error.args else str(error)
                return _error_response(BadRequest(str(message)), None)
        return wrapper

    async def read_doc(request: web.Request) -> Any:
        raw = await request.read()
        try:
            if "json" in (request.content_type or ""):
                return orjson.loads(raw)
            return yaml.safe_load(raw)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise BadRequest(f"request body is not valid JSON/YAML: {exc}") from None

    async def deploy(request: web.Request) -> web.Response:
        doc = await read_doc(request)  # validated once, by the controller (SpecError -> 400)
        wait = request.query.get("wait", "0") not in ("0", "false", "no")
        return _json(await admin.apply(doc, wait), 202 if not wait else 200)

    async def status(request: web.Request) -> web.Response:
        data = await admin.status()
        data.setdefault("traffic", [{"app": k[0], "deployment": k[1], "version": k[2], "requests": v}
                                    for k, v in state.traffic.items()])
        data["gateway"] = {"pid": os.getpid(), "served": state.served}
        return _json(data)

    async def apply_status(request: web.Request) -> web.Response:
        return _json(await admin.apply_status())

    async def split(request: web.Request) -> web.Response:
        doc = await read_doc(request)
        if not isinstance(doc, dict) or not isinstance(doc.get("weights"), dict):
            raise BadRequest("body must be {\"app\": ..., \"deployment\": ..., \"weights\": {version: weight}}")
        # Raw values: the controller validates them with the spec's own types (400 naming the field).
        return _json(await admin.set_weights(doc.get("app"), doc.get("deployment"), doc["weights"]))

    async def scale(request: web.Request) -> web.Response:
        doc = await read_doc(request)
        if not isinstance(doc, dict):
            raise BadRequest("body must be a JSON object")
        return _json(await admin.scale(doc.get("app"), doc.get("deployment"), doc.get("version"),
                                       doc.get("num_replicas")))

    async def shutdown(request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(admin.shutdown()))
        return _json({"status": "shutting down"}, 202)

    return {("POST", "/-/admin/deploy"): guarded(deploy), ("GET", "/-/admin/status"): guarded(status),
            ("GET", "/-/admin/apply"): guarded(apply_status), ("POST", "/-/admin/split"): guarded(split),
            ("POST", "/-/admin/scale"): guarded(scale), ("POST", "/-/admin/shutdown"): guarded(shutdown)}
