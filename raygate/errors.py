"""Errors the client raises, parsed from the gateway's JSON error contract.

The gateway answers every error as `{"error": {"code", "message", "request_id"}}` with a status; the client
turns it into a `GatewayError` subclass chosen by status, keeping the code, message and request id. Failures
to reach any endpoint are `Unavailable`; a call that ran out of time is `Timeout`.
"""

from __future__ import annotations

import json

__all__ = [
    "BadRequest",
    "DeadlineExceeded",
    "GatewayError",
    "ModelError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RaygateClientError",
    "ReplicaFailed",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
]


class RaygateClientError(Exception):
    """Every error the client raises."""

    def __init__(self, message: str, *, request_id: str | None = None, attempts: tuple = ()) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id  # the X-Request-Id the call carried (the same on every attempt)
        self.attempts = attempts  # (endpoint, outcome) of every attempt, oldest first


class GatewayError(RaygateClientError):
    """The gateway answered with an error status."""

    def __init__(self, status: int, code: str, message: str, *, request_id: str | None = None,
                 retry_after: float | None = None, endpoint: str = "", attempts: tuple = ()) -> None:
        super().__init__(f"{status} {code}: {message}", request_id=request_id, attempts=attempts)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.endpoint = endpoint


class BadRequest(GatewayError):
    """400: the body or a header is wrong (or the model raised BadInput)."""


class Unauthorized(GatewayError):
    """401: the admin API wants a valid bearer token."""


class NotFound(GatewayError):
    """404: no app serves the path, or the pinned version does not exist."""


class PayloadTooLarge(GatewayError):
    """413: the body is over the gateway's limit."""


class Overloaded(GatewayError):
    """429/503: queues are full or no replica is up; `retry_after` says when to come back."""


class ModelError(GatewayError):
    """500: the user's code raised."""


class ReplicaFailed(GatewayError):
    """502: the replica failed and retries on other replicas did not help."""


class DeadlineExceeded(GatewayError):
    """504: the request's deadline passed in the gateway."""


class Unavailable(RaygateClientError):
    """No endpoint could be reached (connections refused, reset, or every endpoint down)."""


class Timeout(RaygateClientError):
    """The call's deadline passed before an answer came."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 404: NotFound, 413: PayloadTooLarge, 429: Overloaded,
              500: ModelError, 502: ReplicaFailed, 503: Overloaded, 504: DeadlineExceeded}


def error_from_response(status: int, body: bytes, headers, endpoint: str = "", attempts: tuple = ()) -> GatewayError:
    """The error an error response stands for. A body that is not the JSON contract (a proxy's page) still
    gives an error with code `http_<status>` and the start of the body as its message."""
    code, message, request_id = f"http_{status}", body[:200].decode("utf-8", "replace"), None
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
        request_id = error.get("request_id")
    except (ValueError, KeyError, TypeError):
        pass
    request_id = request_id or headers.get("X-Request-Id")
    retry_after = None
    try:
        retry_after = float(headers.get("Retry-After")) if headers.get("Retry-After") else None
    except ValueError:
        pass
    cls = _BY_STATUS.get(status, GatewayError)
    return cls(status, code, message, request_id=request_id, retry_after=retry_after, endpoint=endpoint,
               attempts=attempts)
