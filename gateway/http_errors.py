"""The HTTP form of every error the gateway answers: `{"error": {"code", "message", "request_id"?}}`.

Errors a request can end with on the routing path (404, 503, 504, 502, ...) live with the router
(`replicas.routing.failures`); the ones only HTTP has (a request too slow to arrive, a header that is not
UTF-8, aiohttp's own refusals of a malformed request) are answered here, in the same JSON shape.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from replicas.routing.failures import BadRequest, RaygateError, error_body

__all__ = [
    "JsonErrorRequestHandler",
    "RequestTimeout",
    "error_response",
    "header_text",
    "json_response",
    "refusal_bytes",
]

JSON = "application/json"


class RequestTimeout(RaygateError):
    """The client did not send its request (head or body) in time."""

    status, code = 408, "request_timeout"


def error_response(error: RaygateError, request_id: str | None = None) -> web.Response:
    headers = error.headers()
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return web.Response(body=error_body(error.code, error.message, request_id), status=error.status,
                        content_type=JSON, headers=headers)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)


def header_text(value: str | None, name: str) -> str | None:
    """A header's value as text, or a 400 naming the header when its bytes are not UTF-8.

    aiohttp decodes header bytes as UTF-8 with surrogate escapes, so invalid bytes show up as lone surrogates,
    which cannot be encoded again: they are refused here instead of failing later with a 500.
    """
    if value is None or value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadRequest(f"header {name} is not valid UTF-8") from None
    return value


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
          413: "payload_too_large", 414: "uri_too_long", 431: "headers_too_large", 500: "internal",
          503: "overloaded"}


def _status_code(status: int) -> str:
    return _CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with its own error answers (a malformed request line, too many or too long
    headers, an unhandled exception) in the JSON error shape instead of text/plain. The connection still closes."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer already began: nothing more can be said on it
            raise ConnectionError("an answer was already started; cannot send the error")
        if status >= 500:
            self.log_exception("gateway_unhandled_error", exc_info=exc)
            detail = "internal error in the gateway"
        else:  # a stranger's malformed request: one quiet line, no traceback to fill the logs with
            self.log_debug("malformed_request status=%s error=%r", status, exc)
            detail = str(getattr(exc, "message", None) or message or HTTPStatus(status).phrase).strip()
            if status == 400:
                detail = f"malformed request: {detail}"
        response = web.Response(body=error_body(_status_code(status), detail), status=status, content_type=JSON)
        response.force_close()
        return response


def refusal_bytes(status: int, code: str, message: str, retry_after_s: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for refusals made before aiohttp sees a request."""
    body = error_body(code, message)
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    if retry_after_s is not None:
        head.append(f"Retry-After: {retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
