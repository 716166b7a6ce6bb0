"""The replica's channel against strangers and broken peers (issue 8, items 1-3), over real loopback TCP, no Ray.

A raw client speaks the frame format by hand: it reads the challenge, answers it (or not), and sends what a
stranger would. Every case ends with a proper client still served.
"""

from __future__ import annotations

import asyncio
import struct

import orjson
import pytest

from replicas.callable import UserCallable
from replicas.channel.client import ReplicaConnection, ReplicaUnreachable
from replicas.channel.frames import (
    HEADER,
    KIND_CHALLENGE,
    KIND_REQUEST,
    KIND_WELCOME,
    NONCE_BYTES,
    STATUS_OK,
    encode_hello,
    encode_request,
    hello_answer,
)
from replicas.channel.server import ChannelLimits, ChannelServerProtocol, ReplicaCore

TOKEN = b"channel-token"


def double(payload):
    return {"double": payload["v"] * 2}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def replica():
    loop = asyncio.get_running_loop()
    clock = Clock()
    core = ReplicaCore(loop, UserCallable(double, False, None, None), 8, TOKEN, clock=clock,
                       limits=ChannelLimits(max_request_bytes=1024, handshake_timeout_s=0.3, max_connections=20,
                                            max_unauthenticated=4))
    server = await loop.create_server(lambda: ChannelServerProtocol(core), "127.0.0.1", 0)
    core.port = server.sockets[0].getsockname()[1]
    core.clock = clock
    yield core
    server.close()
    core.close()


async def _raw(core):
    """A raw connection that has read the challenge: (reader, writer, nonce)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", core.port)
    size, kind, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
    assert kind == KIND_CHALLENGE and size == 5 + NONCE_BYTES
    return reader, writer, await reader.readexactly(NONCE_BYTES)


async def _closed_by_peer(reader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1 << 16), 3)
        while data:
            data = await asyncio.wait_for(reader.read(1 << 16), 3)
        return True
    except ConnectionError:
        return True


async def _served(core) -> None:
    conn = ReplicaConnection(asyncio.get_running_loop(), "127.0.0.1", core.port, TOKEN)
    try:
        status, body = await asyncio.wait_for(conn.request(b"ok", b"/", b'{"v": 21}'), 5)
        assert (status, orjson.loads(body)) == (STATUS_OK, {"double": 42})
    finally:
        conn.close()


async def test_a_huge_first_frame_is_refused_without_buffering_it(replica):
    """8 strangers declare 200 MB frames: each is closed after the header; nothing is read into memory."""
    raws = [await _raw(replica) for _ in range(4)]
    for _, writer, _ in raws:
        writer.write(HEADER.pack(200 * 1024 * 1024, KIND_REQUEST, 1) + b"x" * 1000)
    assert all([await _closed_by_peer(reader) for reader, _, _ in raws])
    assert replica.refused_connections >= 4 and replica.in_flight == 0
    await _served(replica)


async def test_idle_unauthenticated_connections_are_closed_and_capped(replica):
    raws = [await asyncio.open_connection("127.0.0.1", replica.port) for _ in range(12)]
    assert all([await _closed_by_peer(reader) for reader, _ in raws])  # over the cap at once, the rest by timeout
    await _closed_until(lambda: not replica.connections)
    assert replica.unauthenticated == 0
    await _served(replica)


async def _closed_until(predicate) -> None:
    for _ in range(300):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def test_a_request_frame_over_the_body_limit_closes_the_connection(replica):
    reader, writer, nonce = await _raw(replica)
    writer.write(encode_hello(hello_answer(TOKEN, nonce)))
    assert HEADER.unpack(await reader.readexactly(HEADER.size))[1] == KIND_WELCOME
    writer.write(encode_request(1, b"r", b"/", b'{"v": "' + b"x" * 70_000 + b'"}'))
    assert await _closed_by_peer(reader)
    assert replica.in_flight == 0
    await _served(replica)


async def test_short_request_frames_close_their_connection_and_are_never_counted(replica):
    """64 authenticated frames shorter than a request header: each closes its own connection; the replica is
    never left BUSY and serves the next client."""
    for i in range(64):
        reader, writer, nonce = await _raw(replica)
        writer.write(encode_hello(hello_answer(TOKEN, nonce)))
        await reader.readexactly(HEADER.size)
        writer.write(HEADER.pack(5 + 3, KIND_REQUEST, i) + b"abc")
        assert await _closed_by_peer(reader)
    assert replica.in_flight == 0 and replica.processed == 0
    for _ in range(3):
        await _served(replica)


async def test_a_sniffed_hello_cannot_be_replayed(replica):
    reader, writer, nonce = await _raw(replica)
    sniffed = encode_hello(hello_answer(TOKEN, nonce))
    writer.close()
    reader, writer, _ = await _raw(replica)  # a fresh nonce
    writer.write(sniffed)
    assert await _closed_by_peer(reader)


async def test_the_token_in_clear_is_not_a_hello(replica):
    """What a client that read the token from Redis would send without the HMAC."""
    reader, writer, _ = await _raw(replica)
    writer.write(encode_hello(TOKEN))
    assert await _closed_by_peer(reader)


async def test_a_rotated_token_keeps_the_old_one_for_its_grace_period(replica):
    loop = asyncio.get_running_loop()
    replica.tokens.rotate(b"new-token", old_valid_s=30.0)
    for token in (b"new-token", TOKEN):
        conn = ReplicaConnection(loop, "127.0.0.1", replica.port, token)
        assert (await conn.request(b"r", b"/", b'{"v": 1}'))[0] == STATUS_OK
        conn.close()
    replica.clock.now += 30.0
    with pytest.raises(ReplicaUnreachable):
        await ReplicaConnection(loop, "127.0.0.1", replica.port, TOKEN).request(b"r", b"/", b'{"v": 1}')
    conn = ReplicaConnection(loop, "127.0.0.1", replica.port, b"new-token")
    assert (await conn.request(b"r", b"/", b'{"v": 1}'))[0] == STATUS_OK
    conn.close()


def test_frame_header_struct_is_what_the_raw_client_assumes():
    assert HEADER.size == 9 and struct.calcsize("!IBI") == 9
