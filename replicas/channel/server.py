"""The replica's side of the direct channel: decode request frames, run the user's code, send responses.

Sync user code runs on worker threads, never on the event loop; async user code runs on the loop. Calls
that take well under a millisecond are run in batches (one thread hand-off per batch of frames that came
in together) so a tiny model is not dominated by thread switches; slower calls get a thread each.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from replicas.callable import UserCallable
from replicas.channel.frames import (
    KIND_HELLO,
    KIND_PING,
    KIND_REQUEST,
    STATUS_BAD_REQUEST,
    STATUS_BUSY,
    STATUS_DRAINING,
    STATUS_OK,
    STATUS_USER_ERROR,
    FrameDecoder,
    FrameError,
    decode_request,
    encode_pong,
    encode_response,
)
from replicas.user_errors import BadInput

__all__ = ["ReplicaCore", "ChannelServerProtocol"]

_BATCH_BELOW_S = 0.0005  # calls faster than this (moving average) run in batches on one thread


def _error_body(code: str, message: str, request_id: bytes) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message,
                                   "request_id": request_id.decode("utf-8", "replace")}})


class ReplicaCore:
    """Admission (max_ongoing_requests, drain) and execution of requests for one user callable."""

    def __init__(self, loop: asyncio.AbstractEventLoop, user: UserCallable, max_ongoing_requests: int,
                 channel_token: bytes) -> None:
        self.loop = loop
        self.user = user
        self.max_ongoing = max_ongoing_requests
        self.channel_token = channel_token
        self.in_flight = 0
        self.processed = 0
        self.errors = 0
        self.rejected = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = None if user.is_async else ThreadPoolExecutor(
            max_workers=max(1, min(max_ongoing_requests, 32)), thread_name_prefix="raygate-user")
        self._batch: list[tuple[Any, int, bytes, bytes]] = []
        self._call_seconds = 0.0  # moving average of one sync call

    # -- admission ----------------------------------------------------------------------------------
    def submit(self, conn: "ChannelServerProtocol", call_id: int, payload: bytes) -> None:
        if self.draining:
            self.rejected += 1
            conn.send(encode_response(call_id, STATUS_DRAINING, b""))
            return
        if self.in_flight >= self.max_ongoing:
            self.rejected += 1
            conn.send(encode_response(call_id, STATUS_BUSY, b""))
            return
        self.in_flight += 1
        self._idle.clear()
        _, request_id, _, body = decode_request(payload)
        if self.user.is_async:
            self.loop.create_task(self._run_async(conn, call_id, request_id, body))
            return
        if self._call_seconds >= _BATCH_BELOW_S:
            self._executor.submit(self._run_batch, [(conn, call_id, request_id, body)])
            return
        if not self._batch:
            self.loop.call_soon(self._dispatch_batch)
        self._batch.append((conn, call_id, request_id, body))

    def _dispatch_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._executor.submit(self._run_batch, batch)

    # -- execution ----------------------------------------------------------------------------------
    def _call_sync(self, call_id: int, request_id: bytes, body: bytes) -> tuple[bytes, bool]:
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            return encode_response(call_id, STATUS_BAD_REQUEST,
                                   _error_body("bad_request", f"request body is not valid JSON: {exc}", request_id)), True
        try:
            result = self.user.target(payload)
            return encode_response(call_id, STATUS_OK, orjson.dumps(result)), False
        except BadInput as exc:
            return encode_response(call_id, STATUS_BAD_REQUEST, _error_body("bad_input", str(exc), request_id)), False
        except Exception as exc:  # the user's code failed: answer 500, keep serving
            return encode_response(call_id, STATUS_USER_ERROR,
                                   _error_body("model_error", f"{type(exc).__name__}: {exc}", request_id)), True

    def _run_batch(self, batch: list) -> None:
        started = time.perf_counter()
        out = [(conn, *self._call_sync(call_id, request_id, body)) for conn, call_id, request_id, body in batch]
        per_call = (time.perf_counter() - started) / len(batch)
        self._call_seconds = 0.8 * self._call_seconds + 0.2 * per_call
        self.loop.call_soon_threadsafe(self._deliver, out)

    async def _run_async(self, conn, call_id: int, request_id: bytes, body: bytes) -> None:
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            self._deliver([(conn, encode_response(call_id, STATUS_BAD_REQUEST, _error_body(
                "bad_request", f"request body is not valid JSON: {exc}", request_id)), True)])
            return
        try:
            result = await self.user.target(payload)
            frame, failed = encode_response(call_id, STATUS_OK, orjson.dumps(result)), False
        except BadInput as exc:
            frame, failed = encode_response(call_id, STATUS_BAD_REQUEST, _error_body(
                "bad_input", str(exc), request_id)), False
        except Exception as exc:
            frame, failed = encode_response(call_id, STATUS_USER_ERROR, _error_body(
                "model_error", f"{type(exc).__name__}: {exc}", request_id)), True
        self._deliver([(conn, frame, failed)])

    def _deliver(self, out: list) -> None:
        for conn, frame, failed in out:
            conn.send(frame)
            self.errors += failed
        self.in_flight -= len(out)
        self.processed += len(out)
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests (they are retried elsewhere) and wait for the ones running to finish."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class ChannelServerProtocol(asyncio.Protocol):
    """One router's connection to this replica. The first frame must be HELLO with the channel token."""

    def __init__(self, core: ReplicaCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder()
        self.authenticated = False
        self._out: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except FrameError:
            self.transport.close()
            return
        core = self.core
        for kind, call_id, payload in frames:
            if kind == KIND_REQUEST and self.authenticated:
                core.submit(self, call_id, payload)
            elif kind == KIND_PING and self.authenticated:
                self.send(encode_pong(call_id))
            elif kind == KIND_HELLO and hmac.compare_digest(payload, core.channel_token):
                self.authenticated = True
            else:
                self.transport.close()
                return

    def send(self, frame: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if not self._out:
            self.core.loop.call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def connection_lost(self, exc) -> None:
        self.transport = None
