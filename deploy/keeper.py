"""The Keeper (`raygate keeper KEEPER.yaml`): one spec on several clusters, and the endpoint list clients use.

It applies the spec to every cluster through its admin API (`POST /-/admin/deploy`), checks each cluster every
`check_interval_s` (`GET /-/ready`, then `GET /-/admin/status`: every app of the spec present, every version
with a target running at least one replica), re-applies the spec to a cluster that answers without the spec's
apps (a cluster rebuilt empty), and publishes the ordered list of gateway endpoints: clusters that are up in
the configured order, then those that are down (a client tries those only when nothing else answers).
A cluster goes down after `fail_after` failed checks in a row and comes back after `recover_after` good ones,
so one slow answer does not flap traffic. Clients read the list from `GET /-/keeper/endpoints` (127.0.0.1 by
default) or from `endpoints_file` (written atomically), e.g. `raygate.Client(keeper="http://...")`.

What the Keeper does not do: it does not carry requests (clients fail over on their own within a call, the
Keeper's list decides where the next calls start), and it keeps no state of its own across restarts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import click
import orjson
import structlog
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploy.spec import SpecError, load_spec
from replicas.runtime import stop_task

__all__ = [
    "Cluster",
    "ClusterHealth",
    "ClusterSpec",
    "Keeper",
    "KeeperSpec",
    "endpoint_order",
    "keeper_command",
    "load_keeper_spec",
    "main",
    "observe_check",
    "run_keeper",
]

log = structlog.get_logger("raygate.keeper")


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="name of the cluster in logs and status")
    url: str = Field(description="the cluster's gateway URL, as clients reach it (http://host:port)")
    token: str | None = Field(None, description="admin bearer token (prefer token_file or token_env)")
    token_file: str | None = Field(None, description="file holding the admin token")
    token_env: str | None = Field(None, description="environment variable holding the admin token")


class KeeperSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    spec: str = Field(description="path of the app spec applied to every cluster (relative to this file)")
    clusters: tuple[ClusterSpec, ...] = Field(min_length=1, description="clusters, preferred first")
    host: str = Field("127.0.0.1", description="bind address of the Keeper's own HTTP server")
    port: int = Field(8600, ge=0, le=65535, description="port of the Keeper's HTTP server (0: any free port)")
    endpoints_file: str | None = Field(None, description="also write the endpoint list to this JSON file")
    check_interval_s: float = Field(1.0, gt=0, description="time between health checks of a cluster")
    check_timeout_s: float = Field(2.0, gt=0, description="one health check (ready + status)")
    fail_after: int = Field(2, ge=1, description="failed checks in a row that take a cluster out")
    recover_after: int = Field(2, ge=1, description="good checks in a row that bring a cluster back")
    reapply_interval_s: float = Field(10.0, gt=0, description="least time between two applies to one cluster")


@dataclass(frozen=True)
class Cluster:
    name: str  # from ClusterSpec
    url: str  # gateway URL without a trailing slash
    token: str  # admin bearer token, resolved


@dataclass(frozen=True)
class ClusterHealth:
    up: bool = False  # in the front of the endpoint list
    good: int = 0  # good checks in a row
    bad: int = 0  # failed checks in a row
    reason: str = "not checked yet"  # last failure, or "ok"
    changed_at: float = 0.0  # when `up` last changed (monotonic seconds)


def observe_check(health: ClusterHealth, ok: bool, reason: str, now: float, fail_after: int,
                  recover_after: int) -> ClusterHealth:
    """The cluster's health after one check (pure: hysteresis both ways)."""
    good, bad = (health.good + 1, 0) if ok else (0, health.bad + 1)
    up = health.up
    if up and bad >= fail_after:
        up = False
    elif not up and good >= recover_after:
        up = True
    return ClusterHealth(up=up, good=good, bad=bad, reason="ok" if ok else reason,
                         changed_at=now if up != health.up else health.changed_at)


def endpoint_order(clusters: list[Cluster], health: dict[str, ClusterHealth]) -> list[str]:
    """Clusters that are up in configured order, then those that are down, in configured order."""
    up = [c.url for c in clusters if health[c.name].up]
    return up + [c.url for c in clusters if not health[c.name].up]


def load_keeper_spec(path: str | Path, environ: dict[str, str]) -> tuple[KeeperSpec, list[Cluster], dict]:
    """Parse KEEPER.yaml, resolve tokens, load and validate the app spec. Raises SpecError naming the field."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
        spec = KeeperSpec.model_validate(doc or {})
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise SpecError(f"{path}: {exc}") from None
    clusters = []
    for item in spec.clusters:
        token = item.token
        if item.token_file:
            token = Path(item.token_file).read_text().strip()
        elif item.token_env:
            token = environ.get(item.token_env)
        if not token:
            raise SpecError(f"{path}: clusters[{item.name}]: no admin token (token, token_file or token_env)")
        clusters.append(Cluster(item.name, item.url.rstrip("/"), token))
    if len({c.name for c in clusters}) != len(clusters):
        raise SpecError(f"{path}: clusters: names must be unique")
    app_spec_path = Path(spec.spec) if Path(spec.spec).is_absolute() else path.parent / spec.spec
    app_spec = load_spec(app_spec_path).to_dict()
    return spec, clusters, app_spec


class Keeper:
    """The Keeper's loop and HTTP server on the running event loop."""

    def __init__(self, spec: KeeperSpec, clusters: list[Cluster], app_spec: dict,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clusters = clusters
        self.app_spec = app_spec
        self.apps = {a["name"] for a in app_spec.get("apps", [])}
        self.clock = clock
        self.health = {c.name: ClusterHealth() for c in clusters}
        self.last_apply: dict[str, float] = {}
        self.endpoints = [c.url for c in clusters]
        self.version = 0  # bumped whenever the endpoint list changes
        self.port = spec.port
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> Keeper:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.spec.check_timeout_s))
        app = web.Application()
        app.router.add_get("/-/keeper/endpoints", self._serve_endpoints)
        app.router.add_get("/-/keeper/status", self._serve_status)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.spec.host, self.spec.port).start()
        self.port = self._runner.addresses[0][1]
        self._write_file()
        await asyncio.gather(*(self._apply(c) for c in self.clusters))
        self._task = asyncio.get_running_loop().create_task(self._loop())
        log.info("keeper_started", port=self.port, clusters=[c.name for c in self.clusters])
        return self

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def document(self) -> dict:
        return {"endpoints": list(self.endpoints), "version": self.version,
                "clusters": [{"name": c.name, "url": c.url, "up": self.health[c.name].up,
                              "reason": self.health[c.name].reason} for c in self.clusters]}

    async def _serve_endpoints(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.document()), content_type="application/json")

    async def _serve_status(self, request: web.Request) -> web.Response:
        doc = self.document()
        doc["apps"] = sorted(self.apps)
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    def _write_file(self) -> None:
        if not self.spec.endpoints_file:
            return
        path = Path(self.spec.endpoints_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_bytes(orjson.dumps(self.document()))
        os.replace(temporary, path)

    async def _loop(self) -> None:
        """Check every cluster, publish the new order; each stage wrapped so the loop never dies."""
        while True:
            started = self.clock()
            try:
                await self.check_all()
            except Exception as exc:
                log.exception("keeper_check_failed", error=repr(exc))
            await asyncio.sleep(max(0.05, self.spec.check_interval_s - (self.clock() - started)))

    async def check_all(self) -> None:
        results = await asyncio.gather(*(self._check(c) for c in self.clusters))
        now = self.clock()
        for cluster, (ok, reason) in zip(self.clusters, results):
            before = self.health[cluster.name]
            after = observe_check(before, ok, reason, now, self.spec.fail_after, self.spec.recover_after)
            if after.up != before.up:
                (log.info if after.up else log.warning)("cluster_up" if after.up else "cluster_down",
                                                        cluster=cluster.name, reason=reason)
            self.health[cluster.name] = after
        order = endpoint_order(self.clusters, self.health)
        if order != self.endpoints:
            self.endpoints = order
            self.version += 1
            self._write_file()
            log.info("endpoints_changed", endpoints=order, version=self.version)

    async def _check(self, cluster: Cluster) -> tuple[bool, str]:
        try:
            async with self._session.get(cluster.url + "/-/ready") as response:
                if response.status != 200:
                    return False, f"/-/ready answered {response.status}"
            async with self._session.get(cluster.url + "/-/admin/status", headers=self._auth(cluster)) as response:
                if response.status != 200:
                    return False, f"/-/admin/status answered {response.status}"
                status = orjson.loads(await response.read())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            return False, f"unreachable: {type(exc).__name__}"
        missing = self.apps - {a["name"] for a in status.get("apps", [])}
        if missing:
            if self.clock() - self.last_apply.get(cluster.name, -1e9) >= self.spec.reapply_interval_s:
                asyncio.get_running_loop().create_task(self._apply(cluster))
            return False, f"apps missing: {', '.join(sorted(missing))}"
        idle = [f"{a['name']}/{d['name']}/{v['name']}" for a in status["apps"] if a["name"] in self.apps
                for d in a["deployments"] for v in d["versions"] if v["target"] > 0 and v["running"] < 1]
        if idle:
            return False, f"no running replica: {', '.join(idle)}"
        return True, "ok"

    def _auth(self, cluster: Cluster) -> dict:
        return {"Authorization": f"Bearer {cluster.token}"}

    async def _apply(self, cluster: Cluster) -> None:
        """Submit the spec (the cluster's controller applies it; the checks see when it is running)."""
        self.last_apply[cluster.name] = self.clock()
        try:
            async with self._session.post(cluster.url + "/-/admin/deploy?wait=0&source=keeper",
                                          data=orjson.dumps(self.app_spec),
                                          headers={**self._auth(cluster), "Content-Type": "application/json"}) as r:
                body = await r.read()
                if r.status >= 300:
                    log.warning("keeper_apply_refused", cluster=cluster.name, status=r.status,
                                body=body[:300].decode("utf-8", "replace"))
                    return
            log.info("keeper_applied", cluster=cluster.name)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("keeper_apply_failed", cluster=cluster.name, error=repr(exc))


async def _serve(spec: KeeperSpec, clusters: list[Cluster], app_spec: dict) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    keeper = await Keeper(spec, clusters, app_spec).start()
    print(f"keeper: serving endpoints on http://{spec.host}:{keeper.port}/-/keeper/endpoints "
          f"for {', '.join(c.name for c in clusters)}", flush=True)
    try:
        await stop.wait()
    finally:
        await keeper.stop()
        print("keeper: stopped", flush=True)


def run_keeper(config_path: str, port: int | None = None) -> int:
    """Entry point (`raygate keeper`, `python -m deploy.keeper`): reads tokens from the environment."""
    try:
        spec, clusters, app_spec = load_keeper_spec(config_path, dict(os.environ))
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if port is not None:
        spec = spec.model_copy(update={"port": port})
    asyncio.run(_serve(spec, clusters, app_spec))
    return 0


@click.command("keeper")
@click.argument("config", type=click.Path(dir_okay=False, exists=True))
@click.option("--port", type=int, default=None, help="Port of the Keeper's HTTP server (overrides the file).")
def keeper_command(config: str, port: int | None) -> None:
    """Apply one spec to several clusters and keep the clients' endpoint list (KEEPER.yaml)."""
    sys.exit(run_keeper(config, port))


def main() -> None:
    keeper_command(prog_name="raygate keeper")


if __name__ == "__main__":
    main()
