"""The controller actor: desired state (the spec) -> replica and gateway actors, health, the routing table.

One named, restartable async actor. Replicas and gateways are detached named actors, so a controller that
restarts finds them again (their ids are saved in Redis with the last applied spec) instead of taking the
apps down. Every state change produces a new routing table, which gateways and handles long-poll.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field

import ray
import structlog

from deploy.spec import ResolvedVersion, Spec, SpecError, parse_spec, resolve_versions
from deploy.state import ControllerStateStore
from gateway.config import GatewayConfig, resolve_gateway_count
from replicas.replica import Replica, ReplicaConfig
from replicas.routing.table import (
    AppRoute,
    DeploymentRoute,
    ReplicaInfo,
    RoutingTable,
    VersionRoute,
)
from replicas.runtime import configure_logging, serving_priority

__all__ = ["ControllerConfig", "Controller", "ApplyError", "get_or_create_controller"]

log = structlog.get_logger("raygate.controller")

_ReplicaActor = ray.remote(Replica)

STARTING, RUNNING, UNHEALTHY, DRAINING, FAILED = "STARTING", "RUNNING", "UNHEALTHY", "DRAINING", "FAILED"


class ApplyError(RuntimeError):
    """A spec could not be applied; the running apps were left as they were."""


@dataclass(frozen=True)
class ControllerConfig:
    redis_url: str | None = None  # where the last applied spec is kept; None: memory only
    name: str = "raygate-controller"  # actor name
    namespace: str = "raygate"  # Ray namespace of every raygate actor
    replica_host: str | None = None  # bind address of replicas' direct channels; None: each node's Ray address
    health_period_s: float = 0.5  # time between health probes of a replica
    health_timeout_s: float = 1.0  # a probe slower than this counts as failed
    unhealthy_after: int = 2  # consecutive failed probes before a replica is replaced
    start_timeout_s: float = 300.0  # time a new replica may take to become ready (pip installs included)
    drain_timeout_s: float = 10.0  # time a retiring replica gets to finish its requests
    gateway: GatewayConfig = field(default_factory=GatewayConfig)  # gateway settings


@dataclass
class ReplicaRecord:
    replica_id: str
    key: tuple[str, str, str]
    actor: object
    state: str = STARTING
    host: str = ""
    port: int = 0
    pid: int = 0
    node_id: str = ""
    actor_id: str = ""
    failures: int = 0
    started_at: float = field(default_factory=time.time)
    ready: asyncio.Task | None = None
    error: str = ""
    fingerprint: str = ""  # code/config fingerprint the replica runs (rolling updates replace the others)

    def info(self) -> ReplicaInfo:
        app, deployment, version = self.key
        return ReplicaInfo(replica_id=self.replica_id, app=app, deployment=deployment, version=version,
                           host=self.host, port=self.port, actor=self.actor, actor_id=self.actor_id,
                           node_id=self.node_id, pid=self.pid, state=self.state)


@dataclass
class VersionState:
    resolved: ResolvedVersion
    target: int
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    start_failures: int = 0
    next_start_at: float = 0.0
    last_error: str = ""
    rolling: bool = False  # a rolling update is replacing replicas one at a time


def _short_error(exc: BaseException) -> str:
    """The line of a Ray error that names the user's exception, not the whole remote traceback."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if ("Error" in line or "Exception" in line) and not line.startswith(("File ", "Traceback", "^")):
            return line[:800]
    return (lines[-1] if lines else repr(exc))[:800]


class Controller:
    """Ray actor class (see `get_or_create_controller`)."""

    def __init__(self, config: ControllerConfig) -> None:
        configure_logging()
        serving_priority()  # health probing is latency-bound too
        self.config = config
        self.spec = Spec()
        self.versions: dict[tuple[str, str, str], VersionState] = {}
        self.weight_overrides: dict[tuple[str, str], dict[str, float]] = {}
        self.channel_token = secrets.token_bytes(16)
        self.table = RoutingTable(version=0, channel_token=self.channel_token)
        self._table_changed = asyncio.Event()
        self._dirty = False
        self._save_pending = False
        self.generation = 0
        self.apply_status: dict = {"generation": 0, "state": "idle", "error": None}
        self._apply_lock: asyncio.Lock | None = None
        self._started: asyncio.Task | None = None
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._gateways: list = []
        self._redis = None
        self._store: ControllerStateStore | None = None
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> dict:
        """Recover saved state, start gateways and the control loop. Safe to call more than once."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._started)
        return {"gateways": len(self._gateways), "generation": self.generation}

    async def _start(self) -> None:
        self._apply_lock = asyncio.Lock()
        if self.config.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(self.config.redis_url, socket_timeout=2.0)
            self._store = ControllerStateStore(self._redis, self.config.namespace)
            await self._recover()
        self._loop_task = asyncio.get_running_loop().create_task(self._control_loop())
        await self._ensure_gateways()

    async def _recover(self) -> None:
        try:
            saved = await self._store.load()
        except Exception as exc:
            log.warning("controller_state_unreadable", error=repr(exc))
            return
        if not saved:
            return
        self.channel_token = bytes.fromhex(saved["channel_token"])
        self.generation = saved.get("generation", 0)
        try:
            spec = parse_spec(saved["spec"], "<saved spec>")
        except SpecError as exc:
            log.error("saved_spec_invalid", error=str(exc))
            return
        self.spec = spec
        self.weight_overrides = {tuple(k.split("/", 1)): v for k, v in saved.get("weights", {}).items()}
        targets = {tuple(k.split("/")): n for k, n in saved.get("targets", {}).items()}
        for key, resolved in resolve_versions(spec).items():
            self.versions[key] = VersionState(resolved, targets.get(key, resolved.num_replicas))
        adopted = 0
        for replica_id, key in saved.get("replicas", {}).items():
            state = self.versions.get(tuple(key))
            if state is None:
                continue
            try:
                actor = ray.get_actor(replica_id, namespace=self.config.namespace)
                info = await asyncio.wait_for(actor.ready.remote(), self.config.health_timeout_s * 3)
            except Exception:
                continue
            record = ReplicaRecord(replica_id, tuple(key), actor, state=RUNNING,
                                   fingerprint=state.resolved.fingerprint)
            self._fill(record, info)
            state.replicas[replica_id] = record
            adopted += 1
        log.info("controller_recovered", generation=self.generation, adopted_replicas=adopted)
        self._publish()

    async def _save(self) -> None:
        if self._store is None:
            return
        state = {
            "spec": self.spec.to_dict(), "generation": self.generation, "channel_token": self.channel_token.hex(),
            "weights": {"/".join(k): v for k, v in self.weight_overrides.items()},
            "targets": {"/".join(k): s.target for k, s in self.versions.items()},
            "replicas": {r.replica_id: list(k) for k, s in self.versions.items() for r in s.replicas.values()
                         if r.state in (STARTING, RUNNING)},
        }
        try:
            await self._store.save(state)
        except Exception as exc:  # serving goes on; the state is saved again on the next change
            log.warning("controller_state_not_saved", error=repr(exc))

    async def _ensure_gateways(self) -> None:
        from gateway.actor import Gateway

        gateway = self.config.gateway
        env = {"PROMETHEUS_MULTIPROC_DIR": gateway.metrics_dir} if gateway.metrics_dir else {}
        handles = []
        for index in range(resolve_gateway_count(gateway.num_gateways, os.cpu_count() or 1)):
            name = f"raygate-gateway-{index}"
            try:
                handle = ray.get_actor(name, namespace=self.config.namespace)
            except ValueError:
                handle = ray.remote(Gateway).options(
                    name=name, namespace=self.config.namespace, lifetime="detached", max_restarts=-1,
                    max_concurrency=8, num_cpus=0, runtime_env={"env_vars": env},
                ).remote(gateway, index)
            handles.append(handle)
        self._gateways = handles
        await asyncio.gather(*(h.ready.remote() for h in handles))

    async def _control_loop(self) -> None:
        """Probe, reconcile, publish; every stage wrapped so the loop never dies."""
        while not self._stopping:
            started = time.monotonic()
            for stage in (self._probe_all, self._reconcile):
                try:
                    await stage()
                except Exception as exc:
                    log.exception("control_stage_failed", stage=stage.__name__, error=repr(exc))
            if self._dirty:
                self._publish()
            if self._save_pending:
                self._save_pending = False
                self._spawn(self._save())
            await asyncio.sleep(max(0.05, self.config.health_period_s - (time.monotonic() - started)))

    # -- replicas ---------------------------------------------------------------------------------
    def _fill(self, record: ReplicaRecord, info: dict) -> None:
        record.host, record.port, record.pid = info["host"], info["port"], info["pid"]
        record.node_id, record.actor_id = info["node_id"], info["actor_id"]

    def _start_replica(self, state: VersionState, publish: bool = True) -> ReplicaRecord:
        resolved = state.resolved
        replica_id = f"{resolved.app}.{resolved.deployment}.{resolved.name}#{secrets.token_hex(4)}"
        options = dict(
            name=replica_id, namespace=self.config.namespace, lifetime="detached", max_restarts=0,
            max_concurrency=8, num_cpus=resolved.resources.num_cpus, num_gpus=resolved.resources.num_gpus,
            runtime_env=resolved.runtime_env.to_ray() or None,
        )
        if resolved.resources.memory:
            options["memory"] = resolved.resources.memory
        config = ReplicaConfig(
            replica_id=replica_id, app=resolved.app, deployment=resolved.deployment, version=resolved.name,
            import_path=resolved.import_path, init_args=tuple(resolved.init_args),
            init_kwargs=dict(resolved.init_kwargs), max_ongoing_requests=resolved.max_ongoing_requests,
            channel_token=self.channel_token, bind_host=self.config.replica_host,
            controller_name=self.config.name, namespace=self.config.namespace,
        )
        actor = _ReplicaActor.options(**options).remote(config)
        record = ReplicaRecord(replica_id, resolved.key, actor, fingerprint=resolved.fingerprint)
        state.replicas[replica_id] = record
        record.ready = self._spawn(self._await_ready(state, record, publish))
        return record

    async def _await_ready(self, state: VersionState, record: ReplicaRecord, publish: bool) -> None:
        try:
            info = await asyncio.wait_for(record.actor.ready.remote(), self.config.start_timeout_s)
        except Exception as exc:
            record.state, record.error = FAILED, _short_error(exc)
            state.last_error = record.error
            state.start_failures += 1
            state.next_start_at = time.monotonic() + min(30.0, 0.5 * 2 ** state.start_failures)
            state.replicas.pop(record.replica_id, None)
            self._kill(record)
            log.warning("replica_start_failed", replica=record.replica_id, error=record.error)
            raise ApplyError(f"replica of {'/'.join(state.resolved.key)} failed to start: {record.error}") from None
        self._fill(record, info)
        if record.state == STARTING:
            record.state = RUNNING
        state.start_failures = 0
        log.info("replica_running", replica=record.replica_id, pid=record.pid)
        if publish:
            self._dirty = True
            self._publish()

    def _kill(self, record: ReplicaRecord) -> None:
        try:
            ray.kill(record.actor, no_restart=True)
        except Exception:
            pass

    async def _retire(self, record: ReplicaRecord) -> None:
        """Take a replica out of routing, let it finish its requests, then stop it."""
        record.state = DRAINING
        await asyncio.sleep(0.3)  # gateways pick up the table without it first
        try:
            await asyncio.wait_for(record.actor.drain.remote(self.config.drain_timeout_s),
                                   self.config.drain_timeout_s + 5)
        except Exception:
            pass
        self._kill(record)
        log.info("replica_retired", replica=record.replica_id)

    async def _probe_one(self, state: VersionState, record: ReplicaRecord) -> None:
        try:
            await asyncio.wait_for(record.actor.check_health.remote(), self.config.health_timeout_s)
            record.failures = 0
            return
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
            reason, dead = _short_error(exc), True
        except Exception as exc:
            reason, dead = repr(exc) if not isinstance(exc, asyncio.TimeoutError) else "probe timed out", False
        record.failures += 1
        if dead or record.failures >= self.config.unhealthy_after:
            record.state = UNHEALTHY
            record.error = reason
            state.replicas.pop(record.replica_id, None)
            self._dirty = True
            self._publish()  # out of routing at once
            self._kill(record)
            log.warning("replica_replaced", replica=record.replica_id, reason=reason, dead=dead)

    async def _probe_all(self) -> None:
        probes = [self._probe_one(s, r) for s in self.versions.values() for r in list(s.replicas.values())
                  if r.state == RUNNING]
        if probes:
            await asyncio.gather(*probes)

    async def _reconcile(self) -> None:
        now = time.monotonic()
        for state in list(self.versions.values()):
            if state.rolling:
                continue
            live = [r for r in state.replicas.values() if r.state in (STARTING, RUNNING)]
            if any(r.fingerprint != state.resolved.fingerprint for r in live) and now >= state.next_start_at:
                self._spawn(self._roll(state))
                continue
            if len(live) < state.target and now >= state.next_start_at:
                for _ in range(state.target - len(live)):
                    self._start_replica(state).ready.add_done_callback(_ignore_result)
            elif len(live) > state.target:
                surplus = sorted(live, key=lambda r: (r.state == RUNNING, r.started_at), reverse=False)
                for record in surplus[: len(live) - state.target]:
                    state.replicas.pop(record.replica_id, None)
                    self._dirty = True
                    self._spawn(self._retire(record))

    # -- routing table ----------------------------------------------------------------------------
    def _build_table(self, version: int) -> RoutingTable:
        apps, deployments = [], {}
        for app in self.spec.apps:
            apps.append(AppRoute(app.name, app.route_prefix, app.ingress))
            for dep in app.deployments:
                overrides = self.weight_overrides.get((app.name, dep.name), {})
                versions = []
                for spec_version in dep.versions:
                    state = self.versions.get((app.name, dep.name, spec_version.name))
                    replicas = tuple(r.info() for r in state.replicas.values() if r.state == RUNNING) if state else ()
                    versions.append(VersionRoute(spec_version.name, overrides.get(spec_version.name,
                                                                                  spec_version.weight),
                                                 replicas, spec_version.mirror_percent))
                deployments[(app.name, dep.name)] = DeploymentRoute(
                    app=app.name, name=dep.name, versions=tuple(versions),
                    max_ongoing_requests=dep.max_ongoing_requests, max_queued_requests=dep.max_queued_requests,
                    request_timeout_s=dep.request_timeout_s, idempotent=dep.idempotent,
                    allow_pinning=dep.allow_pinning, max_retries=dep.max_retries,
                    hedge_after_s=dep.hedge_after_s)
        states: dict[tuple, dict[str, int]] = {}
        for key, state in self.versions.items():
            counts = {name: 0 for name in (STARTING, RUNNING, DRAINING)}
            for record in state.replicas.values():
                counts[record.state] = counts.get(record.state, 0) + 1
            states[key] = counts
        return RoutingTable(version=version, apps=tuple(apps), deployments=deployments,
                            channel_token=self.channel_token, replica_states=states)

    def _publish(self) -> None:
        # Milliseconds since the epoch keep versions increasing across controller restarts.
        version = max(self.table.version + 1, int(time.time() * 1000))
        self.table = self._build_table(version)
        self._dirty = False
        self._save_pending = True  # the replica set may have changed: persist it on the next tick
        event, self._table_changed = self._table_changed, asyncio.Event()
        event.set()

    def current_table(self) -> RoutingTable:
        """The table as it is now, without waiting for start-up (gateways ask this before they bind)."""
        return self.table

    async def get_table(self) -> RoutingTable:
        await self.start()
        return self.table

    async def watch_table(self, known_version: int, timeout_s: float = 10.0,
                          watcher_id: str = "") -> RoutingTable | None:
        """Long poll: the table as soon as its version is newer than `known_version`, else None on timeout."""
        await self.start()
        if self.table.version > known_version:
            return self.table
        try:
            await asyncio.wait_for(self._table_changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        return self.table if self.table.version > known_version else None

    # -- apply ------------------------------------------------------------------------------------
    async def apply(self, spec_doc: dict, wait: bool = True) -> dict:
        """Validate and apply a spec. With wait=False, return at once with the generation to poll."""
        await self.start()
        spec = parse_spec(spec_doc, "<submitted spec>")  # SpecError goes back to the caller
        self.generation += 1
        generation = self.generation
        self.apply_status = {"generation": generation, "state": "applying", "error": None,
                             "started_at": time.time()}
        task = self._spawn(self._apply(spec, generation))
        if wait:
            await asyncio.shield(task)
        return dict(self.apply_status) if wait else {"generation": generation, "state": "applying"}

    async def _apply(self, spec: Spec, generation: int) -> None:
        async with self._apply_lock:
            try:
                await self._apply_locked(spec)
            except Exception as exc:
                if generation == self.generation:
                    self.apply_status.update(state="failed", error=str(exc), finished_at=time.time())
                log.warning("apply_failed", generation=generation, error=str(exc))
                return
            if generation == self.generation:
                self.apply_status.update(state="applied", finished_at=time.time())
            log.info("apply_done", generation=generation)

    async def _apply_locked(self, spec: Spec) -> None:
        """New versions start in full; a changed version starts one replica with the new code (a canary).
        Only when all of them are ready does anything switch; then changed versions roll one replica at a
        time. Any start failure kills what was started and leaves the running apps as they were."""
        desired = resolve_versions(spec)
        staged: dict[tuple, VersionState] = {}
        canaries: dict[tuple, VersionState] = {}
        for key, resolved in desired.items():
            current = self.versions.get(key)
            if current is None:
                state = VersionState(resolved, resolved.num_replicas)
                for _ in range(resolved.num_replicas):
                    self._start_replica(state, publish=False)
                staged[key] = state
            elif current.resolved.fingerprint != resolved.fingerprint and resolved.num_replicas > 0:
                canary = VersionState(resolved, 1)
                self._start_replica(canary, publish=False)
                canaries[key] = canary
        waits = [r.ready for s in (*staged.values(), *canaries.values()) for r in list(s.replicas.values())]
        results = await asyncio.gather(*waits, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for state in (*staged.values(), *canaries.values()):
                for record in state.replicas.values():
                    self._kill(record)
            raise ApplyError(f"spec not applied, running apps left unchanged: {errors[0]}")
        old = self.versions
        new: dict[tuple, VersionState] = {}
        for key, resolved in desired.items():
            if key in staged:
                new[key] = staged[key]
            else:
                state = old[key]
                state.resolved, state.target = resolved, resolved.num_replicas
                if key in canaries:
                    state.replicas.update(canaries[key].replicas)
                new[key] = state
        retired = [r for k, s in old.items() if new.get(k) is not s for r in s.replicas.values()]
        self.versions = new
        self.spec = spec
        self.weight_overrides = {}
        self._publish()
        for record in retired:
            self._spawn(self._retire(record))
        await self._save()
        rolls = [self._roll(new[key]) for key in canaries]
        if rolls:
            await asyncio.gather(*rolls)

    async def _roll(self, state: VersionState) -> None:
        """Replace replicas running an older fingerprint one at a time: start one (if that keeps the count
        within target + 1), wait until it is ready and routed, then drain and stop one old replica."""
        if state.rolling:
            return
        state.rolling = True
        try:
            while True:
                live = [r for r in state.replicas.values() if r.state in (STARTING, RUNNING)]
                old = [r for r in live if r.fingerprint != state.resolved.fingerprint]
                if not old:
                    return
                if len(live) <= state.target:
                    record = self._start_replica(state)
                    try:
                        await record.ready
                    except ApplyError as exc:
                        log.warning("rolling_update_paused", version="/".join(state.resolved.key), error=str(exc))
                        return  # the control loop resumes it after the start back-off
                victim = old[0]
                state.replicas.pop(victim.replica_id, None)
                self._publish()
                await self._retire(victim)
                log.info("rolling_update_step", version="/".join(state.resolved.key), replaced=victim.replica_id)
        finally:
            state.rolling = False

    def get_apply_status(self) -> dict:
        return dict(self.apply_status)

    # -- runtime changes --------------------------------------------------------------------------
    async def scale(self, app: str, deployment: str, version: str, num_replicas: int) -> dict:
        state = self.versions.get((app, deployment, version))
        if state is None:
            raise KeyError(f"no version {version!r} of deployment {deployment!r} in app {app!r}")
        if num_replicas < 0:
            raise ValueError("num_replicas must be >= 0")
        state.target = num_replicas
        await self._save()
        return {"app": app, "deployment": deployment, "version": version, "target": num_replicas}

    async def set_weights(self, app: str, deployment: str, weights: dict[str, float]) -> dict:
        dep = next((d for a in self.spec.apps if a.name == app for d in a.deployments if d.name == deployment), None)
        if dep is None:
            raise KeyError(f"no deployment {deployment!r} in app {app!r}")
        known = {v.name for v in dep.versions}
        unknown = sorted(set(weights) - known)
        if unknown:
            raise KeyError(f"deployment {deployment!r} has no version(s) {', '.join(unknown)} "
                           f"(versions: {', '.join(sorted(known))})")
        if any(w < 0 for w in weights.values()):
            raise ValueError("weights must be >= 0")
        merged = {v.name: v.weight for v in dep.versions} | self.weight_overrides.get((app, deployment), {})
        merged |= {k: float(w) for k, w in weights.items()}
        if not any(w > 0 for w in merged.values()):
            raise ValueError("at least one version needs a positive weight")
        self.weight_overrides[(app, deployment)] = merged
        self._publish()
        await self._save()
        return {"app": app, "deployment": deployment, "weights": merged, "table_version": self.table.version}

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict:
        apps = []
        for app in self.spec.apps:
            deployments = []
            for dep in app.deployments:
                route = self.table.deployment(app.name, dep.name)
                versions = []
                for spec_version in dep.versions:
                    state = self.versions.get((app.name, dep.name, spec_version.name))
                    weight = route.version(spec_version.name).weight if route and route.version(
                        spec_version.name) else spec_version.weight
                    replicas = [{
                        "replica_id": r.replica_id, "actor_id": r.actor_id, "node_id": r.node_id, "pid": r.pid,
                        "version": spec_version.name, "state": r.state, "address": f"{r.host}:{r.port}",
                    } for r in (state.replicas.values() if state else ())]
                    versions.append({"name": spec_version.name, "weight": weight,
                                     "rolling": bool(state and (state.rolling or any(
                                         r.fingerprint != state.resolved.fingerprint
                                         for r in state.replicas.values()))),
                                     "target": state.target if state else 0,
                                     "running": sum(r["state"] == RUNNING for r in replicas),
                                     "last_error": state.last_error if state else "", "replicas": replicas})
                deployments.append({"name": dep.name, "versions": versions})
            apps.append({"name": app.name, "route_prefix": app.route_prefix, "ingress": app.ingress,
                         "deployments": deployments})
        return {"generation": self.generation, "apply": dict(self.apply_status), "table_version": self.table.version,
                "apps": apps, "gateways": len(self._gateways)}

    async def gateways(self) -> list:
        await self.start()
        return list(self._gateways)

    async def shutdown(self, forget: bool = False) -> None:
        """Stop gateways and replicas. With forget=True the saved spec is removed too."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        for gateway in self._gateways:
            try:
                await asyncio.wait_for(gateway.stop.remote(), 5)
            except Exception:
                pass
            try:
                ray.kill(gateway, no_restart=True)
            except Exception:
                pass
        for state in self.versions.values():
            for record in state.replicas.values():
                self._kill(record)
        if forget and self._store is not None:
            try:
                await self._store.clear()
            except Exception:
                pass


def _ignore_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def get_or_create_controller(config: ControllerConfig):
    """The named controller, created (detached, restartable) if it does not exist yet."""
    try:
        return ray.get_actor(config.name, namespace=config.namespace)
    except ValueError:
        return ray.remote(Controller).options(
            name=config.name, namespace=config.namespace, lifetime="detached", max_restarts=-1,
            max_concurrency=1000, num_cpus=0, get_if_exists=True,
        ).remote(config)
