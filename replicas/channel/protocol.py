"""The framing both ends of the direct channel share: decoding, write batching per loop pass, TCP_NODELAY.

`FramedProtocol` turns bytes into frames and hands each read's frames to `frames_received` at once; frames
sent during one event-loop pass leave in one `writelines`, so a busy peer batches without a timer. Both the
router's `ReplicaConnection` and the replica's `ChannelServerProtocol` subclass it.
"""

from __future__ import annotations

import asyncio
import socket

from replicas.channel.frames import MAX_FRAME_BYTES, FrameDecoder, FrameError

__all__ = ["FramedProtocol"]


class FramedProtocol(asyncio.Protocol):
    """Length-prefixed frames over one TCP connection; a frame that does not decode aborts the connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_frame)
        self._out: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
            self.frames_received(frames)
        except FrameError:
            self.abort()

    def frames_received(self, frames: list[tuple[int, int, bytes]]) -> None:
        """Handle one read's frames; raise FrameError to drop the connection."""
        raise NotImplementedError

    def send(self, frame: bytes) -> None:
        """Queue `frame`; everything queued in this loop pass leaves in one write."""
        if self.transport is None or self.transport.is_closing():
            return
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def abort(self) -> None:
        """Drop the connection now, without waiting for buffered writes (a frozen peer never reads them)."""
        if self.transport is not None:
            self.transport.abort()
