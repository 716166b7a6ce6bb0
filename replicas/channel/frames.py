"""The direct channel's frame format between routers (gateways, handles) and replicas.

Ray actor handles stay in charge of a replica's lifecycle (create, probe, drain, kill); the request path
runs over one persistent TCP connection per router and replica, carrying length-prefixed frames. Frames
bound for one connection in one event-loop pass go out in one write, so a busy router batches for free
and an idle one pays one loopback round trip (tens of microseconds) instead of a Ray task round trip.

Request frame:  HEADER(kind=REQUEST, rid=<call id>) + REQUEST_META + request_id + path + body
Response frame: HEADER(kind=RESPONSE, rid=<call id>) + RESPONSE_META + body
Hello frame:    HEADER(kind=HELLO, rid=0) + channel token (the first frame a client sends)
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "HEADER", "REQUEST_META", "RESPONSE_META", "KIND_HELLO", "KIND_REQUEST", "KIND_RESPONSE", "KIND_PING",
    "KIND_PONG", "encode_ping", "encode_pong",
    "STATUS_OK", "STATUS_BAD_REQUEST", "STATUS_USER_ERROR", "STATUS_BUSY", "STATUS_DRAINING",
    "STATUS_NOT_FOUND", "STATUS_TIMEOUT", "RETRYABLE_STATUSES", "MAX_FRAME_BYTES",
    "encode_request", "encode_response", "encode_hello", "FrameDecoder", "FrameError",
]

# length of everything after these 4 bytes, kind, call id
HEADER: Final = struct.Struct("!IBI")
# deadline (ms from receipt, 0 = none), len(request_id), len(path)
REQUEST_META: Final = struct.Struct("!IHH")
# status
RESPONSE_META: Final = struct.Struct("!H")

KIND_HELLO: Final = 1
KIND_REQUEST: Final = 2
KIND_RESPONSE: Final = 3
KIND_PING: Final = 4  # data-plane health probe; answered on the replica's loop, so a hung loop never answers
KIND_PONG: Final = 5

STATUS_OK: Final = 200
STATUS_BAD_REQUEST: Final = 400  # the body is not valid JSON; never retried
STATUS_NOT_FOUND: Final = 404
STATUS_USER_ERROR: Final = 500  # the user's code raised; never retried
STATUS_BUSY: Final = 529  # replica at max_ongoing_requests: nothing ran, try another
STATUS_DRAINING: Final = 530  # replica is draining: nothing ran, try another
STATUS_TIMEOUT: Final = 504
RETRYABLE_STATUSES: Final = frozenset({STATUS_BUSY, STATUS_DRAINING})

MAX_FRAME_BYTES: Final = 256 * 1024 * 1024

_HEADER_SIZE = HEADER.size
_REQUEST_META_SIZE = REQUEST_META.size
_RESPONSE_META_SIZE = RESPONSE_META.size


class FrameError(ValueError):
    """The peer sent something that is not a raygate frame; the connection must be closed."""


def encode_hello(token: bytes) -> bytes:
    return HEADER.pack(1 + 4 + len(token), KIND_HELLO, 0) + token


def encode_ping(call_id: int) -> bytes:
    return HEADER.pack(5, KIND_PING, call_id)


def encode_pong(call_id: int) -> bytes:
    return HEADER.pack(5, KIND_PONG, call_id)


def encode_request(call_id: int, request_id: bytes, path: bytes, body: bytes, deadline_ms: int = 0) -> bytes:
    size = 1 + 4 + _REQUEST_META_SIZE + len(request_id) + len(path) + len(body)
    return b"".join((
        HEADER.pack(size, KIND_REQUEST, call_id),
        REQUEST_META.pack(deadline_ms, len(request_id), len(path)),
        request_id, path, body,
    ))


def encode_response(call_id: int, status: int, body: bytes) -> bytes:
    return b"".join((HEADER.pack(1 + 4 + _RESPONSE_META_SIZE + len(body), KIND_RESPONSE, call_id),
                     RESPONSE_META.pack(status), body))


class FrameDecoder:
    """Incremental decoder: feed bytes, get back complete frames as (kind, call_id, payload memoryview-free bytes)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        end = len(buffer)
        while end - offset >= _HEADER_SIZE:
            size, kind, call_id = HEADER.unpack_from(buffer, offset)
            if size > MAX_FRAME_BYTES or size < 5:
                raise FrameError(f"frame length {size} out of range")
            stop = offset + 4 + size
            if stop > end:
                break
            frames.append((kind, call_id, bytes(buffer[offset + _HEADER_SIZE:stop])))
            offset = stop
        if offset:
            del buffer[:offset]
        return frames


def decode_request(payload: bytes) -> tuple[int, bytes, bytes, bytes]:
    """-> (deadline_ms, request_id, path, body)."""
    deadline_ms, rid_len, path_len = REQUEST_META.unpack_from(payload, 0)
    start = _REQUEST_META_SIZE
    rid_end = start + rid_len
    path_end = rid_end + path_len
    return deadline_ms, payload[start:rid_end], payload[rid_end:path_end], payload[path_end:]


def decode_response(payload: bytes) -> tuple[int, bytes]:
    """-> (status, body)."""
    (status,) = RESPONSE_META.unpack_from(payload, 0)
    return status, payload[_RESPONSE_META_SIZE:]


__all__ += ["decode_request", "decode_response"]
