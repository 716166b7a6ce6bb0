"""Issue 8, items 5-9, against a live platform: what a stranger, a typo or a tampered Redis does to the
control plane. Every bad input gets a 400 naming the field, and nothing changes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import orjson
import pytest
import ray
import redis
from aiohttp import ClientConnectionError, ClientSession

from deploy.embedded import write_private_file
from deploy.spec import parse_spec
from tests.deploy.platform_checks import (
    admin_post,
    post_json,
    version_of,
    wait_for,
    wait_settled,
)

pytestmark = pytest.mark.integration

QUICKSTART = ("quickstart", "linear")


async def _split(platform, weights) -> tuple[int, dict]:
    return await admin_post(platform.url, platform.admin_token, "/-/admin/split",
                            {"app": QUICKSTART[0], "deployment": QUICKSTART[1], "weights": weights})


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", None, [1], True, "2", -1, 1e300])
async def test_bad_weights_get_400_naming_the_field_and_change_nothing(platform, weight):
    before = platform.platform.status()
    code, answer = await _split(platform, {"v2": weight})
    assert code == 400 and "weights.v2" in answer["error"]["message"], answer
    after = platform.platform.status()
    assert after["table_version"] == before["table_version"]
    assert version_of(after, *QUICKSTART, "v2")["weight"] == version_of(before, *QUICKSTART, "v2")["weight"]


@pytest.mark.parametrize("count", [10**9, 65, 2.5, True, "2", None, -1])
async def test_bad_replica_counts_get_400_and_change_nothing(platform, count):
    before = version_of(platform.platform.status(), *QUICKSTART, "v1")["target"]
    code, answer = await admin_post(platform.url, platform.admin_token, "/-/admin/scale", {
        "app": "quickstart", "deployment": "linear", "version": "v1", "num_replicas": count})
    assert code == 400 and "num_replicas" in answer["error"]["message"], answer
    assert version_of(platform.platform.status(), *QUICKSTART, "v1")["target"] == before


@pytest.mark.parametrize("body", [b"", b"{}", b"null", b'{"apps": []}'])
async def test_an_empty_deploy_removes_nothing(platform, body):
    """Removing every app takes {"apps": [], "remove_all": true}; an empty body, {} or null are refused."""
    before = platform.platform.status()
    code, answer = await admin_post(platform.url, platform.admin_token, "/-/admin/deploy?wait=1", body)
    assert code == 400, answer
    after = platform.platform.status()
    assert [a["name"] for a in after["apps"]] == [a["name"] for a in before["apps"]]
    assert after["generation"] == before["generation"]


@pytest.mark.parametrize(("field", "value"), [("request_timeout_s", 5_000_000), ("hedge_after_s", 1e12),
                                              ("num_replicas", 10**6), ("max_queued_requests", 10**12)])
async def test_unbounded_numbers_in_a_spec_are_refused(platform, field, value):
    doc = platform.spec.to_dict()
    doc["apps"][0]["deployments"][0][field] = value
    code, answer = await admin_post(platform.url, platform.admin_token, "/-/admin/deploy?wait=1", doc)
    assert code == 400 and field in answer["error"]["message"], answer
    async with ClientSession() as session:
        code, _ = await post_json(session, platform.url + "/linear", {"x": [1.0] * 16})
    assert code == 200


async def test_a_split_made_during_an_apply_is_kept(platform):
    """The rule: runtime overrides survive a deploy unless it changes that field. A split while a deploy
    (here: a new app that takes 6 s to start) is applying is still in force when the deploy finishes."""
    await wait_settled(platform.platform)
    doc = platform.spec.to_dict()
    doc["apps"].append({"name": "slowstart", "route_prefix": "/slowstart", "ingress": "slow", "deployments": [{
        "name": "slow", "import_path": "deploy.examples.models:Slow", "init_kwargs": {"init_s": 6.0},
        "resources": {"num_cpus": 0.05}}]})
    try:
        code, accepted = await admin_post(platform.url, platform.admin_token, "/-/admin/deploy?wait=0", doc)
        assert code == 202, accepted
        assert platform.platform.status()["apply"]["state"] == "applying"
        code, answer = await _split(platform, {"v1": 50, "v2": 50})
        assert code == 200, answer

        def applied():
            apply = platform.platform.status()["apply"]
            return apply if apply["generation"] == accepted["generation"] and apply["state"] != "applying" else None
        assert (await wait_for(applied, 120, "the apply to finish"))["state"] == "applied"
        status = platform.platform.status()
        assert version_of(status, *QUICKSTART, "v1")["weight"] == 50
        assert version_of(status, *QUICKSTART, "v2")["weight"] == 50
    finally:
        platform.platform.apply(platform.spec)
        await _split(platform, {"v1": 90, "v2": 10})
    assert "slowstart" not in {a["name"] for a in platform.platform.status()["apps"]}


def test_redis_needs_the_password(redis_server):
    """Without the password nothing can be read (the channel token, the state); with it, it can."""
    # retry=None: redis-py retries an AuthenticationError (a ConnectionError) with back-off, ~4 s for nothing
    stranger = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=2, retry=None)
    with pytest.raises(redis.exceptions.AuthenticationError):
        stranger.get("raygate:raygate-controller:state")
    assert redis.Redis.from_url(redis_server.url).ping()


def test_secret_files_are_0600_from_creation(tmp_path, monkeypatch):
    """write_private_file creates with O_EXCL and mode 0600 (never chmod-ed after), whatever the umask, and
    replaces a world-readable file that was there before instead of writing into it."""
    opened = []
    real_open = os.open

    def spy(path, flags, mode=0o777):
        opened.append((flags, mode))
        return real_open(path, flags, mode)

    old = tmp_path / "admin-token"
    old.write_text("old")
    old.chmod(0o644)
    monkeypatch.setattr(os, "open", spy)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod after creation"))
    previous_umask = os.umask(0)
    try:
        write_private_file(old, "secret")
    finally:
        os.umask(previous_umask)
    assert opened == [(os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)]
    assert stat.S_IMODE(old.stat().st_mode) == 0o600 and old.read_text() == "secret"


@pytest.fixture
def side_platform(side_platforms):
    """A second, small platform (tests/conftest.py `side_platforms`) for the destructive cases: tampering with
    its saved state, shutting it down."""
    spec = parse_spec({"apps": [{"name": "tiny", "route_prefix": "/tiny", "ingress": "flaky", "deployments": [{
        "name": "flaky", "import_path": "deploy.examples.models:Flaky", "resources": {"num_cpus": 0.05}}]}]})
    side = side_platforms(spec)
    return (side.platform, side.url, side.admin_token, spec, redis.Redis.from_url(side.redis_url),
            side.state_key)


async def _tiny_answers(url: str) -> int:
    async with ClientSession() as session:
        code, _ = await post_json(session, url + "/tiny", {})
    return code


async def test_a_tampered_saved_state_is_refused_after_a_controller_restart(side_platform):
    """Someone rewrites the saved state (an invalid weight). The restarted controller refuses it: it says so
    in status, publishes nothing (the gateway keeps serving the last table), and leaves the document where
    it was until an explicit deploy moves it aside to :rejected."""
    platform, url, _, spec, client, key = side_platform
    doc = orjson.loads(client.get(key))
    doc["weights"] = {"tiny/flaky": {"v1": "nan"}}
    tampered = orjson.dumps(doc)
    client.set(key, tampered)
    ray.kill(platform.controller, no_restart=False)

    def refused():
        try:
            status = ray.get(platform.controller.status.remote(), timeout=5)
        except Exception:
            return None
        return status if status["saved_state"]["loaded"] == "rejected" else None

    status = await wait_for(refused, 60, "the restarted controller to refuse the state", period_s=0.5)
    assert "weights" in status["saved_state"]["rejected"]["error"] and status["apps"] == []
    assert client.get(key) == tampered
    assert await _tiny_answers(url) == 200
    platform.apply(spec)  # the explicit instruction
    assert orjson.loads(client.get(key.removesuffix(":state") + ":rejected"))["document"] == tampered.decode()
    assert platform.status()["saved_state"]["rejected"]["set_aside"] is True
    assert await _tiny_answers(url) == 200


async def test_raygate_down_on_a_joined_platform_shuts_it_down_through_the_admin_api(side_platform, tmp_path):
    """/-/admin/shutdown with a wrong token is refused (401) and the platform keeps serving; `raygate down` with
    no local `up` posts /-/admin/shutdown with the token: the gateway stops answering and the replicas stop."""
    platform, url, token, _, _, _ = side_platform
    code, answer = await admin_post(url, "wrong-token", "/-/admin/shutdown", {})
    assert code == 401, answer
    assert await _tiny_answers(url) == 200
    replicas = [r for a in platform.status()["apps"] for d in a["deployments"] for v in d["versions"]
                for r in v["replicas"]]
    assert replicas
    down = subprocess.run([sys.executable, "-m", "deploy.cli", "--run-dir", str(tmp_path), "--url", url,
                           "--token", token, "down"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "shutdown requested" in down.stdout, down.stdout + down.stderr

    async def stopped():
        try:
            await _tiny_answers(url)
            return False
        except (OSError, ClientConnectionError):  # refused, or a keep-alive the stopping gateway closed
            return True
    await wait_for(stopped, 60, "the gateway to stop", period_s=0.3)
    await wait_for(lambda: all(not psutil_alive(r["pid"]) for r in replicas), 60, "the replicas to stop")


def psutil_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
