"""The direct channel's frame format between routers (gateways, handles) and replicas.

Ray actor handles stay in charge of a replica's lifecycle (create, probe, drain, kill); the request path
runs over one persistent TCP connection per router and replica, carrying length-prefixed frames. Frames
bound for one connection in one event-loop pass go out in one write, so a busy router batches for free
and an idle one pays one loopback round trip (tens of microseconds) instead of a Ray task round trip.

Request frame:  HEADER(kind=REQUEST, rid=<call id>) + REQUEST_META + request_id + path + body
Response frame: HEADER(kind=RESPONSE, rid=<call id>) + RESPONSE_META + body
Challenge:      HEADER(kind=CHALLENGE, rid=0) + 32-byte nonce (the replica's first frame on every connection)
Hello:          HEADER(kind=HELLO, rid=0) + HMAC-SHA256(token, nonce || "raygate-channel-v1") (the client's answer)
Welcome:        HEADER(kind=WELCOME, rid=0) (the replica accepted the answer; nothing was run before it)

The token never crosses the wire, and a sniffed hello answers only the nonce it was made for.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

__all__ = [
    "HEADER", "REQUEST_META", "RESPONSE_META", "KIND_HELLO", "KIND_REQUEST", "KIND_RESPONSE", "KIND_PING",
    "KIND_PONG", "KIND_CHALLENGE", "KIND_WELCOME", "encode_ping", "encode_pong", "encode_challenge", "encode_welcome",
    "hello_answer", "NONCE_BYTES", "HELLO_FRAME_BYTES", "REQUEST_OVERHEAD_BYTES", "request_frame_limit",
    "STATUS_OK", "STATUS_BAD_REQUEST", "STATUS_USER_ERROR", "STATUS_BUSY", "STATUS_DRAINING",
    "STATUS_NOT_FOUND", "STATUS_NON_FINITE", "STATUS_TIMEOUT", "RETRYABLE_STATUSES", "MAX_FRAME_BYTES",
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
KIND_CHALLENGE: Final = 6  # replica -> client, first frame: the nonce to answer
KIND_WELCOME: Final = 7  # replica -> client: the hello was accepted

STATUS_OK: Final = 200
STATUS_BAD_REQUEST: Final = 400  # the body is not valid JSON; never retried
STATUS_NOT_FOUND: Final = 404
STATUS_NON_FINITE: Final = 422  # the model answered NaN or infinity somewhere in its result; never retried
STATUS_USER_ERROR: Final = 500  # the user's code raised; never retried
STATUS_BUSY: Final = 529  # replica at max_ongoing_requests: nothing ran, try another
STATUS_DRAINING: Final = 530  # replica is draining: nothing ran, try another
STATUS_TIMEOUT: Final = 504
RETRYABLE_STATUSES: Final = frozenset({STATUS_BUSY, STATUS_DRAINING})

MAX_FRAME_BYTES: Final = 256 * 1024 * 1024  # the client's cap on responses

NONCE_BYTES: Final = 32
_AUTH_CONTEXT = b"raygate-channel-v1"
HELLO_FRAME_BYTES: Final = 1 + 4 + hashlib.sha256().digest_size  # length field of a hello: the first frame's cap
# what a request frame may carry besides its body: kind, call id, meta, and 16 KiB of request id and path (HTTP
# servers cap a request line at 8 KiB)
REQUEST_OVERHEAD_BYTES: Final = 1 + 4 + 8 + 16 * 1024

_HEADER_SIZE = HEADER.size
_REQUEST_META_SIZE = REQUEST_META.size
_RESPONSE_META_SIZE = RESPONSE_META.size


class FrameError(ValueError):
    """The peer sent something that is not a raygate frame; the connection must be closed."""


def encode_hello(answer: bytes) -> bytes:
    """The client's answer to the challenge (see `hello_answer`)."""
    return HEADER.pack(1 + 4 + len(answer), KIND_HELLO, 0) + answer


def hello_answer(token: bytes, nonce: bytes) -> bytes:
    """The client's proof that it holds `token`, bound to this connection's nonce."""
    return hmac.new(token, nonce + _AUTH_CONTEXT, hashlib.sha256).digest()


def encode_challenge(nonce: bytes) -> bytes:
    return HEADER.pack(1 + 4 + len(nonce), KIND_CHALLENGE, 0) + nonce


def encode_welcome() -> bytes:
    return HEADER.pack(5, KIND_WELCOME, 0)


def request_frame_limit(max_request_bytes: int) -> int:
    """Largest request frame (length field) a replica accepts for bodies up to `max_request_bytes`."""
    return REQUEST_OVERHEAD_BYTES + max_request_bytes


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
    """Incremental decoder: feed bytes, get back complete frames as (kind, call_id, payload bytes).

    `max_frame` (the length field's cap) may be changed between feeds: a replica reads the first frame with the
    size of a hello and raises it to the deployment's request limit once the peer is authenticated.
    """

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame  # largest length field accepted; larger -> FrameError

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        end = len(buffer)
        while end - offset >= _HEADER_SIZE:
            size, kind, call_id = HEADER.unpack_from(buffer, offset)
            if size > self.max_frame or size < 5:
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
    """-> (deadline_ms, request_id, path, body). FrameError when the payload is shorter than it declares."""
    if len(payload) < _REQUEST_META_SIZE:
        raise FrameError(f"request frame of {len(payload)} bytes is shorter than its header")
    deadline_ms, rid_len, path_len = REQUEST_META.unpack_from(payload, 0)
    start = _REQUEST_META_SIZE
    rid_end = start + rid_len
    path_end = rid_end + path_len
    if path_end > len(payload):
        raise FrameError(f"request frame declares {path_end} bytes of header and has {len(payload)}")
    return deadline_ms, payload[start:rid_end], payload[rid_end:path_end], payload[path_end:]


def decode_response(payload: bytes) -> tuple[int, bytes]:
    """-> (status, body)."""
    if len(payload) < _RESPONSE_META_SIZE:
        raise FrameError(f"response frame of {len(payload)} bytes is shorter than its header")
    (status,) = RESPONSE_META.unpack_from(payload, 0)
    return status, payload[_RESPONSE_META_SIZE:]


__all__ += ["decode_request", "decode_response"]
