"""The admin API under `/-/admin/`: apply a spec, read status, change weights, scale, shut down.

Every path under the prefix needs the bearer token, checked before the path is looked up: without a valid token
an unknown admin path answers 401 like a known one, so the API's shape is not visible to a stranger. Bodies are
JSON or YAML and read within `body_timeout_s`; what they mean is validated by the controller with the spec's
own models (its refusals come back as 400s naming the field).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
import yaml
from aiohttp import web

from gateway.app_state import ADMIN, CONFIG, ROUTER, STATE
from gateway.http_errors import RequestTimeout, error_response, json_response
from replicas.routing.failures import (
    BadRequest,
    PayloadTooLarge,
    RaygateError,
    Unauthorized,
)

__all__ = ["ADMIN_PREFIX", "ADMIN_ROUTES", "MAX_INT32", "handle_admin"]

ADMIN_PREFIX = "/-/admin/"
MAX_INT32 = 2**31 - 1  # the wire's bound on counts; the spec's per-deployment caps are the controller's

log = structlog.get_logger("raygate.admin")

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _authorised(request: web.Request) -> None:
    admin, token = request.app[ADMIN], request.app[CONFIG].admin_token.encode()
    if admin is None or not token:
        raise Unauthorized("the admin API is disabled on this gateway (no admin token configured)")
    offered = request.headers.get("Authorization", "")
    # aiohttp keeps undecodable header bytes as surrogate escapes: give them back as the bytes that came.
    offered_bytes = offered.encode("utf-8", "surrogateescape")
    if not offered_bytes.startswith(b"Bearer ") or not hmac.compare_digest(offered_bytes[7:], token):
        raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <admin token>)")


async def _read_doc(request: web.Request) -> Any:
    limit = request.app[CONFIG].max_body_bytes
    try:
        raw = await asyncio.wait_for(request.read(), request.app[CONFIG].body_timeout_s)
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes") from None
    except TimeoutError:
        raise RequestTimeout("request body not received in time") from None
    if not raw.strip():
        raise BadRequest("request body is empty: send a JSON or YAML document")
    try:
        if "json" in (request.content_type or ""):
            return orjson.loads(raw)
        return yaml.safe_load(raw)
    except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON/YAML: {exc}") from None


def _object(doc: Any, *fields: str) -> dict:
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    missing = [name for name in fields if name not in doc]
    if missing:
        raise BadRequest(f"request body lacks {', '.join(missing)}")
    return doc


def _text(doc: dict, name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {type(value).__name__}")
    return value


async def deploy(request: web.Request) -> web.Response:
    doc = await _read_doc(request)  # validated once, by the controller (a refused spec is a 400)
    wait = request.query.get("wait", "0") not in ("0", "false", "no")
    return json_response(await request.app[ADMIN].apply(doc, wait), 200 if wait else 202)


async def status(request: web.Request) -> web.Response:
    data = await request.app[ADMIN].status()
    state = request.app[STATE]
    data.setdefault("traffic", state.traffic_rows())
    data["gateway"] = {"pid": os.getpid(), "served": state.served,
                       "table_version": request.app[ROUTER].table.version}
    return json_response(data)


async def apply_status(request: web.Request) -> web.Response:
    return json_response(await request.app[ADMIN].apply_status())


async def split(request: web.Request) -> web.Response:
    doc = _object(await _read_doc(request), "app", "deployment", "weights")
    weights = doc["weights"]
    if not isinstance(weights, dict) or not weights:
        raise BadRequest("weights must be a non-empty object {version: weight}")
    for version, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight < 0:
            raise BadRequest(f"weights.{version} must be a finite number >= 0, not {weight!r}")
    return json_response(await request.app[ADMIN].set_weights(_text(doc, "app"), _text(doc, "deployment"),
                                                              {str(k): float(v) for k, v in weights.items()}))


async def scale(request: web.Request) -> web.Response:
    doc = _object(await _read_doc(request), "app", "deployment", "version", "num_replicas")
    count = doc["num_replicas"]
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_INT32:
        raise BadRequest(f"num_replicas must be a whole number from 0 to {MAX_INT32}, not {count!r} "
                         f"(the deployment's own replica cap applies too)")
    return json_response(await request.app[ADMIN].scale(_text(doc, "app"), _text(doc, "deployment"),
                                                        _text(doc, "version"), count))


async def shutdown(request: web.Request) -> web.Response:
    admin = request.app[ADMIN]
    asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(admin.shutdown()))
    return json_response({"status": "shutting down"}, 202)


ADMIN_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/-/admin/deploy"): deploy, ("GET", "/-/admin/status"): status,
    ("GET", "/-/admin/apply"): apply_status, ("POST", "/-/admin/split"): split,
    ("POST", "/-/admin/scale"): scale, ("POST", "/-/admin/shutdown"): shutdown,
}
_ADMIN_PATHS = {path for _, path in ADMIN_ROUTES}


async def handle_admin(request: web.Request) -> web.Response:
    """Every request under /-/admin/: the token first, then the path (401, then 404/405, then the handler)."""
    method, path = request.method, request.path
    try:
        _authorised(request)
        handler = ADMIN_ROUTES.get((method, path))
        if handler is None:
            if path in _ADMIN_PATHS:
                return error_response(_MethodNotAllowed(f"method {method} not allowed on {path}"))
            return error_response(_NotFound(f"no admin endpoint {path}"))
        response = await handler(request)
        log.info("admin_request", method=method, path=path, status=response.status, peer=request.remote)
        return response
    except RaygateError as error:
        if not isinstance(error, Unauthorized):
            log.info("admin_request", method=method, path=path, status=error.status, peer=request.remote)
        return error_response(error)


class _NotFound(RaygateError):
    status, code = 404, "not_found"


class _MethodNotAllowed(RaygateError):
    status, code = 405, "method_not_allowed"
