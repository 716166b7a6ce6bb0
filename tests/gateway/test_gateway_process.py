"""A gateway process on the live platform: what it reports (contract 7) and what survives its death.

Counters live in the node's shared metric files, written by each process a few times a second; a process that
is SIGKILLed leaves its file behind, so the node's scrape keeps counting what it served.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import ray
from aiohttp import ClientSession, TCPConnector

pytestmark = pytest.mark.integration

from deploy.status import GATEWAY_FIELDS

STATS_KEYS = set(GATEWAY_FIELDS)


def _errors_total(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('raygate_requests_total{app="errors"'))


async def _scrape(session) -> float:
    async with session.get("/metrics") as r:
        assert r.status == 200
        return _errors_total(await r.text())


async def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_stats_report_each_gateway_process(platform):
    stats = ray.get([g.stats.remote() for g in platform.platform.gateways()], timeout=30)
    assert stats and all(set(s) == STATS_KEYS for s in stats)
    assert all(s["state"] == "serving" and s["pid"] > 0 and s["table_version"] > 0 for s in stats)
    assert sorted(s["index"] for s in stats) == list(range(len(stats)))


async def test_counters_survive_a_gateway_kill(platform):
    """Requests spread over both processes are counted; one process is SIGKILLed once its samples are in the
    files; the scrape (answered by whichever process lives, then by its replacement too) never counts less."""
    gateways = platform.platform.gateways()
    async with ClientSession(platform.url) as session:
        before = await _scrape(session)
    for _ in range(30):  # fresh connections: SO_REUSEPORT spreads them over both processes
        async with ClientSession(platform.url, connector=TCPConnector(force_close=True)) as session:
            async with session.post("/flaky", data=b"{}") as r:
                assert r.status == 200
    stats = ray.get([g.stats.remote() for g in gateways], timeout=30)
    victim = next(s for s in stats if s["served"] > 0 and s["pid"] > 0)
    async with ClientSession(platform.url) as session:
        counted = await _wait_for(lambda: _at_least(session, before + 30), 10, "the samples to reach the files")
        os.kill(victim["pid"], signal.SIGKILL)

        async def replaced():
            try:
                pids = {s["pid"] for s in ray.get([g.stats.remote() for g in gateways], timeout=5)}
            except Exception:  # the dead one is being restarted
                return False
            return victim["pid"] not in pids and len(pids) == len(gateways)

        await _wait_for(replaced, 60, "the killed gateway's replacement")
        for _ in range(10):
            async with ClientSession(platform.url, connector=TCPConnector(force_close=True)) as fresh:
                assert await _scrape(fresh) >= counted


async def _at_least(session, value: float) -> float | None:
    total = await _scrape(session)
    return total if total >= value else None


async def test_the_nodes_spare_takes_over_a_killed_gateways_index(platform):
    """The warm spare (already running, not listening) serves the killed process's index: the replacement is a
    process that existed before the kill, not one Ray started after it; Ray's restart becomes the next spare."""
    def status_gateways() -> list[dict]:
        return platform.platform.status()["gateways"]

    async def settled():  # two serving and the spare (an earlier test may have killed one)
        rows = status_gateways()
        return rows if sorted((g["index"], g["state"]) for g in rows) == [(-1, "spare"), (0, "serving"),
                                                                          (1, "serving")] else None

    before = await _wait_for(settled, 60, "two serving gateways and a spare")
    spare = next(g["pid"] for g in before if g["state"] == "spare")
    victim = next(g for g in before if g["index"] == 0)
    os.kill(victim["pid"], signal.SIGKILL)

    async def taken_over():
        return any(g["index"] == 0 and g["pid"] == spare and g["state"] == "serving" for g in status_gateways())

    await _wait_for(taken_over, 30, "the spare serving index 0")
    after = await _wait_for(settled, 60, "a new spare")
    assert {g["pid"] for g in after} & {victim["pid"]} == set()
    assert next(g["pid"] for g in after if g["state"] == "spare") not in {g["pid"] for g in before}
