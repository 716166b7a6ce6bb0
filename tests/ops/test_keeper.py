"""The Keeper: its decisions as pure functions, its loop against fake gateways, and (integration) two real
raygate platforms where one is killed under load and comes back, without the client losing a request."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request

import pytest
import yaml
from aiohttp import web

from deploy.keeper import (
    Cluster,
    ClusterHealth,
    Keeper,
    KeeperSpec,
    endpoint_order,
    load_keeper_spec,
    observe_check,
)

APP_SPEC = {"apps": [{"name": "lin", "route_prefix": "/lin", "ingress": "linear", "deployments": [
    {"name": "linear", "import_path": "deploy.examples.models:Linear", "num_replicas": 2, "idempotent": True,
     "request_timeout_s": 10, "resources": {"num_cpus": 0.1}}]}]}


def test_hysteresis_takes_a_cluster_out_and_back_only_after_runs_of_checks():
    health = ClusterHealth()
    health = observe_check(health, True, "", 1.0, fail_after=2, recover_after=2)
    assert not health.up
    health = observe_check(health, True, "", 2.0, 2, 2)
    assert health.up and health.changed_at == 2.0
    health = observe_check(health, False, "unreachable", 3.0, 2, 2)
    assert health.up and health.reason == "unreachable"
    health = observe_check(health, True, "", 4.0, 2, 2)
    health = observe_check(health, False, "x", 5.0, 2, 2)
    assert health.up  # failures must come in a row
    health = observe_check(health, False, "x", 6.0, 2, 2)
    assert not health.up and health.changed_at == 6.0


def test_endpoint_order_puts_clusters_that_are_up_first_in_configured_order():
    clusters = [Cluster("a", "http://a", "t"), Cluster("b", "http://b", "t"), Cluster("c", "http://c", "t")]
    health = {"a": ClusterHealth(up=False), "b": ClusterHealth(up=True), "c": ClusterHealth(up=True)}
    assert endpoint_order(clusters, health) == ["http://b", "http://c", "http://a"]
    health["a"] = ClusterHealth(up=True)
    assert endpoint_order(clusters, health) == ["http://a", "http://b", "http://c"]


def test_keeper_file_resolves_tokens_and_names_bad_fields(tmp_path):
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(APP_SPEC))
    (tmp_path / "token-b").write_text("tb\n")
    (tmp_path / "keeper.yaml").write_text(yaml.safe_dump({"spec": "app.yaml", "clusters": [
        {"name": "a", "url": "http://a:1/", "token_env": "TOKEN_A"},
        {"name": "b", "url": "http://b:1", "token_file": str(tmp_path / "token-b")}]}))
    spec, clusters, app_spec = load_keeper_spec(tmp_path / "keeper.yaml", {"TOKEN_A": "ta"})
    assert clusters == [Cluster("a", "http://a:1", "ta"), Cluster("b", "http://b:1", "tb")]
    assert app_spec["apps"][0]["name"] == "lin" and spec.fail_after == 2
    from deploy.spec import SpecError

    with pytest.raises(SpecError, match="no admin token"):
        load_keeper_spec(tmp_path / "keeper.yaml", {})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"spec": "app.yaml", "clusters": [], "color": 1}))
    with pytest.raises(SpecError, match="clusters"):
        load_keeper_spec(tmp_path / "bad.yaml", {})


class FakeCluster:
    """A fake gateway: /-/ready, and an admin API that records deploys and reports the deployed apps."""

    def __init__(self) -> None:
        self.deploys: list[dict] = []
        self.apps: list[dict] = []
        self.runner = None
        self.port = 0

    async def start(self, port: int = 0) -> FakeCluster:
        async def ready(request):
            return web.json_response({"status": "ready"})

        async def status(request):
            if request.headers.get("Authorization") != "Bearer tok":
                return web.json_response({"error": {"code": "unauthorized", "message": "no"}}, status=401)
            return web.json_response({"apps": self.apps})

        async def deploy(request):
            doc = await request.json()
            self.deploys.append(doc)
            self.apps = [{"name": a["name"], "deployments": [{"name": d["name"], "versions": [
                {"name": "v1", "target": 1, "running": 1}]} for d in a["deployments"]]} for a in doc["apps"]]
            return web.json_response({"generation": len(self.deploys), "state": "applying"}, status=202)

        app = web.Application()
        app.router.add_get("/-/ready", ready)
        app.router.add_get("/-/admin/status", status)
        app.router.add_post("/-/admin/deploy", deploy)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port or self.port, reuse_address=True).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def test_keeper_applies_everywhere_and_reorders_endpoints_on_failure_and_recovery(tmp_path):
    """Both fake clusters get the spec; when A stops answering it moves behind B (in the served list and the
    file); when A comes back empty, the Keeper applies the spec to it again and puts it first again."""
    a, b = await FakeCluster().start(), await FakeCluster().start()
    spec = KeeperSpec(spec="unused", clusters=[{"name": "a", "url": a.url}, {"name": "b", "url": b.url}], port=0,
                      endpoints_file=str(tmp_path / "endpoints.json"), check_interval_s=0.05, fail_after=2,
                      recover_after=2, reapply_interval_s=0.05)
    keeper = await Keeper(spec, [Cluster("a", a.url, "tok"), Cluster("b", b.url, "tok")], APP_SPEC).start()

    async def until(predicate, what):
        for _ in range(200):
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(what)

    def served():
        with urllib.request.urlopen(f"http://127.0.0.1:{keeper.port}/-/keeper/endpoints", timeout=2) as r:
            return json.loads(r.read())

    try:
        assert len(a.deploys) == 1 and len(b.deploys) == 1 and a.deploys[0] == APP_SPEC
        await until(lambda: all(c["up"] for c in keeper.document()["clusters"]), "both clusters up")
        doc = await asyncio.to_thread(served)
        assert doc["endpoints"] == [a.url, b.url]
        await a.stop()
        await until(lambda: keeper.endpoints == [b.url, a.url], "A moved behind B")
        assert json.loads((tmp_path / "endpoints.json").read_text())["endpoints"] == [b.url, a.url]
        a.apps, a.deploys = [], []  # A comes back rebuilt, without the apps
        await a.start(a.port)
        await until(lambda: keeper.endpoints == [a.url, b.url], "A first again")
        assert a.deploys == [APP_SPEC]
        assert (await asyncio.to_thread(served))["endpoints"] == [a.url, b.url]
    finally:
        await keeper.stop()
        await b.stop()
        if a.runner is not None:
            await a.stop()


# -- two real platforms -------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_one_cluster_killed_under_load_loses_no_idempotent_request(tmp_path, side_platforms):
    """Cluster A is a `raygate up` (own Ray, Redis, run dir, port), cluster B a platform of its own on the
    session's Ray (own controller, Redis keys, port, token); both start empty and the Keeper deploys the app to
    both. Under steady load from a client that follows the Keeper, A (preferred) is killed whole (SIGKILL:
    gateway, Ray, Redis): every call is still answered (by B), the Keeper moves A behind B; A is started again
    on its run dir, recovers the spec, and calls go back to A. No call fails at any point."""
    from deploy.embedded import free_port
    from raygate import ClientConfig
    from tests.ops.cluster_procs import Started, wait_until

    token = "keeper-test-token"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS", "RAYGATE_URL")}
    env["RAYGATE_ADMIN_TOKEN"] = token
    (tmp_path / "empty.yaml").write_text(yaml.safe_dump({"apps": [], "gateway": {"num_gateways": 1}}))
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(APP_SPEC))
    port_a = free_port()
    keeper_port = free_port()

    def up_a() -> Started:
        run_env = dict(env, RAYGATE_RUN_DIR=str(tmp_path / "run-a"))
        return Started(["-m", "deploy.cli", "up", str(tmp_path / "empty.yaml"), "--port", str(port_a),
                        "--num-cpus", "2"], tmp_path / "up-a.log", run_env)

    def keeper_doc() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{keeper_port}/-/keeper/endpoints", timeout=2) as r:
            return json.loads(r.read())

    started: dict[str, Started] = {}
    try:
        started["a"] = up_a()
        b = side_platforms()  # while A boots
        env["KEEPER_TEST_TOKEN_B"] = b.admin_token
        urls = {"a": f"http://127.0.0.1:{port_a}", "b": b.url}
        tokens = {"a": "RAYGATE_ADMIN_TOKEN", "b": "KEEPER_TEST_TOKEN_B"}
        # Short policy knobs (checks every 0.2 s, still two in a row to change state): the scenario, not its pace.
        (tmp_path / "keeper.yaml").write_text(yaml.safe_dump({
            "spec": str(tmp_path / "app.yaml"), "port": keeper_port, "check_interval_s": 0.2, "fail_after": 2,
            "recover_after": 2, "reapply_interval_s": 5,
            "clusters": [{"name": n, "url": urls[n], "token_env": tokens[n]} for n in ("a", "b")]}))
        started["a"].wait_for("serving on", 300)
        started["keeper"] = Started(["-m", "deploy.keeper", str(tmp_path / "keeper.yaml")],
                                    tmp_path / "keeper.log", env)
        wait_until(lambda: all(c["up"] for c in keeper_doc()["clusters"]), 240, "the app running on both clusters")
        assert keeper_doc()["endpoints"] == [urls["a"], urls["b"]]

        load = _Load(f"http://127.0.0.1:{keeper_port}/-/keeper/endpoints",
                     ClientConfig(timeout_s=5, deadline_s=30, probe_interval_s=0.2, refresh_interval_s=0.2))
        load.start()
        wait_until(lambda: load.answered_by(urls["a"]) >= 20, 60, "calls answered by A")

        started["a"].remember_tree()
        started["a"].kill()
        killed_at = len(load.results)
        wait_until(lambda: keeper_doc()["endpoints"][0] == urls["b"], 60, "the Keeper to put B first")
        wait_until(lambda: load.answered_by(urls["b"], since=killed_at) >= 50, 60, "calls answered by B")

        started["a"] = up_a()  # same run dir: Redis' append-only file brings the spec back
        started["a"].wait_for("serving on", 300)
        wait_until(lambda: keeper_doc()["endpoints"][0] == urls["a"], 240, "the Keeper to put A first again")
        back_at = len(load.results)
        wait_until(lambda: load.answered_by(urls["a"], since=back_at) >= 20, 60, "calls back on A")
        load.stop()
        assert load.failures == [], load.failures[:5]
        assert len(load.results) > 100
    finally:
        # Every check is done: SIGKILL what this test started (A's `up` with its Ray and Redis, the Keeper)
        # rather than wait for graceful shutdowns that no assertion here looks at.
        for process in started.values():
            process.kill()


class _Load:
    """Calls in a loop from a thread (four at a time) through an AsyncClient that follows the Keeper."""

    def __init__(self, keeper_url: str, config) -> None:
        self.keeper_url, self.config = keeper_url, config
        self.results: list[str] = []  # endpoint that answered each call, in order
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def answered_by(self, url: str, since: int = 0) -> int:
        return sum(1 for r in self.results[since:] if r == url)

    async def _run(self) -> None:
        from raygate import AsyncClient

        x = {"x": [float(i) for i in range(16)]}
        async with AsyncClient(keeper=self.keeper_url, config=self.config) as client:
            async def worker():
                while not self._stop.is_set():
                    try:
                        answer = await client.post("/lin", json=x, idempotent=True)
                        self.results.append(answer.endpoint)
                    except Exception as exc:
                        self.failures.append(repr(exc))
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(worker() for _ in range(4)))


def test_raygate_cli_has_the_keeper_command(tmp_path):
    """`raygate keeper KEEPER.yaml` is a subcommand of the CLI; a bad file is refused naming the field."""
    from click.testing import CliRunner

    from deploy.cli import cli

    runner = CliRunner()
    assert "KEEPER.yaml" in runner.invoke(cli, ["keeper", "--help"]).output
    (tmp_path / "keeper.yaml").write_text(yaml.safe_dump({"spec": "app.yaml", "clusters": []}))
    result = runner.invoke(cli, ["keeper", str(tmp_path / "keeper.yaml")])
    assert result.exit_code == 2 and "clusters" in result.output
