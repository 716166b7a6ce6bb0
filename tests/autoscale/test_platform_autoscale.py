"""Autoscaling end to end on a real platform: real Ray, real Redis, real HTTP on loopback.

A small platform of its own (its controller, scaler, one gateway, its Redis database) serves one autoscaled
version of a fixed-service-time model. Closed-loop clients keep more requests in flight than one replica's
target: the scaler raises the target and the controller starts replicas; once the clients stop, the target
and the replicas come back down while one client goes on. Every request answers 200 throughout (scale-down
retires starting replicas first and drains running ones once every router runs a table without them).
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

AUTOSCALING = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2, "stable_window_s": 5,
               "panic_window_s": 2, "upscale_delay_s": 0, "downscale_delay_s": 2, "max_scale_down_rate": 100,
               "hysteresis": 0, "forecast": False}
CLIENTS = 12  # closed-loop clients: 12 in flight want 6 replicas at 2 each, clamped to max_replicas (3)
SERVICE_S = 0.3  # the model's fixed service time


@pytest.fixture
def auto_platform(ray_cluster, redis_server, run_root):
    from deploy.embedded import free_port
    from deploy.gateways import gateway_config
    from deploy.platform import Platform
    from deploy.policy import ControllerConfig
    from deploy.spec import GatewaySpec, parse_spec

    name, port = f"raygate-auto-{secrets.token_hex(3)}", free_port()
    gateway = gateway_config(GatewaySpec(port=port, num_gateways=1), admin_token=secrets.token_urlsafe(12),
                             controller_name=name, namespace="raygate", log_dir=str(run_root / "auto-logs"))
    running = Platform(ControllerConfig(redis_url=redis_server.url_for(3), name=name, gateway=gateway)).start()
    spec = parse_spec({"apps": [{"name": "auto", "route_prefix": "/auto", "ingress": "slow", "deployments": [{
        "name": "slow", "import_path": "deploy.examples.models:Slow", "init_kwargs": {"seconds": SERVICE_S},
        "max_ongoing_requests": 4, "request_timeout_s": 30, "resources": {"num_cpus": 0.05},
        "autoscaling": AUTOSCALING}]}]})
    running.apply(spec)
    yield running, f"http://127.0.0.1:{port}/auto", name
    running.stop()


def _version(status: dict) -> dict:
    return status["apps"][0]["deployments"][0]["versions"][0]


async def _wait_for(platform, condition, timeout_s: float, what: str) -> dict:
    """Poll status (bounded) until `condition(version_status)`; fail naming what was awaited and the last status."""
    deadline, version = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        version = _version(await asyncio.to_thread(platform.status))
        if condition(version):
            return version
        await asyncio.sleep(0.5)  # poll interval, not synchronisation: the condition decides
    pytest.fail(f"{what} not seen within {timeout_s:g}s; last: "
                f"{ {k: version.get(k) for k in ('current', 'target', 'ready', 'autoscaling')} }")


async def test_replicas_follow_real_load_up_and_back_down_with_no_failed_request(auto_platform):
    import ray
    from aiohttp import ClientSession, ClientTimeout

    from deploy.names import scaler_name

    platform, url, name = auto_platform
    codes: dict[int, int] = {}
    heavy, light = asyncio.Event(), asyncio.Event()  # set: stop those clients

    async def client(session: ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with session.post(url, json={}) as response:
                    await response.read()
                    codes[response.status] = codes.get(response.status, 0) + 1
            except Exception as exc:  # a reset connection is a failed request too
                codes[-1] = codes.get(-1, 0) + 1
                print("client error", repr(exc))

    start = _version(await asyncio.to_thread(platform.status))
    assert (start["target"], start["autoscaling"]["min_replicas"], start["autoscaling"]["max_replicas"]) == (1, 1, 3)
    async with ClientSession(timeout=ClientTimeout(total=40)) as session:
        clients = [asyncio.create_task(client(session, heavy)) for _ in range(CLIENTS - 1)]
        clients.append(asyncio.create_task(client(session, light)))
        try:
            up = await _wait_for(platform, lambda v: v["target"] == 3 and v["ready"] == 3, 120,
                                 "target and ready replicas at max_replicas under load")
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
    assert served_under_load > 0 and total > served_under_load and codes == {200: total}, codes

    # the scaler is the platform's: it goes when the platform stops
    platform.stop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get_actor(scaler_name(name), namespace="raygate")
        except ValueError:
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail("the scaler actor outlived its platform")
