"""Autoscaling end to end on a real platform: real Ray, real Redis, real HTTP on loopback.

A small platform of its own (its controller, scaler, one gateway, its Redis database), shared by the tests of
this module, serves two autoscaled versions of a fixed-service-time model:
- `auto`: closed-loop clients keep more requests in flight than one replica's target: the scaler raises the target
  and the controller starts replicas; once the clients stop, the target and the replicas come back down while one
  client goes on. Every request answers 200 throughout (scale-down retires starting replicas first and drains
  running ones once every router runs a table without them). Meanwhile the replicas' CPU reaches the scaler's
  window and a scrape of the gateway shows the scaler's desired count.
- `zero` (scale-to-zero): idle, it goes to 0 replicas; a request then is held by the gateway while the first
  replica starts, and answers 200.
The scaler goes when the platform stops (checked when the module's platform is torn down).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time

import pytest

from tests.deploy.platform_checks import gateway_ejections

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

AUTOSCALING = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2, "stable_window_s": 5,
               "panic_window_s": 2, "upscale_delay_s": 0, "downscale_delay_s": 2, "max_scale_down_rate": 100,
               "hysteresis": 0, "forecast": False}
CLIENTS = 12  # closed-loop clients: 12 in flight want 6 replicas at 2 each, clamped to max_replicas (3)
SERVICE_S = 0.3  # the model's fixed service time


ZERO = {"min_replicas": 0, "max_replicas": 1, "scale_to_zero": True, "scale_to_zero_delay_s": 2, "stable_window_s": 2,
        "panic_window_s": 1, "forecast": False}


@pytest.fixture(scope="module")
def auto_platform(ray_cluster, redis_server, run_root):
    import ray

    from deploy.embedded import free_port
    from deploy.gateways import gateway_config
    from deploy.names import scaler_name
    from deploy.platform import Platform
    from deploy.policy import ControllerConfig
    from deploy.spec import GatewaySpec, parse_spec

    name, port = f"raygate-auto-{secrets.token_hex(3)}", free_port()
    gateway = gateway_config(GatewaySpec(port=port, num_gateways=1), admin_token=secrets.token_urlsafe(12),
                             controller_name=name, namespace="raygate", log_dir=str(run_root / "auto-logs"))
    running = Platform(ControllerConfig(redis_url=redis_server.url_for(3), name=name, gateway=gateway)).start()

    def app(app_name: str, seconds: float, autoscaling: dict) -> dict:
        return {"name": app_name, "route_prefix": f"/{app_name}", "ingress": "slow", "deployments": [{
            "name": "slow", "import_path": "deploy.examples.models:Slow", "init_kwargs": {"seconds": seconds},
            "max_ongoing_requests": 4, "request_timeout_s": 30, "resources": {"num_cpus": 0.05},
            "autoscaling": autoscaling}]}

    running.apply(parse_spec({"apps": [app("auto", SERVICE_S, AUTOSCALING), app("zero", 0.01, ZERO)]}))
    yield running, f"http://127.0.0.1:{port}", name
    running.stop()
    deadline = time.monotonic() + 30  # the scaler is the platform's: it goes when the platform stops
    while time.monotonic() < deadline:
        try:
            ray.get_actor(scaler_name(name), namespace="raygate")
        except ValueError:
            return
        time.sleep(0.5)  # poll interval, not synchronisation: the actor's absence decides
    pytest.fail("the scaler actor outlived its platform")


def _version(status: dict, app: str = "auto") -> dict:
    return next(a for a in status["apps"] if a["name"] == app)["deployments"][0]["versions"][0]


async def _wait_for(platform, condition, timeout_s: float, what: str, app: str = "auto") -> dict:
    """Poll status (bounded) until `condition(version_status)`; fail naming what was awaited and the last status."""
    deadline, version = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        version = _version(await asyncio.to_thread(platform.status), app)
        if condition(version):
            return version
        await asyncio.sleep(0.5)  # poll interval, not synchronisation: the condition decides
    pytest.fail(f"{what} not seen within {timeout_s:g}s; last: "
                f"{ {k: version.get(k) for k in ('current', 'target', 'ready', 'autoscaling')} }")


async def _scrape_until(url: str, pattern: str, timeout_s: float) -> str:
    """GET the gateway's /metrics (bounded polls: the gateway refreshes the controller's snapshot every few
    seconds) until a line matches `pattern`; that line."""
    from aiohttp import ClientSession

    deadline, text = time.monotonic() + timeout_s, ""
    async with ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url + "/metrics") as response:
                text = await response.text()
            found = re.search(pattern, text, re.MULTILINE)
            if found:
                return found.group(0)
            await asyncio.sleep(0.5)  # poll interval, not synchronisation: the scrape decides
    pytest.fail(f"no line matching {pattern!r} in /metrics within {timeout_s:g}s; autoscale lines: "
                f"{[line for line in text.splitlines() if 'autoscale' in line]}")


async def _cpu_in_window(name: str, version: str, timeout_s: float) -> list[dict]:
    """The scaler's window samples of auto/slow over the last seconds, once one carries the replicas' CPU."""
    import ray

    from deploy.names import scaler_name

    scaler = ray.get_actor(scaler_name(name), namespace="raygate")
    deadline, samples = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        samples = await scaler.window.remote("auto", "slow", version, 10.0)
        if any(s["cpu"] is not None for s in samples):
            return samples
        await asyncio.sleep(0.5)  # poll interval, not synchronisation: the window decides
    pytest.fail(f"no replica CPU in the scaler's window within {timeout_s:g}s; last samples: {samples[-3:]}")


async def _client(session, url: str, stop: asyncio.Event, codes: dict[int, int], failures: list[str]) -> None:
    """A closed-loop client: one request at a time until `stop`; counts answers by status (-1: no answer) and
    keeps each failure's body (or exception) with the wall time it ended."""
    while not stop.is_set():
        try:
            async with session.post(url, json={}) as response:
                body = await response.read()
                codes[response.status] = codes.get(response.status, 0) + 1
                if response.status != 200:
                    failures.append(f"{time.time():.3f} {response.status} {body[:300]!r}")
        except Exception as exc:  # a reset connection is a failed request too
            codes[-1] = codes.get(-1, 0) + 1
            failures.append(f"{time.time():.3f} no answer {exc!r}")


async def test_replicas_follow_real_load_up_and_back_down_with_no_failed_request(auto_platform):
    from aiohttp import ClientSession, ClientTimeout

    platform, base, name = auto_platform
    url = base + "/auto"
    codes: dict[int, int] = {}
    failures: list[str] = []
    heavy, light = asyncio.Event(), asyncio.Event()  # set: stop those clients

    start = _version(await asyncio.to_thread(platform.status))
    assert (start["target"], start["autoscaling"]["min_replicas"], start["autoscaling"]["max_replicas"]) == (1, 1, 3)
    async with ClientSession(timeout=ClientTimeout(total=40)) as session:
        clients = [asyncio.create_task(_client(session, url, heavy, codes, failures)) for _ in range(CLIENTS - 1)]
        clients.append(asyncio.create_task(_client(session, url, light, codes, failures)))
        try:
            up = await _wait_for(platform, lambda v: v["target"] == 3 and v["ready"] == 3, 120,
                                 "target and ready replicas at max_replicas under load")
            samples = await _cpu_in_window(name, up["name"], 30)
            gauge = await _scrape_until(base, r'^raygate_autoscale_desired_replicas\{app="auto",deployment="slow",'
                                              rf'version="{up["name"]}"\}} 3\.0$', 30)
            served_under_load = sum(codes.values())
            heavy.set()  # one client goes on: ~1 in flight wants one replica
            down = await _wait_for(platform, lambda v: v["target"] == 1 and v["current"] == 1 and v["ready"] == 1,
                                   120, "target and replicas back at min_replicas after the load stopped")
        finally:
            heavy.set()
            light.set()
            await asyncio.wait_for(asyncio.gather(*clients), 60)
    assert up["autoscaling"]["applied"]["target"] == 3
    assert up["autoscaling"]["decision"]["reason"]  # the scaler's own record, with its reason
    assert down["autoscaling"]["applied"]["reason"] and down["autoscaling"]["decision"]["target"] == 1
    total = sum(codes.values())
    assert served_under_load > 0 and total > served_under_load, codes
    assert codes == {200: total}, (codes, failures, gateway_ejections(platform), up, down)
    cpus = [s["cpu"] for s in samples if s["cpu"] is not None]
    assert all(0.0 <= cpu <= 1.0 for cpu in cpus), cpus  # a share of each replica's reserved CPUs
    assert gauge.endswith(" 3.0")
    ups = await _scrape_until(base, r'^raygate_autoscale_decisions_total\{app="auto",deployment="slow",'
                                    r'direction="up",.*\} [1-9][0-9]*\.0$', 15)
    assert ups


async def test_a_version_at_zero_holds_a_request_until_its_first_replica_serves_it(auto_platform):
    """`zero` goes to 0 replicas once idle; requests then are held (not refused) while the scaler wakes the
    version and the controller starts a replica, and all answer 200; the controller counted the wake as a
    decision up (its counters only grow, so a later scale back to zero does not hide it)."""
    import ray
    from aiohttp import ClientSession, ClientTimeout

    platform, base, name = auto_platform
    idle = await _wait_for(platform, lambda v: v["target"] == 0 and v["current"] == 0, 60,
                           "the idle scale-to-zero version at 0 replicas", app="zero")
    assert idle["autoscaling"]["applied"]["reason"] == "scale_to_zero"
    controller = ray.get_actor(name, namespace="raygate")
    before = next(r for r in (await controller.metrics_snapshot.remote())["autoscale"] if r["app"] == "zero")

    async def held(session: ClientSession) -> tuple[int, dict]:
        async with session.post(base + "/zero", json={}) as response:
            return response.status, await response.json()

    async with ClientSession(timeout=ClientTimeout(total=40)) as session:
        answers = await asyncio.gather(*(held(session) for _ in range(3)))
    assert [status for status, _ in answers] == [200, 200, 200], answers
    after = next(r for r in (await controller.metrics_snapshot.remote())["autoscale"] if r["app"] == "zero")
    assert after["decisions"]["up"] == before["decisions"]["up"] + 1, (before, after)
