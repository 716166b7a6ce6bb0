"""Failover under steady load on a real Ray: SIGKILL, SIGSTOP and half-alive replicas, rolling updates and
gateway kills. Idempotent requests never fail; sick replicas leave routing for the reason that fits, after the
fault. How fast is measured by bench/chaos.py, not asserted here."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import ray

from tests.deploy.platform_checks import gateway_ejections, new_ejections
from tests.load import steady_load

pytestmark = pytest.mark.integration

RATE = 150  # requests per second (the bench drives 1,000)


def _chaos_replicas(platform) -> list[dict]:
    status = platform.platform.status()
    app = next(a for a in status["apps"] if a["name"] == "chaos")
    return [r for v in app["deployments"][0]["versions"] for r in v["replicas"]]


_used: set[str] = set()  # replicas faulted in this session: never picked again (their ejection history is old)


def _victim(platform) -> dict:
    """A RUNNING chaos replica with a known process, never one an earlier test faulted."""
    for replica in _chaos_replicas(platform):
        if replica["state"] == "RUNNING" and replica.get("pid", 0) > 0 and replica["replica_id"] not in _used:
            _used.add(replica["replica_id"])
            return replica
    pytest.fail(f"no healthy chaos replica to fault: {_chaos_replicas(platform)}")


def _ejections_of(platform, replica_id: str) -> list[dict]:
    return [e for e in gateway_ejections(platform.platform, replica_id) if e["replica_id"] == replica_id]


async def _wait_for(condition, what: str, timeout_s: float = 40.0, every_s: float = 0.1):
    """Poll `condition()` until it returns something truthy (bounded); fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(every_s)
    pytest.fail(f"{what}: not within {timeout_s:g}s")


async def _wait_whole(platform, gone: str | None = None) -> None:
    """3 RUNNING chaos replicas (without `gone`, a victim the controller must replace) before the next step."""
    def whole():
        running = [r for r in _chaos_replicas(platform) if r["state"] == "RUNNING" and r.get("pid", 0) > 0]
        return len(running) == 3 and gone not in {r["replica_id"] for r in running}
    await _wait_for(whole, f"chaos deployment back to 3 RUNNING replicas (without {gone})")


def _new_ejections(platform, replica_id: str, known: list[dict], fault_at: float, reasons: set[str]) -> list[dict]:
    """The victim's ejections by the gateways since `known` (those recorded before the fault): at least one, every
    one after the fault (caused by it, not before it), each for one of `reasons`."""
    ejections = new_ejections(_ejections_of(platform, replica_id), known)
    assert ejections, f"{replica_id} was not ejected after the fault (before it: {known})"
    assert all(e["at"] >= fault_at for e in ejections), (fault_at, ejections)
    assert {e["reason"] for e in ejections} <= reasons, ejections
    return ejections


async def _under_load(platform, fault, duration_s=4.0, at_s=1.0, **load):
    """Steady load; the fault lands `at_s` into it (the moment is part of the scenario, not a wait)."""
    samples, fault_at, _ = await _fault_under_load(platform, fault, None, duration_s, at_s, **load)
    return samples, fault_at


async def _fault_under_load(platform, fault, victim_id: str | None, duration_s=4.0, at_s=1.0, **load):
    """`_under_load`, also returning the victim's ejections recorded just before the fault: one that happened
    before it (a fresh replica's first connection timing out under load) is not one the fault caused."""
    load_task = asyncio.ensure_future(steady_load(platform.url + "/chaos", RATE, duration_s, **load))
    await asyncio.sleep(at_s)
    known = await asyncio.to_thread(_ejections_of, platform, victim_id) if victim_id else []
    fault_at = time.time()
    await fault()
    samples = await load_task
    return samples, fault_at, known


async def test_sigkill_costs_no_request_and_is_ejected_for_the_lost_connection(platform):
    await _wait_whole(platform)
    victim = _victim(platform)

    async def kill():
        os.kill(victim["pid"], signal.SIGKILL)

    samples, killed_at, known = await _fault_under_load(platform, kill, victim["replica_id"])
    failed = [s for s in samples if s.status != 200]
    assert not failed, f"{len(failed)} of {len(samples)} failed: {failed[:3]}"
    assert any(s.replica == victim["replica_id"] for s in samples if s.started < killed_at)  # it was serving
    _new_ejections(platform, victim["replica_id"], known, killed_at, {"connection_lost", "unreachable"})
    await _wait_whole(platform, gone=victim["replica_id"])


async def test_frozen_replica_under_load_is_ejected_as_stalled_and_costs_no_request(platform):
    """SIGSTOP: the replica's connection stays open but nothing answers; its waiting requests move elsewhere."""
    await _wait_whole(platform)
    victim = _victim(platform)
    known: list[dict] = []

    async def freeze():
        os.kill(victim["pid"], signal.SIGSTOP)

    try:
        samples, frozen_at, known = await _fault_under_load(platform, freeze, victim["replica_id"])
    finally:
        _resume(victim["pid"])
    failed = [s for s in samples if s.status != 200]
    assert not failed, f"{len(failed)} of {len(samples)} failed: {failed[:3]}"
    # under load a waiting request outlives the stall threshold before a ping outlives its timeout
    ejections = _new_ejections(platform, victim["replica_id"], known, frozen_at, {"stalled", "ping_timeout"})
    assert "stalled" in {e["reason"] for e in ejections}
    await _wait_whole(platform, gone=victim["replica_id"])  # the controller's probes replace it


async def test_frozen_idle_replica_is_ejected_by_its_unanswered_ping(platform):
    """No load: nothing is pending, so only the data-plane ping can tell, and the reason says exactly that."""
    await _wait_whole(platform)
    samples = await steady_load(platform.url + "/chaos", RATE, 1.0)  # every gateway opens its connections
    assert all(s.status == 200 for s in samples)
    victim = _victim(platform)
    known = _ejections_of(platform, victim["replica_id"])
    frozen_at = time.time()
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        await _wait_for(lambda: new_ejections(_ejections_of(platform, victim["replica_id"]), known),
                        "ping ejection", timeout_s=10.0)
    finally:
        _resume(victim["pid"])
    ejections = _new_ejections(platform, victim["replica_id"], known, frozen_at, {"ping_timeout"})
    assert {e["reason"] for e in ejections} == {"ping_timeout"}, ejections
    await _wait_whole(platform)  # resumed at once: kept or replaced, either way 3 serve


def _resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


async def test_half_alive_replica_is_ejected_by_outlier_detection(platform):
    """A replica that passes health probes but takes 5 s per request is taken out by the gateways (`stalled`), and
    its waiting requests are retried elsewhere: none fails. Latency figures: bench/chaos.py (half_alive)."""
    await _wait_whole(platform)
    victim = _victim(platform)
    flag = platform.flag_dir / f"stall-{victim['pid']}"

    async def sicken():
        flag.touch()

    try:
        samples, sick_at, known = await _fault_under_load(platform, sicken, victim["replica_id"])
    finally:
        flag.unlink(missing_ok=True)
    failed = [s for s in samples if s.status != 200]
    assert not failed, f"{len(failed)} of {len(samples)} failed: {failed[:3]}"
    _new_ejections(platform, victim["replica_id"], known, sick_at, {"stalled"})
    assert not [s for s in samples if s.started >= sick_at and s.replica == victim["replica_id"]
                and s.seconds >= 5.0], "a request waited out the sick replica instead of being retried"
    # health probes still pass: the controller keeps it (routing, not probing, caught it)
    assert victim["replica_id"] in {r["replica_id"] for r in _chaos_replicas(platform)}


async def test_rolling_update_replaces_replicas_one_at_a_time_without_failures(platform):
    """New code for the chaos deployment rolls through under load; afterwards every answer is the new code's."""
    doc = platform.spec.to_dict()
    chaos = next(a for a in doc["apps"] if a["name"] == "chaos")["deployments"][0]
    chaos["init_kwargs"] = dict(chaos["init_kwargs"], bias=1000.0)
    from deploy.spec import parse_spec

    updated = parse_spec(doc)
    await _wait_whole(platform)
    before = {r["replica_id"] for r in _chaos_replicas(platform)}

    async def roll():
        await asyncio.get_running_loop().run_in_executor(None, platform.platform.apply, updated)

    try:
        samples, _ = await _under_load(platform, roll, duration_s=6.0, at_s=0.5)
        failed = [s for s in samples if s.status != 200]
        assert not failed, f"{len(failed)} of {len(samples)} failed: {failed[:3]}"
        after = _chaos_replicas(platform)
        assert len(after) == 3 and not before & {r["replica_id"] for r in after}
        import orjson
        from aiohttp import ClientSession

        async with ClientSession() as session:
            async with session.post(platform.url + "/chaos", data=orjson.dumps({"x": [0.0] * 16})) as response:
                assert (await response.json())["y"] == 1000.0
    finally:
        platform.platform.apply(platform.spec)


async def test_killed_gateway_restarts_while_the_other_keeps_serving(platform):
    gateways = platform.platform.gateways()
    stats = ray.get([g.stats.remote() for g in gateways])
    victim_pid = stats[0]["pid"]

    async def kill():
        os.kill(victim_pid, signal.SIGKILL)

    samples, killed_at = await _under_load(platform, kill, duration_s=4.0, fresh_connections=True)
    # Only connections the dead process held (in flight, or accepted into its listen queue just before the
    # kernel dropped its socket) can fail, and only as connection errors: the other process serves the rest.
    failed = [s for s in samples if s.status != 200]
    assert all(s.status == 0 and killed_at - 0.1 <= s.started <= killed_at + 0.5 for s in failed), failed[:5]
    after = [s for s in samples if s.started > killed_at + 0.5]
    assert after and all(s.status == 200 for s in after)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            pids = {s["pid"] for s in ray.get([g.stats.remote() for g in gateways], timeout=5)}
            if victim_pid not in pids and len(pids) == 2:
                break
        except Exception:
            pass
        await asyncio.sleep(0.5)
    else:
        pytest.fail("the killed gateway was not restarted")
