"""The planner actor on a real Ray and Redis: it publishes, answers status, and comes back after being killed."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from planner.allocation.samples import SampleStore
from planner.store import DualPriceStore
from tests.planner.allocation.allocation_testlib import coupon_scenario

pytestmark = pytest.mark.integration


def wait_for(check, timeout_s: float = 60.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_planner_actor_publishes_and_is_restarted_after_a_kill(ray_cluster, redis_client, redis_url):
    """The actor plans on the sampled requests and publishes prices; killed (with restart allowed), Ray starts
    it again and it publishes newer prices."""
    import ray

    from planner.allocation.actor import planner_actor_name, start_planner

    sc = coupon_scenario(name="actor", cycle_s=0.5, horizon_s=20, sample_rate=1.0)
    SampleStore(redis_client, "actor").append([
        {"t": 0.0, "items": ["coupon_a", "coupon_b"], "value": [0.8, 0.3 + 0.01 * i], "usage": [[3.0, 1.0]] * 2}
        for i in range(40)])
    handle = start_planner(sc, redis_url, use_gpu=False, num_cpus=0.1)
    store = DualPriceStore(redis_client)
    first = wait_for(lambda: store.read("actor"))
    assert first.names == sc.constraint_names
    status = wait_for(lambda: (got := ray.get(handle.status.remote(), timeout=30))["published"] >= 1 and got)
    assert status["running"] and status["cycles"] >= status["published"]
    pid = ray.get(handle.__ray_call__.remote(lambda actor: os.getpid()), timeout=30)
    ray.kill(handle, no_restart=False)
    wait_for(lambda: not psutil.pid_exists(pid))  # what answers next is the restarted process
    again = ray.get_actor(planner_actor_name("actor"))  # the name is kept while Ray restarts it

    def running_again() -> bool:
        try:
            return ray.get(again.status.remote(), timeout=30)["running"]
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            return False  # still restarting (how long that takes depends on the machine's load)

    wait_for(running_again)
    version = store.read("actor").version
    wait_for(lambda: store.read("actor").version > version + 1)
    ray.get(again.stop.remote(), timeout=60)
    ray.kill(again, no_restart=True)
