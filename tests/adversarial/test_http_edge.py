"""The HTTP edge against a stranger, on a live platform (real Ray, two gateway processes on one port): slow
heads and bodies are cut off, undecodable header bytes and bad bearer bytes get clear JSON errors, aiohttp's
own refusals are JSON, an oversize chunked body is a 413, and a storm of scrapes breaks no request. Behaviour
only: the figures (how long, how much slower) are bench/metrics_scrape.py's and bench/gateway.py's.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import ClientSession, TCPConnector

from gateway.config import GatewayConfig
from tests.conftest import PLATFORM_HEADER_TIMEOUT_S
from tests.gateway.test_http_edge import (
    raw_exchange,
    read_answer,
    read_until_closed,
    request,
)

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = PLATFORM_HEADER_TIMEOUT_S  # the platform fixture's gateways' (shorter than the default)
LINEAR = orjson.dumps({"x": [1.0] * 16})


def _port(platform) -> int:
    return urlsplit(platform.url).port


async def test_500_slowloris_sockets_are_closed_by_the_header_timeout(platform):
    """500 connections each send a partial head, then a header every second, never finishing: every one is
    closed by the gateway (EOF, no answer) within the header timeout plus a margin, and a normal request is
    answered meanwhile."""
    port = _port(platform)
    sockets = []
    for _ in range(500):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /linear HTTP/1.1\r\nHost: x\r\n")
        sockets.append((reader, writer))

    async def trickle():
        for i in range(int(HEADER_TIMEOUT_S) * 3):
            await asyncio.sleep(1)
            for _, writer in sockets:
                if not writer.is_closing():
                    writer.write(f"X-Slow-{i}: 1\r\n".encode())

    feeding = asyncio.ensure_future(trickle())
    try:
        async with ClientSession() as session:
            async with session.post(platform.url + "/linear", data=LINEAR) as r:
                assert r.status == 200
        answers = await asyncio.gather(*(read_until_closed(reader, HEADER_TIMEOUT_S + 15)
                                         for reader, _ in sockets), return_exceptions=True)
    finally:
        feeding.cancel()
        for _, writer in sockets:
            writer.close()
    closed = sum(1 for answer in answers if answer == b"")
    assert closed == 500, [a for a in answers if a != b""][:3]


async def test_a_body_sent_at_one_byte_per_second_is_ended_by_the_deadline(platform):
    """/plain-env has a 2 s deadline; a 100-byte body at 1 byte/s gets 408 request_timeout when it passes, not
    a replica call and not a wait for the 100 s the body would take."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(platform))
    writer.write(b"POST /plain-env HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")

    async def trickle():
        for _ in range(100):
            writer.write(b" ")
            await asyncio.sleep(1)

    feeding = asyncio.ensure_future(trickle())
    try:
        status, _, body = await read_answer(reader, 40)
    finally:
        feeding.cancel()
        writer.close()
    assert status == 408 and orjson.loads(body)["error"]["code"] == "request_timeout"


@pytest.mark.parametrize("header", [b"X-Request-Id", b"X-Raygate-Split-Key", b"X-Raygate-Version"])
async def test_header_bytes_that_are_not_utf8_are_a_400_naming_the_header(platform, header):
    status, headers, body = await raw_exchange(_port(platform), request("/linear", [header + b": a\xffb"], LINEAR))
    error = orjson.loads(body)["error"]
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert header.decode() in error["message"]


async def test_bearer_bytes_that_are_not_utf8_are_a_401(platform):
    for path in ("/-/admin/status", "/-/admin/not-an-endpoint"):
        status, _, body = await raw_exchange(_port(platform), request(path, [b"Authorization: Bearer \xff\xfe"],
                                                                      b"", b"GET"))
        assert status == 401 and orjson.loads(body)["error"]["code"] == "unauthorized"


async def test_too_many_or_too_long_headers_are_json_errors(platform):
    for headers in ([f"X-H{i}: v".encode() for i in range(200)], [b"X-Long: " + b"v" * 20000]):
        status, answer_headers, body = await raw_exchange(_port(platform), request("/linear", headers, LINEAR))
        assert 400 <= status < 500 and answer_headers["content-type"].startswith("application/json")
        assert orjson.loads(body)["error"]["code"]


async def test_an_oversize_chunked_body_is_a_413_json_error(platform):
    limit = GatewayConfig().max_body_bytes

    async def chunks():
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    async with ClientSession() as session:
        for path, headers in (("/linear", {}), ("/-/admin/deploy", {"Authorization": f"Bearer {platform.admin_token}"})):
            async with session.post(platform.url + path, data=chunks(), headers=headers) as r:
                assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large", path


async def test_a_storm_of_scrapes_breaks_no_request(platform):
    """/metrics scraped 600 times (200 at a time) while 300 requests run: every request and scrape is a 200."""
    async with ClientSession(connector=TCPConnector(limit=300)) as session:
        async def post():
            async with session.post(platform.url + "/linear", data=LINEAR) as r:
                await r.read()
                return r.status

        async def scrape():
            async with session.get(platform.url + "/metrics") as r:
                text = await r.text()
                return r.status if "raygate_requests_total" in text else -1

        results = await asyncio.gather(*(post() for _ in range(300)), *(scrape() for _ in range(600)))
    assert results == [200] * 900
