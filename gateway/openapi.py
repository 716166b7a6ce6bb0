"""OpenAPI 3 for the gateway's whole HTTP surface, served at `/-/openapi.json`.

Written by hand as plain dicts: the control paths and the admin API are fixed; the apps' routes come from the
routing table the gateway runs now (each route prefix takes a JSON body and answers JSON). Kept true by
tests/gateway/test_openapi.py, which runs schemathesis against a live gateway.
"""

from __future__ import annotations

from typing import Any

from gateway.admin_api import MAX_INT32
from gateway.config import GatewayConfig
from replicas.routing.table import RoutingTable

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_ANY: dict[str, Any] = {}  # any JSON value


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: int) -> dict:
    reasons = {400: "bad request (body, header or parameters)", 401: "missing or wrong bearer token",
               404: "unknown route, version or endpoint", 405: "method not allowed on this path",
               408: "the request did not arrive in time", 413: "request body over the limit",
               422: "the model's answer for this input is not finite (inf or NaN)",
               429: "too many requests", 500: "error in the model's code", 502: "replica failed after retries",
               503: "overloaded or no replica (see Retry-After)", 504: "deadline passed"}
    return {str(s): _json(_ERROR, reasons[s]) for s in statuses}


_ROUTED_ERRORS = _errors(400, 404, 408, 413, 422, 500, 502, 503, 504)
_ADMIN_ERRORS = _errors(400, 401, 408, 413, 503)
_ANSWER_HEADERS = {name: {"description": text, "schema": {"type": "string"}} for name, text in (
    ("X-Request-Id", "the request's id (as sent, or generated)"),
    ("X-Raygate-Version", "the version that answered"),
    ("X-Raygate-Replica", "the replica that answered"))}
_REQUEST_HEADERS = [
    {"name": "X-Request-Id", "in": "header", "required": False, "description": "kept in answers and logs "
     "(printable ASCII, at most 128 characters; longer ones are replaced)", "schema": {"type": "string"}},
    {"name": "X-Raygate-Version", "in": "header", "required": False,
     "description": "pin a version where the deployment allows it", "schema": {"type": "string"}},
    {"name": "X-Raygate-Split-Key", "in": "header", "required": False,
     "description": "sticky split: the same key lands on the same version", "schema": {"type": "string"}},
]


def _get(summary: str, ok: dict, *errors: int) -> dict:
    return {"get": {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}}


def _admin(method: str, summary: str, body: dict | None, ok: dict, ok_status: str = "200") -> dict:
    operation: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}],
                                 "responses": {ok_status: ok, **_ADMIN_ERRORS}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": body}, "application/yaml": {"schema": body}}}
    return {method: operation}


_OBJECT = {"type": "object"}
_SPLIT = {"type": "object", "required": ["app", "deployment", "weights"], "properties": {
    "app": {"type": "string"}, "deployment": {"type": "string"},
    "weights": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "number", "minimum": 0}}}}
_SCALE = {"type": "object", "required": ["app", "deployment", "version", "num_replicas"], "properties": {
    "app": {"type": "string"}, "deployment": {"type": "string"}, "version": {"type": "string"},
    "num_replicas": {"type": "integer", "minimum": 0, "maximum": MAX_INT32}}}
_SPEC = {"type": "object", "description": "an app spec (deploy/spec.py), as in a spec file",
         "properties": {"apps": {"type": "array", "items": _OBJECT}, "gateway": _OBJECT}}

_FIXED_PATHS: dict[str, Any] = {
    "/-/healthz": _get("the process is alive", _json(_OBJECT, "alive")),
    "/-/ready": _get("ready to serve (503 while starting, draining or without a routing table)",
                     _json(_OBJECT, "ready"), 503),
    "/-/routes": _get("the route prefixes served", _json(_OBJECT, "route prefix -> {app, ingress}")),
    "/-/openapi.json": _get("this document", _json(_OBJECT, "OpenAPI 3 document")),
    "/metrics": {"get": {"summary": "Prometheus metrics of the node's gateways", "responses": {"200": {
        "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/-/admin/deploy": _admin("post", "apply a spec (?wait=1: until applied)", _SPEC, _json(_OBJECT, "applied"))
    | {"parameters": [{"name": "wait", "in": "query", "required": False, "schema": {"type": "string"}}]},
    "/-/admin/status": _admin("get", "platform status", None, _json(_OBJECT, "status")),
    "/-/admin/apply": _admin("get", "progress of the last apply", None, _json(_OBJECT, "apply status")),
    "/-/admin/split": _admin("post", "set a deployment's version weights", _SPLIT, _json(_OBJECT, "weights set")),
    "/-/admin/scale": _admin("post", "set a version's replica count", _SCALE, _json(_OBJECT, "target set")),
    "/-/admin/shutdown": _admin("post", "stop the platform", None, _json(_OBJECT, "stopping"), "202"),
}
_FIXED_PATHS["/-/admin/deploy"]["post"]["responses"]["202"] = _json(_OBJECT, "accepted, applying")


def _route_path(prefix: str, app: str, ingress: str) -> dict:
    operation = {"summary": f"call app {app!r} (deployment {ingress!r})", "parameters": _REQUEST_HEADERS,
                 "requestBody": {"required": False, "content": {"application/json": {"schema": _JSON_ANY}}},
                 "responses": {"200": _json(_JSON_ANY, "the model's answer", _ANSWER_HEADERS), **_ROUTED_ERRORS}}
    return {"post": operation}


def openapi_document(table: RoutingTable, config: GatewayConfig) -> dict:
    paths = dict(_FIXED_PATHS)
    for app in table.apps:
        paths.setdefault(app.route_prefix, _route_path(app.route_prefix, app.name, app.ingress))
    return {
        "openapi": "3.0.3",
        "info": {"title": "raygate gateway", "version": str(table.version),
                 "description": f"Apps' routes from routing table {table.version}; request bodies up to "
                                f"{config.max_body_bytes} bytes. Errors are {{\"error\": {{code, message}}}}."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "request_id": {"type": "string"}}}}}},
        },
    }
