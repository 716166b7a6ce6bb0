"""The HTTP edge against strangers, in one process over raw sockets: slow heads and bodies are cut off, bytes
that are not UTF-8 get a 400 naming the header, a bad bearer token is a 401, aiohttp's own refusals and the
connection cap answer in the JSON error shape. (The same cases against a live platform:
tests/adversarial/test_http_edge.py.)
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.config import GatewayConfig
from replicas.routing.table import VersionRoute
from tests.gateway.test_http_app import Echo, Harness

CONFIG = GatewayConfig(max_body_bytes=1024, access_log=False, admin_token="adm", header_timeout_s=0.3,
                       max_connections=8)


@pytest.fixture
async def edge():
    h = Harness()
    replica = await h.replica(Echo(), "r1")
    await h.start([VersionRoute("v1", 100, (replica,))], config=CONFIG, request_timeout_s=0.5)
    yield h
    await h.close()


async def raw_exchange(port: int, data: bytes, timeout_s: float = 5.0) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the whole answer until the server closes; (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
    return parse_answer(raw)


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """What the server sent before closing. A reset counts as closed with nothing sent: a header written just
    as the server closes makes the kernel answer with a reset instead of a plain end of stream."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s)
    except ConnectionResetError:
        return b""


async def read_answer(reader: asyncio.StreamReader, timeout_s: float) -> tuple[int, dict, bytes]:
    """One answer, read by its Content-Length (not to the end of the stream, which a reset may cut short)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    status, headers, _ = parse_answer(head)
    return status, headers, await reader.readexactly(int(headers.get("content-length", 0)))


def parse_answer(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def request(path: str, headers: list[bytes], body: bytes = b"{}", method: bytes = b"POST") -> bytes:
    head = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: x", b"Content-Length: " + str(len(body)).encode(),
            b"Connection: close", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.mark.parametrize("header", [b"X-Request-Id", b"X-Raygate-Split-Key", b"X-Raygate-Version"])
async def test_header_bytes_that_are_not_utf8_get_a_400_naming_the_header(edge, header):
    status, headers, body = await raw_exchange(edge.port, request("/api", [header + b": ab\xffcd"]))
    error = orjson.loads(body)["error"]
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert error["code"] == "bad_request" and header.decode() in error["message"]


async def test_valid_utf8_split_key_is_accepted(edge):
    status, _, _ = await raw_exchange(edge.port, request("/api", ["X-Raygate-Split-Key: clé".encode()]))
    assert status == 200


async def test_bearer_token_with_bytes_that_are_not_utf8_is_a_401(edge):
    status, _, body = await raw_exchange(edge.port, request("/-/admin/status", [b"Authorization: Bearer \xff"],
                                                            b"", b"GET"))
    assert status == 401 and orjson.loads(body)["error"]["code"] == "unauthorized"


async def test_aiohttp_refusals_of_too_many_or_too_long_headers_are_json(edge):
    many = [f"X-H{i}: v".encode() for i in range(200)]
    for headers in (many, [b"X-Long: " + b"v" * 20000]):
        status, answer_headers, body = await raw_exchange(edge.port, request("/api", headers))
        assert 400 <= status < 500 and answer_headers["content-type"].startswith("application/json")
        assert orjson.loads(body)["error"]["message"]


async def test_a_malformed_request_line_is_a_json_400(edge):
    status, _, body = await raw_exchange(edge.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400 and orjson.loads(body)["error"]["code"] == "bad_request"


async def test_a_connection_that_never_finishes_its_head_is_closed(edge):
    """Slowloris: the head arrives one header at a time and never ends; the server closes the connection
    (read returns EOF) once header_timeout_s has passed, without an answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\n")

    async def trickle():
        for i in range(1000):
            writer.write(f"X-Slow-{i}: 1\r\n".encode())
            await asyncio.sleep(0.05)

    feeding = asyncio.ensure_future(trickle())
    try:
        assert await read_until_closed(reader, 10) == b""
    finally:
        feeding.cancel()
        writer.close()


async def test_a_body_trickled_past_the_deadline_ends_with_408(edge):
    """Content-Length 100, one byte every 50 ms: the body read counts against the 0.5 s deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")

    async def trickle():
        for _ in range(100):
            writer.write(b" ")
            await asyncio.sleep(0.05)

    feeding = asyncio.ensure_future(trickle())
    try:
        status, _, body = await read_answer(reader, 10)
    finally:
        feeding.cancel()
        writer.close()
    assert status == 408 and orjson.loads(body)["error"]["code"] == "request_timeout"
    assert edge.cores[0].in_flight == 0


async def test_connections_over_the_cap_get_503_json_and_are_closed(edge):
    """max_connections=8: eight idle connections are held; the ninth is answered 503 with Retry-After."""
    held = [await asyncio.open_connection("127.0.0.1", edge.port) for _ in range(8)]
    try:
        status, headers, body = await raw_exchange(edge.port, request("/api", []))
        assert status == 503 and headers["retry-after"] == "1"
        assert orjson.loads(body)["error"]["code"] == "overloaded"
    finally:
        for _, writer in held:
            writer.close()


async def test_expect_100_continue_on_a_proxied_path_gets_its_continue_before_the_body(edge):
    """The front door sends proxied paths straight to the proxy, but a request with `Expect: 100-continue` still
    goes through the app, which answers `100 Continue` before the client sends its body (curl waits for it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b'{"a": 1}')
        status, headers, body = await read_answer(reader, 5)
    finally:
        writer.close()
    assert status == 200 and orjson.loads(body) == {"echo": {"a": 1}} and headers["x-raygate-version"] == "v1"


async def test_a_whole_body_over_the_limit_sent_with_its_head_is_a_413(edge):
    """Head and a 2,000-byte body in one write (already complete when the proxy reads it): still refused."""
    status, _, body = await raw_exchange(edge.port, request("/api", [], b"1" * 2000))
    assert status == 413 and orjson.loads(body)["error"]["code"] == "payload_too_large"
    assert edge.cores[0].in_flight == 0 and edge.cores[0].processed == 0
