"""The router's side of the direct channel: one multiplexed connection per replica.

Requests written in one event-loop pass leave in one `writelines`, and responses that arrive together are
resolved together, so batching happens without a timer and without waiting.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque

from replicas.channel.frames import (
    KIND_PONG,
    KIND_RESPONSE,
    FrameDecoder,
    FrameError,
    decode_response,
    encode_hello,
    encode_ping,
    encode_request,
)

__all__ = ["ReplicaConnection", "ReplicaUnreachable", "ReplicaConnectionLost", "DeadlineReached", "expire"]


class ReplicaUnreachable(ConnectionError):
    """Could not connect: the request was never sent, so it is always safe to try another replica."""


class ReplicaConnectionLost(ConnectionError):
    """The connection closed after the request was sent: retry only if the deployment is idempotent."""


class DeadlineReached(TimeoutError):
    """The request's deadline passed while it waited (for a replica slot or for an answer)."""


def expire(future: asyncio.Future) -> None:
    """Timer callback: fail `future` with DeadlineReached unless it is already done."""
    if not future.done():
        future.set_exception(DeadlineReached())


class ReplicaConnection(asyncio.Protocol):
    """A lazily opened, multiplexed connection to one replica. Once closed it stays closed: make a new one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, token: bytes,
                 connect_timeout_s: float = 1.0) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.token = token
        self.connect_timeout_s = connect_timeout_s
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._connecting: asyncio.Future | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_call_id = 0
        self._out: list[bytes] = []
        self._decoder = FrameDecoder()
        self._sent: deque[tuple] = deque()  # (call id, monotonic send time, deadline), oldest first
        self._pings: dict[int, float] = {}  # ping call id -> monotonic send time
        self.last_ping_at = 0.0
        self.last_pong_at = 0.0

    # -- connection -------------------------------------------------------------------------------
    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = self.loop.create_future()
            try:
                await asyncio.wait_for(self.loop.create_connection(lambda: self, self.host, self.port),
                                       self.connect_timeout_s)
            except (OSError, asyncio.TimeoutError) as exc:
                self.closed = True
                error = ReplicaUnreachable(f"cannot connect to replica at {self.host}:{self.port}: {exc!r}")
                self._connecting.set_exception(error)
                self._connecting.exception()  # mark retrieved
                raise error from None
            self._connecting.set_result(None)
            return
        await asyncio.shield(self._connecting)

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(encode_hello(self.token))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.transport = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ReplicaConnectionLost(
                    f"connection to replica at {self.host}:{self.port} lost: {exc!r}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- requests ---------------------------------------------------------------------------------
    async def request(self, request_id: bytes, path: bytes, body: bytes, deadline_ms: int = 0,
                      deadline: float | None = None) -> tuple[int, bytes]:
        """Send one request; -> (status, body). Raises ReplicaUnreachable, ReplicaConnectionLost, or
        DeadlineReached when `deadline` (loop time) passes first."""
        if self.transport is None:
            if self.closed:
                raise ReplicaUnreachable(f"connection to {self.host}:{self.port} is closed")
            await self._connect()
            if self.transport is None:
                raise ReplicaUnreachable(f"connection to {self.host}:{self.port} closed while opening")
        self._next_call_id = call_id = (self._next_call_id + 1) & 0xFFFFFFFF
        future = self.loop.create_future()
        self._pending[call_id] = future
        sent = self._sent
        sent.append((call_id, time.monotonic(), deadline))  # the router's monitor expires overdue calls
        if len(sent) > 4096:
            self.oldest_pending_age(0.0)  # drop answered entries
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(encode_request(call_id, request_id, path, body, deadline_ms))
        try:
            return await future
        finally:
            self._pending.pop(call_id, None)

    def expire_overdue(self, loop_now: float) -> None:
        """Fail calls whose deadline (loop time) has passed. Run a few times a second by the router's
        monitor: cheaper than a timer per request, at the cost of up to one monitor period of lateness."""
        pending = self._pending
        for call_id, _, deadline in self._sent:
            if deadline is not None and deadline <= loop_now:
                future = pending.get(call_id)
                if future is not None:
                    expire(future)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and out:
            self.transport.writelines(out)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FrameError:
            self.transport.close()
            return
        pending = self._pending
        for kind, call_id, payload in frames:
            if kind == KIND_RESPONSE:
                future = pending.pop(call_id, None)
                if future is not None and not future.done():
                    future.set_result(decode_response(payload))
            elif kind == KIND_PONG:
                if self._pings.pop(call_id, None) is not None:
                    self.last_pong_at = time.monotonic()

    # -- health -----------------------------------------------------------------------------------
    def send_ping(self) -> None:
        """Probe the replica's loop over the data path (only on an open connection)."""
        if self.transport is None:
            return
        self._next_call_id = call_id = (self._next_call_id + 1) & 0xFFFFFFFF
        self.last_ping_at = now = time.monotonic()
        self._pings[call_id] = now
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(encode_ping(call_id))

    def oldest_ping_age(self, now: float) -> float:
        """Seconds the oldest unanswered ping has waited (0 when none is outstanding)."""
        return now - min(self._pings.values()) if self._pings else 0.0

    def oldest_pending_age(self, now: float) -> float:
        """Seconds the oldest unanswered request has waited (0 when none is outstanding)."""
        sent, pending = self._sent, self._pending
        while sent and sent[0][0] not in pending:
            sent.popleft()
        return now - sent[0][1] if sent else 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)
