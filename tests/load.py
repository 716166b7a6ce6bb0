"""A fixed-rate HTTP load for integration tests: every request's start, end and status."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

__all__ = ["Sample", "steady_load"]


@dataclass(frozen=True)
class Sample:
    started: float  # time.time() when sent
    seconds: float  # latency
    status: int  # HTTP status; 0 for a connection error
    replica: str  # X-Raygate-Replica, when answered


async def steady_load(url: str, rate: float, duration_s: float, payload=None, fresh_connections: bool = False,
                      timeout_s: float = 15.0) -> list[Sample]:
    """Send `rate` requests per second for `duration_s`, without waiting for answers (open loop)."""
    body = orjson.dumps(payload if payload is not None else {"x": [1.0] * 16})
    samples: list[Sample] = []
    connector = TCPConnector(limit=256, force_close=fresh_connections)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=timeout_s)) as session:
        async def one() -> None:
            started, clock = time.time(), time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    samples.append(Sample(started, time.perf_counter() - clock, response.status,
                                          response.headers.get("X-Raygate-Replica", "")))
            except (ClientError, asyncio.TimeoutError, OSError):
                samples.append(Sample(started, time.perf_counter() - clock, 0, ""))

        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * duration_s)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return samples
