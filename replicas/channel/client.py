"""The router's side of the direct channel: one multiplexed connection per replica.

Requests written in one event-loop pass leave in one `writelines`, and responses that arrive together are
resolved together, so batching happens without a timer and without waiting. Opening a connection includes the
handshake: the replica's nonce, our HMAC answer, its welcome; nothing is sent before the welcome, so a connection
that dies before it never ran a request. Every time here comes from the injected `clock` (the router's).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

from replicas.channel.frames import (
    KIND_CHALLENGE,
    KIND_PONG,
    KIND_RESPONSE,
    KIND_WELCOME,
    NONCE_BYTES,
    FrameError,
    decode_response,
    encode_hello,
    encode_ping,
    encode_request,
    hello_answer,
)
from replicas.channel.protocol import FramedProtocol

__all__ = ["ReplicaConnection", "ReplicaUnreachable", "ReplicaConnectionLost", "DeadlineReached"]


class ReplicaUnreachable(ConnectionError):
    """Could not connect or authenticate: the request was never sent, so any replica may take it."""


class ReplicaConnectionLost(ConnectionError):
    """The connection closed after the request was sent: retry only if the deployment is idempotent."""


class DeadlineReached(TimeoutError):
    """The request's deadline passed while it waited (for a replica slot or for an answer)."""


def _fail(futures, error: BaseException) -> None:
    for future in futures:
        if future is not None and not future.done():
            future.set_exception(error)


class ReplicaConnection(FramedProtocol):
    """A lazily opened, multiplexed connection to one replica. Once closed it stays closed: make a new one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, token: bytes, *,
                 clock: Callable[[], float] = time.monotonic, connect_timeout_s: float = 1.0) -> None:
        super().__init__(loop)
        self.host = host
        self.port = port
        self.token = token
        self.clock = clock
        self.connect_timeout_s = connect_timeout_s  # TCP connect plus handshake
        self.closed = False
        self._welcome: asyncio.Future | None = None  # done when the replica accepted our hello
        self._pending: dict[int, asyncio.Future] = {}
        self._next_call_id = 0
        self._sent: deque[tuple] = deque()  # (call id, send time, deadline), oldest first
        self._pings: dict[int, tuple[float, asyncio.Future | None]] = {}  # call id -> (send time, waiter)
        self.last_ping_at = 0.0
        self.last_pong_at = 0.0

    # -- connection -------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and authenticate (once; concurrent callers share it). Raises ReplicaUnreachable."""
        if self._welcome is None:
            self._welcome = self.loop.create_future()
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await self.loop.create_connection(lambda: self, self.host, self.port)
                    await asyncio.shield(self._welcome)
            except (OSError, TimeoutError, ReplicaUnreachable) as exc:
                self.close()
                error = ReplicaUnreachable(f"cannot open the channel to {self.host}:{self.port}: {exc!r}")
                _fail((self._welcome,), error)
                self._welcome.exception()  # retrieved: concurrent openers see it through shield below
                raise error from None
            return
        await asyncio.shield(self._welcome)
        if self.transport is None:
            raise ReplicaUnreachable(f"connection to {self.host}:{self.port} closed while opening")

    def connection_made(self, transport) -> None:
        if self.closed:  # closed while the connect was in progress
            transport.abort()
            return
        super().connection_made(transport)

    def connection_lost(self, exc) -> None:
        self._lost()
        self.transport = None

    def close(self) -> None:
        """Close now: calls in flight fail at once (they do not wait for a frozen peer to read our writes)."""
        self._lost()
        self.abort()
        self.transport = None

    def _lost(self) -> None:
        self.closed = True
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(ReplicaUnreachable(f"{self.host}:{self.port} closed before welcoming"))
            self._welcome.exception()
        pending, self._pending = self._pending, {}
        _fail(pending.values(), ReplicaConnectionLost(f"connection to replica at {self.host}:{self.port} lost"))
        pings, self._pings = self._pings, {}
        _fail((waiter for _, waiter in pings.values()), ReplicaUnreachable("connection lost before the pong"))

    def frames_received(self, frames) -> None:
        pending = self._pending
        for kind, call_id, payload in frames:
            if kind == KIND_RESPONSE:
                future = pending.pop(call_id, None)
                if future is not None and not future.done():
                    future.set_result(decode_response(payload))
            elif kind == KIND_PONG:
                self._pong(call_id)
            elif kind == KIND_CHALLENGE and len(payload) == NONCE_BYTES and self._welcome is not None:
                self.transport.write(encode_hello(hello_answer(self.token, payload)))
            elif kind == KIND_WELCOME and self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(None)
            else:
                raise FrameError(f"unexpected frame kind {kind} from the replica")

    # -- requests ---------------------------------------------------------------------------------
    async def request(self, request_id: bytes, path: bytes, body: bytes, deadline_ms: int = 0,
                      deadline: float | None = None) -> tuple[int, bytes]:
        """Send one request; -> (status, body). Raises ReplicaUnreachable (never sent), ReplicaConnectionLost,
        or DeadlineReached once `deadline` (clock time) passed (checked by `expire_overdue`)."""
        if self._welcome is None or not self._welcome.done() or self.closed:
            if self.closed:
                raise ReplicaUnreachable(f"connection to {self.host}:{self.port} is closed")
            await self.open()
        self._next_call_id = call_id = (self._next_call_id + 1) & 0xFFFFFFFF
        future = self.loop.create_future()
        self._pending[call_id] = future
        sent = self._sent
        sent.append((call_id, self.clock(), deadline))  # the router's monitor expires overdue calls
        if len(sent) > 4096:
            self.oldest_pending_age(0.0)  # drop answered entries
        self.send(encode_request(call_id, request_id, path, body, deadline_ms))
        try:
            return await future
        finally:
            self._pending.pop(call_id, None)

    def expire_overdue(self, now: float) -> None:
        """Fail calls whose deadline has passed. Run a few times a second by the router's monitor: cheaper
        than a timer per request, at the cost of up to one monitor period of lateness."""
        pending = self._pending
        for call_id, _, deadline in self._sent:
            if deadline is not None and deadline <= now:
                future = pending.get(call_id)
                if future is not None and not future.done():
                    future.set_exception(DeadlineReached())

    # -- health -----------------------------------------------------------------------------------
    def send_ping(self, waiter: asyncio.Future | None = None) -> None:
        """Probe the replica's loop over the data path (only on an open connection); `waiter` gets the pong."""
        if self.transport is None or self.closed:
            return
        self._next_call_id = call_id = (self._next_call_id + 1) & 0xFFFFFFFF
        self.last_ping_at = now = self.clock()
        self._pings[call_id] = (now, waiter)
        self.send(encode_ping(call_id))

    async def ping(self, timeout_s: float) -> bool:
        """Open if needed, ping once and wait up to `timeout_s` for the pong."""
        try:
            await self.open()
            waiter = self.loop.create_future()
            self.send_ping(waiter)
            async with asyncio.timeout(timeout_s):
                await waiter
            return True
        except (ReplicaUnreachable, TimeoutError):
            return False

    def _pong(self, call_id: int) -> None:
        entry = self._pings.pop(call_id, None)
        if entry is not None:
            self.last_pong_at = self.clock()
            if entry[1] is not None and not entry[1].done():
                entry[1].set_result(None)

    def oldest_ping_age(self, now: float) -> float:
        """Seconds the oldest unanswered ping has waited (0 when none is outstanding)."""
        return now - min(sent for sent, _ in self._pings.values()) if self._pings else 0.0

    def oldest_pending_age(self, now: float) -> float:
        """Seconds the oldest unanswered request has waited (0 when none is outstanding)."""
        sent, pending = self._sent, self._pending
        while sent and sent[0][0] not in pending:
            sent.popleft()
        return now - sent[0][1] if sent else 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)
