"""The replica channel against a stranger on the same machine, on a live platform (issue 8, items 1-3).

Each case attacks the quickstart's v1 replica directly on its channel port (from `raygate status`), then checks
the replica is the same process, holds no more memory or sockets than the attack's limits allow, and still
answers `/linear` pinned to v1 through the gateways.
"""

from __future__ import annotations

import asyncio
import os
import socket

import orjson
import pytest
import ray
from aiohttp import ClientSession

from replicas.channel.frames import (
    HEADER,
    KIND_CHALLENGE,
    KIND_REQUEST,
    KIND_WELCOME,
    NONCE_BYTES,
    encode_hello,
    hello_answer,
)

pytestmark = pytest.mark.integration

BODY = orjson.dumps({"x": [1.0] * 16})


def _v1(platform) -> dict:
    status = platform.platform.status()
    app = next(a for a in status["apps"] if a["name"] == "quickstart")
    version = next(v for v in app["deployments"][0]["versions"] if v["name"] == "v1")
    return next(r for r in version["replicas"] if r["state"] == "RUNNING" and r["pid"] > 0)


def _address(replica: dict) -> tuple[str, int]:
    host, port = replica["address"].rsplit(":", 1)
    return host, int(port)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _leaked_token(platform, redis_url: str) -> bytes:
    """The channel token as any local user could read it: from the controller's saved state in Redis (or, where
    the state is not there, from the routing table every gateway holds)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.get("raygate:controller:state")
    finally:
        client.close()
    if raw and "channel_token" in orjson.loads(raw):
        return bytes.fromhex(orjson.loads(raw)["channel_token"])
    return ray.get(platform.platform.controller.current_table.remote()).channel_token


async def _challenge(host: str, port: int):
    reader, writer = await asyncio.open_connection(host, port)
    size, kind, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
    assert kind == KIND_CHALLENGE and size == 5 + NONCE_BYTES
    return reader, writer, await reader.readexactly(NONCE_BYTES)


async def _closed(reader, timeout_s: float = 10.0) -> bool:
    """True once the replica closed the connection (EOF or reset) without sending anything but a challenge."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(1 << 16), timeout_s)
            if not data:
                return True
            if HEADER.unpack_from(data)[1] == KIND_WELCOME:
                return False
    except ConnectionError:
        return True


async def _v1_serves(platform, n: int = 20) -> None:
    async with ClientSession() as session:
        for _ in range(n):
            async with session.post(platform.url + "/linear", data=BODY,
                                    headers={"X-Raygate-Version": "v1"}) as response:
                assert response.status == 200, await response.text()
                assert response.headers["X-Raygate-Version"] == "v1"


async def _same_process(platform, victim: dict) -> None:
    assert _v1(platform)["replica_id"] == victim["replica_id"], "the replica was replaced"
    await _v1_serves(platform)


async def test_sockets_declaring_200_mb_frames_are_closed_without_buffering(platform):
    victim = _v1(platform)
    host, port = _address(victim)
    rss_before = _rss_mb(victim["pid"])
    attackers = [await _challenge(host, port) for _ in range(8)]
    for _, writer, _ in attackers:
        writer.write(HEADER.pack(200 * 1024 * 1024, KIND_REQUEST, 1) + os.urandom(64 * 1024))
    assert all([await _closed(reader) for reader, _, _ in attackers])
    assert _rss_mb(victim["pid"]) - rss_before < 50
    await _same_process(platform, victim)


async def test_a_thousand_idle_sockets_do_not_pin_the_replicas_descriptors(platform):
    victim = _v1(platform)
    host, port = _address(victim)
    fds_before = _fds(victim["pid"])
    sockets = []
    for _ in range(1000):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            pass
        sockets.append(sock)
    try:
        async def settled():
            for _ in range(200):
                if _fds(victim["pid"]) <= fds_before + 2:
                    return True
                await asyncio.sleep(0.05)
            return False

        assert await settled(), f"{_fds(victim['pid'])} descriptors open, {fds_before} before"
        await _same_process(platform, victim)
    finally:
        for sock in sockets:
            sock.close()


async def test_short_request_frames_then_normal_traffic_is_served(platform, redis_url):
    """64 authenticated frames shorter than a request header: each closes its connection; the replica never
    counts them, never answers BUSY because of them, and serves what comes next."""
    victim = _v1(platform)
    host, port = _address(victim)
    token = _leaked_token(platform, redis_url)
    for i in range(64):
        reader, writer, nonce = await _challenge(host, port)
        writer.write(encode_hello(hello_answer(token, nonce)))
        assert HEADER.unpack(await reader.readexactly(HEADER.size))[1] == KIND_WELCOME
        writer.write(HEADER.pack(5 + 3, KIND_REQUEST, i) + b"abc")
        assert await _closed(reader)
    await _same_process(platform, victim)
    actor = ray.get_actor(victim["replica_id"], namespace="raygate")
    assert ray.get(actor.stats.remote())["in_flight"] == 0


async def test_a_sniffed_hello_cannot_be_replayed(platform, redis_url):
    victim = _v1(platform)
    host, port = _address(victim)
    token = _leaked_token(platform, redis_url)
    reader, writer, nonce = await _challenge(host, port)
    sniffed = encode_hello(hello_answer(token, nonce))  # what a sniffer saw on a real connection
    writer.close()
    reader, writer, _ = await _challenge(host, port)
    writer.write(sniffed)
    assert await _closed(reader)
    await _same_process(platform, victim)


async def test_the_token_from_redis_without_the_hmac_is_refused(platform, redis_url):
    victim = _v1(platform)
    host, port = _address(victim)
    token = _leaked_token(platform, redis_url)
    reader, writer, _ = await _challenge(host, port)
    writer.write(encode_hello(token))  # the old clear-text hello
    assert await _closed(reader)
    await _same_process(platform, victim)
