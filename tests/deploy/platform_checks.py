"""Helpers for integration tests on a live platform: status lookups and bounded waits (no sleeps as
synchronisation: every wait polls a condition with a deadline)."""

from __future__ import annotations

import asyncio
import time

import orjson
import ray
from aiohttp import ClientSession

__all__ = ["admin_post", "gateway_ejections", "new_ejections", "post_json", "replica_ids", "version_of", "wait_for",
           "wait_settled"]


def version_of(status: dict, app: str, deployment: str, version: str) -> dict:
    a = next(a for a in status["apps"] if a["name"] == app)
    d = next(d for d in a["deployments"] if d["name"] == deployment)
    return next(v for v in d["versions"] if v["name"] == version)


def gateway_ejections(platform, replica_prefix: str = "") -> list[dict]:
    """Every serving gateway's recent ejections of replicas whose id starts with `replica_prefix` (`replica_id`,
    `reason`, `at`, `for_s`, `readmitted_at`), each with the `gateway_pid` of the gateway that recorded it.
    `platform`: a `deploy.platform.Platform` (the session fixture's `.platform`)."""
    stats = ray.get([g.stats.remote() for g in platform.gateways()])
    return [dict(e, gateway_pid=s["pid"]) for s in stats for e in s["ejections"]
            if e["replica_id"].startswith(replica_prefix)]


def new_ejections(ejections: list[dict], known: list[dict]) -> list[dict]:
    """`ejections` that are not among `known` (an earlier read), told apart by gateway, time and reason: a record
    changes when its replica is readmitted (`readmitted_at`)."""
    seen = {(e["gateway_pid"], e["at"], e["reason"]) for e in known}
    return [e for e in ejections if (e["gateway_pid"], e["at"], e["reason"]) not in seen]


def replica_ids(status: dict, app: str | None = None) -> set[str]:
    return {r["replica_id"] for a in status["apps"] if app in (None, a["name"]) for d in a["deployments"]
            for v in d["versions"] for r in v["replicas"]}


async def wait_for(condition, timeout_s: float, what: str, period_s: float = 0.1):
    """Poll `condition()` (sync or async) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(period_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


def settled(status: dict) -> bool:
    """Every version at its target, all replicas RUNNING, nothing rolling, no apply running."""
    return status["apply"].get("state") != "applying" and all(
        v["running"] == v["target"] == len(v["replicas"]) and not v["rolling"]
        for a in status["apps"] for d in a["deployments"] for v in d["versions"])


async def wait_settled(platform, timeout_s: float = 90.0) -> dict:
    def check():
        status = platform.status()
        return status if settled(status) else None

    return await wait_for(check, timeout_s, "a settled platform", period_s=0.25)


async def admin_post(url: str, token: str, path: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with ClientSession() as session:
        async with session.post(url + path, data=data, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"}) as response:
            return response.status, orjson.loads(await response.read())


async def post_json(session: ClientSession, url: str, doc) -> tuple[int, bytes]:
    async with session.post(url, data=orjson.dumps(doc), headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.read()
