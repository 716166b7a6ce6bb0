"""Applies and scaling on a live platform: a rolling update replaces one replica at a time, weight-only and
count-only applies keep the replicas that run, and `/-/admin/scale` and `raygate scale` change counts.
Each test restores the fixture's spec (and counts) in `finally`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import orjson
import pytest
from aiohttp import ClientSession

from deploy.examples.models import WEIGHTS
from deploy.spec import parse_spec
from tests.deploy.platform_checks import (
    admin_post,
    post_json,
    replica_ids,
    version_of,
    wait_for,
    wait_settled,
)

pytestmark = pytest.mark.integration

ROLLING = ("rolling", "linear", "v1")


def _variant(platform, change) -> object:
    doc = platform.spec.to_dict()
    change(doc)
    return parse_spec(doc)


def _deployment(doc: dict, app: str) -> dict:
    return next(a for a in doc["apps"] if a["name"] == app)["deployments"][0]


class StatusRecorder(threading.Thread):
    """Polls status in a thread and keeps every observation of one version."""

    def __init__(self, platform, key) -> None:
        super().__init__(daemon=True)
        self.platform, self.key = platform, key
        self.seen: list[dict] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.seen.append(version_of(self.platform.status(), *self.key))
            self.stopping.wait(0.05)


async def test_rolling_update_replaces_one_replica_at_a_time(platform):
    """A code change to a 2-replica version: at every observation at most target+1 replicas live and at
    least `target` RUNNING; the old replicas leave one by one (2 -> 1 -> 0); requests all succeed and
    afterwards every answer comes from the new code."""
    before = await wait_settled(platform.platform)
    originals = {r["replica_id"] for r in version_of(before, *ROLLING)["replicas"]}
    target = version_of(before, *ROLLING)["target"]
    changed = _variant(platform, lambda d: _deployment(d, "rolling").update(init_kwargs={"bias": 1.0}))
    recorder = StatusRecorder(platform.platform, ROLLING)
    codes = []
    stop = asyncio.Event()

    async def traffic():
        async with ClientSession() as session:
            while not stop.is_set():
                codes.append((await post_json(session, platform.url + "/rolling", {"x": [1.0] * 16}))[0])

    try:
        recorder.start()
        sender = asyncio.create_task(traffic())
        await asyncio.get_running_loop().run_in_executor(None, platform.platform.apply, changed)
        await wait_settled(platform.platform)
        stop.set()
        await sender
        recorder.stopping.set()
        recorder.join()
        recorder.seen.append(version_of(platform.platform.status(), *ROLLING))  # after settling: a fresh look
        for seen in recorder.seen:
            live = [r for r in seen["replicas"] if r["state"] in ("STARTING", "RUNNING")]
            assert len(live) <= target + 1 and seen["running"] >= target, seen
        old_counts = [len(originals & {r["replica_id"] for r in s["replicas"]}) for s in recorder.seen]
        assert old_counts == sorted(old_counts, reverse=True) and 1 in old_counts and old_counts[-1] == 0
        assert codes and set(codes) == {200}, sorted(set(codes))
        async with ClientSession() as session:
            for _ in range(10):
                code, body = await post_json(session, platform.url + "/rolling", {"x": [1.0] * 16})
                assert code == 200 and orjson.loads(body)["y"] == pytest.approx(1.0 + sum(WEIGHTS))
    finally:
        recorder.stopping.set()
        platform.platform.apply(platform.spec)
        await wait_settled(platform.platform)


async def test_weight_only_apply_keeps_every_replica(platform):
    before = await wait_settled(platform.platform)

    def reweigh(doc):
        versions = _deployment(doc, "quickstart")["versions"]
        versions[0]["weight"], versions[1]["weight"] = 80, 20

    try:
        platform.platform.apply(_variant(platform, reweigh))
        after = platform.platform.status()
        assert replica_ids(after) == replica_ids(before)
        assert version_of(after, "quickstart", "linear", "v1")["weight"] == 80
        assert version_of(after, "quickstart", "linear", "v2")["weight"] == 20
    finally:
        platform.platform.apply(platform.spec)
    assert version_of(platform.platform.status(), "quickstart", "linear", "v1")["weight"] == 90


async def test_count_only_apply_keeps_the_running_replicas(platform):
    """2 -> 3 replicas adds one and keeps both; 3 -> 2 retires the youngest, so the original two remain."""
    before = await wait_settled(platform.platform)
    originals = {r["replica_id"] for r in version_of(before, *ROLLING)["replicas"]}
    try:
        platform.platform.apply(_variant(platform, lambda d: _deployment(d, "rolling").update(num_replicas=3)))
        grown = await wait_settled(platform.platform)
        ids = {r["replica_id"] for r in version_of(grown, *ROLLING)["replicas"]}
        assert len(ids) == 3 and originals < ids
        assert replica_ids(grown) - ids == replica_ids(before) - originals  # nothing else moved
    finally:
        platform.platform.apply(platform.spec)
    shrunk = await wait_settled(platform.platform)
    assert {r["replica_id"] for r in version_of(shrunk, *ROLLING)["replicas"]} == originals


async def test_admin_scale_and_raygate_scale_change_the_count(platform):
    """POST /-/admin/scale to 3, then `raygate scale ... 2`: the version follows both; the two replicas
    that ran before are the ones left."""
    before = await wait_settled(platform.platform)
    originals = {r["replica_id"] for r in version_of(before, *ROLLING)["replicas"]}
    try:
        code, answer = await admin_post(platform.url, platform.admin_token, "/-/admin/scale", {
            "app": "rolling", "deployment": "linear", "version": "v1", "num_replicas": 3})
        assert code == 200 and answer["target"] == 3, answer
        grown = await wait_settled(platform.platform)
        assert len(version_of(grown, *ROLLING)["replicas"]) == 3
        cli = subprocess.run([sys.executable, "-m", "deploy.cli", "--url", platform.url, "--token",
                              platform.admin_token, "scale", "rolling", "linear", "v1", "2"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0 and "target 2 replicas" in cli.stdout, cli.stdout + cli.stderr
        shrunk = await wait_settled(platform.platform)
        assert {r["replica_id"] for r in version_of(shrunk, *ROLLING)["replicas"]} == originals
    finally:
        await admin_post(platform.url, platform.admin_token, "/-/admin/scale", {
            "app": "rolling", "deployment": "linear", "version": "v1", "num_replicas": 2})
        await wait_for(lambda: version_of(platform.platform.status(), *ROLLING)["running"] == 2, 60, "2 replicas")
