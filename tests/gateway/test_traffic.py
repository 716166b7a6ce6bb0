"""Traffic splitting on a real platform: runtime weights through the CLI, sticky keys with minimal movement,
pinning, mirroring, and per-version traffic in status."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest
import ray
from aiohttp import ClientSession

from tests.deploy.platform_checks import admin_post, gateway_ejections, wait_for

pytestmark = pytest.mark.integration


async def _version_of(session, url, **headers) -> tuple[int, str]:
    async with session.post(url, data=orjson.dumps({"x": [1.0] * 16}),
                            headers={"Content-Type": "application/json", **headers}) as response:
        await response.read()
        return response.status, response.headers.get("X-Raygate-Version", "")


def _split(platform, *weights: str) -> str:
    result = subprocess.run([sys.executable, "-m", "deploy.cli", "--url", platform.url, "--token",
                             platform.admin_token, "split", "quickstart", "linear", *weights],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def _keys_to_versions(session, url, keys) -> dict[str, str]:
    """The version each key's request lands on (16 requests at a time: stickiness does not depend on order)."""
    semaphore = asyncio.Semaphore(16)

    async def one(key):
        async with semaphore:
            status, version = await _version_of(session, url, **{"X-Raygate-Split-Key": key})
        assert status == 200
        return key, version

    return dict(await asyncio.gather(*(one(key) for key in keys)))


async def _admin_split(platform, **weights: int) -> None:
    """The same split through the admin API (what `raygate split` posts), without a CLI process."""
    code, answer = await admin_post(platform.url, platform.admin_token, "/-/admin/split",
                                    {"app": "quickstart", "deployment": "linear", "weights": weights})
    assert code == 200, answer


async def _gateways_caught_up(platform, timeout_s: float = 10.0) -> None:
    """Every gateway runs the controller's current table (bounded poll; how fast is bench territory)."""
    wanted = platform.platform.status()["table_version"]
    deadline = time.monotonic() + timeout_s
    while True:
        versions = [s["table_version"] for s in ray.get([g.stats.remote() for g in platform.platform.gateways()])]
        if min(versions) >= wanted:
            return
        assert time.monotonic() < deadline, f"gateways at {versions}, wanted {wanted}"
        await asyncio.sleep(0.05)


def _linear_ejections(platform) -> list[dict]:
    """Every gateway's recorded ejections of quickstart/linear replicas (`at` wall seconds, out for at least
    `for_s`, `readmitted_at` None until a probe brought it back): while one of a version's replicas is out, its
    keys legitimately fall back to the other version."""
    return gateway_ejections(platform.platform, "quickstart.linear.")


def _linear(platform) -> dict:
    return next(d for a in platform.platform.status()["apps"] if a["name"] == "quickstart"
                for d in a["deployments"] if d["name"] == "linear")


def _settled_version(platform) -> bool:
    return all(v["running"] == v["target"] and all(r["state"] == "RUNNING" for r in v["replicas"])
               for v in _linear(platform)["versions"])


async def _every_linear_replica_in_choice(platform, timeout_s: float = 30.0) -> float:
    """Wait (bounded) until no gateway keeps a linear replica of the table out of choice (ejected, or on
    probation past its `for_s` while probes fail); -> the wall time just before the check that found none."""
    deadline = time.monotonic() + timeout_s
    while True:
        checked = time.time()
        current = {r["replica_id"] for v in _linear(platform)["versions"] for r in v["replicas"]}
        out = [e for e in _linear_ejections(platform) if e["readmitted_at"] is None and e["replica_id"] in current]
        if not out:
            return checked
        assert time.monotonic() < deadline, f"linear replicas still out of choice: {out}"
        await asyncio.sleep(0.05)


async def _sticky_read(platform, session, url, keys, twice: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """Every key's version, read twice (once unless `twice`: the second read then repeats the first), with every
    linear replica in the table and in choice on every gateway; measured again (at most 5 times) when a replica
    was ejected since that check (a replica fault is not what this test is about: the failover tests are)."""
    overlapping: list[dict] = []
    for _ in range(5):
        await wait_for(lambda: _settled_version(platform), 30, "quickstart/linear running")
        checked = await _every_linear_replica_in_choice(platform)
        first = await _keys_to_versions(session, url, keys)
        second = await _keys_to_versions(session, url, keys) if twice else first
        overlapping = [e for e in _linear_ejections(platform) if e["at"] >= checked]
        if not overlapping:
            return first, second
    raise AssertionError(f"linear replicas kept failing: {overlapping}")


def _moved(platform, first: dict[str, str], second: dict[str, str]) -> str:
    """What an assertion says when keys changed version: which, and what every gateway ran at the time."""
    changed = {k: (first[k], second[k]) for k in first if first[k] != second[k]}
    gateways = [{k: s[k] for k in ("pid", "index", "state", "table_version")}
                for s in ray.get([g.stats.remote() for g in platform.platform.gateways()])]
    return (f"{len(changed)} keys moved: {dict(list(changed.items())[:10])}; gateways {gateways}; "
            f"table {platform.platform.status()['table_version']}; linear ejections {_linear_ejections(platform)}")


async def test_weights_change_at_runtime_with_sticky_keys_and_minimal_movement(platform):
    """`raygate split` reaches every gateway; a key keeps its version while weights stay;
    50/50 -> 20/80 moves only v1 keys to v2, about 30% of them."""
    url = platform.url + "/linear"
    keys = [f"user-{i}" for i in range(400)]
    try:
        assert "v1=50" in _split(platform, "v1=50", "v2=50")
        await _gateways_caught_up(platform)
        async with ClientSession() as session:
            before, again = await _sticky_read(platform, session, url, keys)
            assert before == again, _moved(platform, before, again)  # sticky
            share_v2 = sum(v == "v2" for v in before.values()) / len(keys)
            assert 0.40 < share_v2 < 0.60, share_v2
            await _admin_split(platform, v1=20, v2=80)
            await _gateways_caught_up(platform)
            after, _ = await _sticky_read(platform, session, url, keys, twice=False)
        moved = [(before[k], after[k]) for k in keys if before[k] != after[k]]
        assert all(move == ("v1", "v2") for move in moved), moved[:5]
        assert 0.20 < len(moved) / len(keys) < 0.40
    finally:
        await _admin_split(platform, v1=90, v2=10)
        await _gateways_caught_up(platform)


async def test_weight_swaps_under_load_lose_no_request(platform):
    """Four splits while 150 requests/s flow (open loop): every request answers 200, and the answers follow
    the swaps (both versions answer). Replicas and queues carry over each table swap."""
    from tests.load import steady_load

    load = asyncio.ensure_future(steady_load(platform.url + "/linear", 150, 3.0))
    try:
        for v1 in (50, 0, 100, 30):
            await _admin_split(platform, v1=v1, v2=100 - v1)
        samples = await load
    finally:
        await _admin_split(platform, v1=90, v2=10)
        await _gateways_caught_up(platform)
    failed = [s for s in samples if s.status != 200]
    assert samples and not failed, f"{len(failed)} of {len(samples)} failed: {failed[:3]}"
    assert {s.replica.split(".")[2].split("#")[0] for s in samples} == {"v1", "v2"}


async def test_pinning_unknown_versions_and_ignored_pins(platform):
    async with ClientSession() as session:
        for _ in range(10):
            assert await _version_of(session, platform.url + "/linear", **{"X-Raygate-Version": "v2"}) == (200, "v2")
        async with session.post(platform.url + "/linear", data=b"{}", headers={"X-Raygate-Version": "v7"}) as r:
            body = await r.json()
            assert r.status == 404 and body["error"]["code"] == "unknown_version" and "v7" in body["error"]["message"]
        # /mirror does not allow pinning: the header is ignored (and counted), v1 answers
        for _ in range(3):
            async with session.post(platform.url + "/mirror", data=b"{}", headers={"X-Raygate-Version": "shadow"}) as r:
                assert r.status == 200 and r.headers["X-Raygate-Version"] == "v1"
        ignored = []
        for _ in range(100):  # bounded: a scrape shows the node's metric files as of at most a moment ago
            async with session.get(platform.url + "/metrics") as r:
                text = await r.text()
            ignored = [line for line in text.splitlines()
                       if line.startswith('raygate_pin_ignored_total{app="mirror"')]
            if ignored:
                break
            await asyncio.sleep(0.05)
    assert ignored and float(ignored[0].rsplit(" ", 1)[1]) >= 1


async def test_mirrored_traffic_never_delays_the_primary(platform):
    """Every /mirror request is copied to the `shadow` version (a model that sleeps 1.5 s). The primary
    answers come back while every copy is still running; the copies' results are recorded, not returned: each
    copy ends up counted by its status, and every one answers 200."""
    def by_code(text: str) -> dict[str, float]:
        """raygate_mirror_requests_total of the shadow, by status code (0: dropped, 502: failed)."""
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith('raygate_mirror_requests_total{app="mirror"') and 'version="shadow"' in line:
                code = line.split('code="', 1)[1].split('"', 1)[0]
                counts[code] = counts.get(code, 0.0) + float(line.rsplit(" ", 1)[1])
        return counts

    async def counted() -> dict[str, float]:
        async with session.get(platform.url + "/metrics") as r:
            return by_code(await r.text())

    async def answered(than: float) -> bool:
        return (await counted()).get("200", 0.0) > than

    async def recorded(than: float) -> bool:
        return sum((await counted()).values()) > than

    async with ClientSession() as session:
        # One copy first, waited for: the shadow's replica is up and connected, and has measured its calls as
        # slow, so the 20 copies below run side by side, a worker thread each (replicas/channel/server.py).
        warm = (await counted()).get("200", 0.0)
        assert await _version_of(session, platform.url + "/mirror") == (200, "v1")
        await wait_for(lambda: answered(warm), 30, "the first mirrored copy", period_s=0.1)
        before = await counted()
        answers = await asyncio.gather(*(_version_of(session, platform.url + "/mirror") for _ in range(20)))
        assert answers == [(200, "v1")] * 20
        assert (await counted()).get("200", 0.0) == before.get("200", 0.0)  # no copy had answered yet
        await wait_for(lambda: recorded(sum(before.values()) + 19), 30, "20 mirrored copies recorded", period_s=0.1)
        after = await counted()
    new = {code: after[code] - before.get(code, 0.0) for code in after if after[code] != before.get(code, 0.0)}
    assert new == {"200": 20.0}, (new, gateway_ejections(platform.platform, "mirror.echo."))


async def test_status_shows_weights_and_per_version_traffic(platform):
    """`raygate status --json` over the admin API: the spec's weights, and traffic of both versions after 200
    requests of its own (at 90/10, v2 gets none with probability 0.9^200, about 1e-9)."""
    async with ClientSession() as session:
        for _ in range(200):
            async with session.post(platform.url + "/linear", json={"x": [1.0] * 16}) as response:
                assert response.status == 200
    result = subprocess.run([sys.executable, "-m", "deploy.cli", "--url", platform.url, "--token",
                             platform.admin_token, "status", "--json"], capture_output=True, text=True, timeout=60)
    data = orjson.loads(result.stdout)
    traffic = {(t["app"], t["version"]): t["requests"] for t in data["traffic"]}
    assert traffic.get(("quickstart", "v1"), 0) > 0 and traffic.get(("quickstart", "v2"), 0) > 0
    quickstart = next(a for a in data["apps"] if a["name"] == "quickstart")
    assert {v["name"]: v["weight"] for v in quickstart["deployments"][0]["versions"]} == {"v1": 90, "v2": 10}
