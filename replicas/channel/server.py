"""The replica's side of the direct channel: authenticate, decode request frames, run the user's code, answer.

Sync user code runs on worker threads, never on the event loop; async user code runs on the loop. Calls
that take well under a millisecond are run in batches (one thread hand-off per batch of frames that came
in together) so a tiny model is not dominated by thread switches; slower calls get a thread each.

A stranger gets little: every connection starts with a challenge (a fresh nonce) and must answer it with
HMAC-SHA256(token, nonce || context) in a frame no longer than that answer, within `handshake_timeout_s`;
connections are capped (in all and still unauthenticated); request frames are capped at the deployment's body
limit; a malformed frame closes its connection and nothing else, and is never counted in flight.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from replicas.callable import UserCallable
from replicas.channel.frames import (
    HELLO_FRAME_BYTES,
    KIND_HELLO,
    KIND_PING,
    KIND_REQUEST,
    NONCE_BYTES,
    STATUS_BAD_REQUEST,
    STATUS_BUSY,
    STATUS_DRAINING,
    STATUS_NON_FINITE,
    STATUS_OK,
    STATUS_USER_ERROR,
    FrameError,
    decode_request,
    encode_challenge,
    encode_pong,
    encode_response,
    encode_welcome,
    hello_answer,
    request_frame_limit,
)
from replicas.channel.protocol import FramedProtocol
from replicas.user_errors import BadInput, Reply

__all__ = ["ReplicaCore", "ChannelServerProtocol", "ChannelLimits", "ChannelTokens"]

_BATCH_BELOW_S = 0.0005  # calls faster than this (moving average) run in batches on one thread


@dataclass(frozen=True)
class ChannelLimits:
    max_request_bytes: int = 1 << 20  # largest request body; a larger frame closes the connection
    handshake_timeout_s: float = 2.0  # a connection not authenticated by then is closed
    max_connections: int = 256  # open connections per replica (routers: gateways and handles)
    max_unauthenticated: int = 16  # connections still in their handshake; more are closed at once


class ChannelTokens:
    """The tokens a hello may prove: the current one, and after a rotation the previous one for a grace period."""

    def __init__(self, token: bytes, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tokens: list[tuple[bytes, float]] = [(token, math.inf)]  # (token, valid until)

    def rotate(self, new: bytes, old_valid_s: float) -> None:
        now = self.clock()
        current = self._tokens[0][0]
        self._tokens = [(new, math.inf), (current, now + old_valid_s)]

    def accepts(self, answer: bytes, nonce: bytes) -> bool:
        now = self.clock()
        ok = False
        for token, until in self._tokens:
            ok |= until > now and hmac.compare_digest(hello_answer(token, nonce), answer)  # no early exit
        return ok


class _BadBody(ValueError):
    """The request body is not valid JSON."""


def _parse(body: bytes):
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError as exc:
        raise _BadBody(f"request body is not valid JSON: {exc}") from None


def _error_body(code: str, message: str, request_id: bytes) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message,
                                   "request_id": request_id.decode("utf-8", "replace")}})


def _non_finite_path(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first float that is NaN or infinite (orjson would write it as null), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _non_finite_path(item, f"{path}[{index}]")
            if found:
                return found
    elif hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays
        return _non_finite_path(value.tolist(), path)
    return None


def _answer(call_id: int, request_id: bytes, result: Any = None, error: Exception | None = None) -> tuple[bytes, bool]:
    """The response frame for one call's outcome, and whether it counts as a failure (the only error mapping)."""
    if error is None:
        status = STATUS_OK
        if isinstance(result, Reply):
            status, result = result.status, result.body
        try:
            body = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:  # the result is not JSON-serialisable: the user's code is at fault
            error = exc
        else:
            where = _non_finite_path(result) if b"null" in body else None  # NaN/inf become null in JSON
            if where is None:
                return encode_response(call_id, status, body), False
            return encode_response(call_id, STATUS_NON_FINITE, _error_body(
                "non_finite_result", f"the model's result is not finite at {where}", request_id)), False
    if isinstance(error, _BadBody):
        return encode_response(call_id, STATUS_BAD_REQUEST, _error_body("bad_request", str(error), request_id)), True
    if isinstance(error, BadInput):
        return encode_response(call_id, STATUS_BAD_REQUEST, _error_body("bad_input", str(error), request_id)), False
    return encode_response(call_id, STATUS_USER_ERROR, _error_body(
        "model_error", f"{type(error).__name__}: {error}", request_id)), True


class ReplicaCore:
    """Admission (max_ongoing_requests, drain, connection caps) and execution of requests for one user callable."""

    def __init__(self, loop: asyncio.AbstractEventLoop, user: UserCallable, max_ongoing_requests: int,
                 channel_token: bytes, *, limits: ChannelLimits = ChannelLimits(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.loop = loop
        self.user = user
        self.max_ongoing = max_ongoing_requests
        self.tokens = ChannelTokens(channel_token, clock)
        self.limits = limits
        self.request_frame_limit = request_frame_limit(limits.max_request_bytes)
        self.in_flight = 0
        self.processed = 0
        self.errors = 0
        self.rejected = 0
        self.refused_connections = 0  # over a connection cap, or failed or timed-out handshakes
        self.draining = False
        self.connections: set[ChannelServerProtocol] = set()
        self.unauthenticated = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = None if user.is_async else ThreadPoolExecutor(
            max_workers=max(1, min(max_ongoing_requests, 32)), thread_name_prefix="raygate-user")
        self._batch: list[tuple[Any, int, bytes, bytes]] = []
        # Moving average of one sync call; a fresh replica presumes its calls slow until it has measured them,
        # so its first burst runs side by side on worker threads, not as one batch on one thread.
        self._call_seconds = _BATCH_BELOW_S

    # -- admission ----------------------------------------------------------------------------------
    def admit_connection(self, conn: "ChannelServerProtocol") -> bool:
        limits = self.limits
        if len(self.connections) >= limits.max_connections or self.unauthenticated >= limits.max_unauthenticated:
            self.refused_connections += 1
            return False
        self.connections.add(conn)
        self.unauthenticated += 1
        return True

    def submit(self, conn: "ChannelServerProtocol", call_id: int, payload: bytes) -> None:
        """Admit one request frame. FrameError (the caller closes the connection) before anything is counted."""
        _, request_id, path, body = decode_request(payload)
        if self.draining or self.in_flight >= self.max_ongoing:
            self.rejected += 1
            conn.send(encode_response(call_id, STATUS_DRAINING if self.draining else STATUS_BUSY, b""))
            return
        self.in_flight += 1
        self._idle.clear()
        if self.user.is_async:
            self.loop.create_task(self._run_async(conn, call_id, request_id, path, body))
            return
        if self._call_seconds >= _BATCH_BELOW_S:
            self._executor.submit(self._run_batch, [(conn, call_id, request_id, path, body)])
            return
        if not self._batch:
            self.loop.call_soon(self._dispatch_batch)
        self._batch.append((conn, call_id, request_id, path, body))

    def _dispatch_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._executor.submit(self._run_batch, batch)

    # -- execution ----------------------------------------------------------------------------------
    def _invoke(self, path: bytes, body: bytes):
        """Call the user's target with the parsed body (and the request path, where it asks for it)."""
        user = self.user
        if user.wants_path:
            return user.target(_parse(body), path=path.decode("utf-8", "replace"))
        return user.target(_parse(body))

    def _call_sync(self, call_id: int, request_id: bytes, path: bytes, body: bytes) -> tuple[bytes, bool]:
        try:
            result = self._invoke(path, body)
        except Exception as exc:  # the user's code failed (or the body did): answer, keep serving
            return _answer(call_id, request_id, error=exc)
        return _answer(call_id, request_id, result)

    def _run_batch(self, batch: list) -> None:
        """Run calls one after another on this thread; once they prove slower than batching pays for (a fresh
        replica's first burst, a call that turned slow), hand the rest to threads of their own, so one slow
        call never makes the batch behind it wait."""
        started = time.perf_counter()
        out = []
        for done, (conn, call_id, request_id, path, body) in enumerate(batch, 1):
            out.append((conn, *self._call_sync(call_id, request_id, path, body)))
            if done < len(batch) and time.perf_counter() - started >= _BATCH_BELOW_S * done:
                for item in batch[done:]:
                    self._executor.submit(self._run_batch, [item])
                break
        per_call = (time.perf_counter() - started) / len(out)
        self._call_seconds = 0.8 * self._call_seconds + 0.2 * per_call
        self.loop.call_soon_threadsafe(self._deliver, out)

    async def _run_async(self, conn, call_id: int, request_id: bytes, path: bytes, body: bytes) -> None:
        try:
            frame, failed = _answer(call_id, request_id, await self._invoke(path, body))
        except Exception as exc:
            frame, failed = _answer(call_id, request_id, error=exc)
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


class ChannelServerProtocol(FramedProtocol):
    """One router's connection to this replica: a challenge first, then requests and pings once authenticated."""

    def __init__(self, core: ReplicaCore) -> None:
        super().__init__(core.loop, max_frame=HELLO_FRAME_BYTES)
        self.core = core
        self.authenticated = False
        self.admitted = False
        self._nonce = b""
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self.core.admit_connection(self):
            transport.abort()
            return
        self.admitted = True
        self._nonce = os.urandom(NONCE_BYTES)
        transport.write(encode_challenge(self._nonce))
        self._handshake_timer = self.loop.call_later(self.core.limits.handshake_timeout_s, self._handshake_expired)

    def _handshake_expired(self) -> None:
        if not self.authenticated:
            self.abort()

    def abort(self) -> None:
        if not self.authenticated and self.transport is not None:
            self.core.refused_connections += 1  # a failed or timed-out handshake, or a frame too large for one
        super().abort()

    def frames_received(self, frames) -> None:
        core = self.core
        for kind, call_id, payload in frames:
            if not self.authenticated:
                self._authenticate(kind, payload)
            elif kind == KIND_REQUEST:
                core.submit(self, call_id, payload)
            elif kind == KIND_PING:
                self.send(encode_pong(call_id))
            else:
                raise FrameError(f"unexpected frame kind {kind}")

    def _authenticate(self, kind: int, answer: bytes) -> None:
        core = self.core
        if kind != KIND_HELLO or not core.tokens.accepts(answer, self._nonce):
            raise FrameError("the first frame must answer the challenge")
        self.authenticated = True
        core.unauthenticated -= 1
        self._handshake_timer.cancel()
        self.decoder.max_frame = core.request_frame_limit
        self.send(encode_welcome())

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self.admitted:
            self.core.connections.discard(self)
            if not self.authenticated:
                self.core.unauthenticated -= 1
