"""Errors a request can end with, and their HTTP form: `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

import orjson

__all__ = [
    "RaygateError", "BadRequest", "RouteNotFound", "UnknownVersionError", "PayloadTooLarge", "Overloaded",
    "NoReplicas", "DeadlineExceeded", "ReplicaFailed", "Unauthorized", "error_body",
]


def error_body(code: str, message: str, request_id: str | None = None) -> bytes:
    error = {"code": code, "message": message}
    if request_id is not None:
        error["request_id"] = request_id
    return orjson.dumps({"error": error})


class RaygateError(Exception):
    """An error with an HTTP status, a stable snake_case code and a message for humans."""

    status = 500
    code = "internal"
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, int(round(self.retry_after))))}


class BadRequest(RaygateError):
    status, code = 400, "bad_request"


class Unauthorized(RaygateError):
    status, code = 401, "unauthorized"


class RouteNotFound(RaygateError):
    status, code = 404, "route_not_found"


class UnknownVersionError(RaygateError):
    status, code = 404, "unknown_version"


class PayloadTooLarge(RaygateError):
    status, code = 413, "payload_too_large"


class Overloaded(RaygateError):
    status, code, retry_after = 503, "overloaded", 1.0


class NoReplicas(RaygateError):
    status, code, retry_after = 503, "no_replicas", 1.0


class DeadlineExceeded(RaygateError):
    status, code = 504, "deadline_exceeded"


class ReplicaFailed(RaygateError):
    status, code = 502, "replica_failed"
