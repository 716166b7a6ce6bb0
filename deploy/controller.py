"""The controller actor: gathers observations, asks the pure cores what to do, and does it.

Desired state is the applied spec plus runtime overrides (deploy/changes.py); reconciliation is
`deploy/reconcile.plan`; the routing table is `deploy/table_builder.build_table`; status is
`deploy/status.build_status`; applies and rolling updates are in deploy/rollout.py. Replicas and gateways
are detached named actors, so a controller that restarts adopts them again from the state saved in Redis
(deploy/state.py) instead of taking the apps down. Every state change publishes a new routing table,
which routers long-poll with `watch_table`; their polls acknowledge the version they run (deploy/acks.py),
and replicas leave the table before they are drained, once every router acknowledged that.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ray
import structlog

from deploy import rollout
from deploy.acks import AckTracker
from deploy.changes import (
    merged_weights,
    parse_apply_document,
    parse_scale,
    parse_weights,
)
from deploy.expand import expand_spec
from deploy.features import FeatureActors, feature_status
from deploy.gateways import GatewayFleet
from deploy.names import scaler_name
from deploy.persistence import StatePersistence
from deploy.policy import ControllerConfig, start_backoff_s
from deploy.reconcile import (
    DRAINING,
    FAILED,
    RUNNING,
    STARTING,
    UNHEALTHY,
    DesiredVersion,
    ReplaceReplica,
    RetireReplica,
    RollVersion,
    StartReplicas,
    plan,
)
from deploy.records import ReplicaRecord, VersionState
from deploy.replica_ops import ApplyError, ReplicaOps
from deploy.scaling import (
    MAX_STARTUP_SAMPLES,
    AutoscaleDecision,
    clamp_target,
    decisions_by_key,
    metrics_snapshot,
    record_decision,
    scaler_decisions,
    start_scaler,
    stop_scaler,
    version_row,
)
from deploy.spec import Spec
from deploy.status import build_status
from deploy.table_builder import build_table
from replicas.routing.table import RoutingTable
from replicas.runtime import configure_logging, serving_priority

__all__ = ["ApplyError", "Controller", "ControllerConfig", "get_or_create_controller"]

log = structlog.get_logger("raygate.controller")


class Controller:
    """Ray actor class (see `get_or_create_controller`). `clock`: monotonic seconds, injected for tests."""

    def __init__(self, config: ControllerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        configure_logging()
        serving_priority()  # health probing is latency-bound too
        self.config, self.policy, self.clock = config, config.policy, clock
        self.spec = Spec()
        self.versions: dict[tuple[str, str, str], VersionState] = {}
        self.weights: dict[tuple[str, str], dict[str, float]] = {}  # runtime weight overrides (split)
        self.scales: dict[tuple[str, str, str], int] = {}  # runtime replica-count overrides (scale, scaler)
        self.startup_samples: dict[tuple[str, str, str], list[float]] = {}  # create -> ready, for the scaler
        self.autoscale_decisions: dict[tuple[str, str, str], AutoscaleDecision] = {}  # last target set per version
        self.scaler = None  # the cluster's scaler actor (deploy/scaling.py), started with the gateways
        self.launching: dict[str, ReplicaRecord] = {}  # started, not yet in `versions` (saved all the same)
        self.retiring: dict[str, ReplicaRecord] = {}  # out of the table, draining (saved: stopped on recovery)
        self.channel_token = secrets.token_bytes(16)
        self.epoch, self._table_counter = 1, 0
        self.table = build_table(self.spec, {}, {}, 0, self.channel_token)
        self._table_changed = asyncio.Event()
        self.acks = AckTracker(3 * self.policy.watcher_poll_timeout_s, clock)
        self.generation = 0
        self.apply_status: dict = {"generation": 0, "state": "idle", "error": None}
        self.change_lock = asyncio.Lock()  # one change at a time: an apply's switch, a split, a scale
        self.apply_lock = asyncio.Lock()  # one apply at a time
        self.ops = ReplicaOps(namespace=config.namespace, controller_name=config.name,
                              replica_host=config.replica_host, policy=self.policy, clock=clock)
        # Gateways ingest and consume event pipelines from the controller's Redis (db and password included).
        gateway = replace(config.gateway, redis_url=config.gateway.redis_url or config.redis_url or "")
        self.fleet = GatewayFleet(gateway, config.namespace, self.policy.gateway_call_timeout_s)
        self.features = FeatureActors(config.redis_url, config.namespace)  # scenarios' planner actors
        self.persistence = StatePersistence(config, self)
        self._started: asyncio.Task | None = None
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------------
    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> dict:
        """Recover saved state, start gateways and the control loop. Safe to call more than once; a start
        that failed (Redis unreachable) is tried again by the next call."""
        if self._started is None or (self._started.done() and self._started.exception() is not None):
            self._started = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._started)
        return {"gateways": len(self.fleet.handles), "generation": self.generation}

    async def _start(self) -> None:
        await self.persistence.open()  # waits for Redis (bounded); recovers and adopts replicas
        if not self.persistence.blocked:  # a refused saved state: routers keep the table they have
            self.publish()
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._control_loop())
        await self.fleet.ensure()
        await self.features.ensure(self.spec)
        if self.scaler is None:
            self.scaler = start_scaler(ray.get_runtime_context().current_actor, name=scaler_name(self.config.name),
                                       namespace=self.config.namespace, redis_url=self.config.redis_url,
                                       history_prefix=self.config.state_prefix)

    async def _control_loop(self) -> None:
        """Probe, plan, act; every stage wrapped so the loop never dies."""
        while not self._stopping:
            started = self.clock()
            for stage in (self._probe_all, self._reconcile):
                try:
                    await stage()
                except Exception as exc:
                    log.exception("control_stage_failed", stage=stage.__name__, error=repr(exc))
            elapsed = self.clock() - started
            await asyncio.sleep(max(self.policy.loop_min_sleep_s, self.policy.probe_period_s - elapsed))

    # -- replicas ---------------------------------------------------------------------------------
    def target(self, key: tuple[str, str, str]) -> int:
        state = self.versions.get(key)
        return self.scales.get(key, state.resolved.num_replicas if state else 0)

    def start_replica(self, state: VersionState, publish: bool = True) -> ReplicaRecord:
        """Start one replica of `state`'s version; it joins routing once ready (and saved)."""
        record = self.ops.create(state.resolved, self.channel_token)
        state.replicas[record.replica_id] = record
        self.launching[record.replica_id] = record
        record.ready = self.spawn(self._await_ready(state, record, publish))
        return record

    async def _await_ready(self, state: VersionState, record: ReplicaRecord, publish: bool) -> None:
        try:
            await self.ops.wait_ready(record)
        except ApplyError:
            if record.state == DRAINING:  # retired while starting (scale-down): killed on purpose
                self.launching.pop(record.replica_id, None)
                return
            record.state = FAILED
            state.last_error = record.error
            state.start_failures += 1
            state.next_start_at = self.clock() + start_backoff_s(state.start_failures, self.policy)
            state.replicas.pop(record.replica_id, None)
            self.launching.pop(record.replica_id, None)
            log.warning("replica_start_failed", replica=record.replica_id, error=record.error)
            raise
        await self.persistence.save()  # saved before it can serve: a restarted controller adopts it
        if publish:  # an apply's staged replicas stay in `launching` (saved) until its switch
            self.launching.pop(record.replica_id, None)
        if record.state == STARTING:
            record.state = RUNNING
            samples = self.startup_samples.setdefault(state.resolved.key, [])
            samples[:] = [*samples[1 - MAX_STARTUP_SAMPLES:], self.clock() - record.started_at]
        state.start_failures = 0
        log.info("replica_running", replica=record.replica_id, pid=record.pid)
        if publish:
            self.publish()

    async def retire(self, records: list[ReplicaRecord]) -> None:
        """Replicas already out of the published table: wait until every router runs a table without
        them (contract 1), then drain and stop them."""
        if not records:
            return
        starting = [r for r in records if r.state == STARTING]  # never routed: nothing to drain
        for record in starting:
            record.state = DRAINING
            self.ops.kill(record)
        records = [r for r in records if r not in starting]
        if not records:
            return
        for record in records:
            record.state = DRAINING
            self.retiring[record.replica_id] = record
        version = self.table.version
        if not await self.wait_for_acks(version, self.policy.ack_timeout_s):
            log.warning("table_ack_timeout", table_version=version, pending=self.acks.pending(version),
                        timeouts=self.acks.timeouts)
        await asyncio.gather(*(self.ops.drain_and_kill(r) for r in records))
        for record in records:
            self.retiring.pop(record.replica_id, None)
            self.acks.forget(record.replica_id)  # its handle's router (an ensemble's) went with it
        self.persistence.mark_dirty()

    async def _probe_one(self, record: ReplicaRecord) -> None:
        result = await self.ops.probe(record)
        record.failed_probes = 0 if result.healthy else record.failed_probes + 1
        record.dead = record.dead or result.dead
        if not result.healthy:
            record.error = result.reason

    async def _probe_all(self) -> None:
        probes = [self._probe_one(r) for s in self.versions.values() for r in list(s.replicas.values())
                  if r.state == RUNNING]
        if probes:
            await asyncio.gather(*probes)

    async def _reconcile(self) -> None:
        desired = {key: DesiredVersion(self.target(key), s.resolved.fingerprint) for key, s in self.versions.items()}
        observed = {key: s.observed() for key, s in self.versions.items()}
        retiring: list[ReplicaRecord] = []
        left_table = False
        for action in plan(desired, observed, self.clock(), self.policy):
            state = self.versions[action.key]
            if isinstance(action, ReplaceReplica):
                record = state.replicas.pop(action.replica_id)
                record.state, left_table = UNHEALTHY, True
                state.replaced[action.reason] = state.replaced.get(action.reason, 0) + 1
                self.ops.kill(record)
                self.acks.forget(record.replica_id)
                log.warning("replica_replaced", replica=record.replica_id, reason=action.reason,
                            error=record.error)
            elif isinstance(action, RetireReplica):
                retiring.append(state.replicas.pop(action.replica_id))
                left_table = True
            elif isinstance(action, StartReplicas):
                for _ in range(action.count):
                    self.start_replica(state).ready.add_done_callback(_ignore_result)
            elif isinstance(action, RollVersion):
                self.spawn(rollout.roll_version(self, state))
        if left_table:
            self.publish()
            self.spawn(self.retire(retiring))

    # -- routing table ----------------------------------------------------------------------------
    def publish(self) -> None:
        """Build and publish the next table: versions are epoch << 32 | counter (never the wall clock)."""
        self._table_counter += 1
        version = max(self.epoch << 32 | self._table_counter, self.table.version + 1)
        self.table = build_table(self.spec, self.versions, self.weights, version, self.channel_token)
        self.persistence.mark_dirty()
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
        """Long poll: the table as soon as its version is newer than `known_version`, else None on timeout.
        The call acknowledges that `watcher_id` runs `known_version` (contract 1)."""
        if watcher_id:  # "" or None: an anonymous poll, not an acknowledgement
            self.acks.record(watcher_id, known_version)
        await self.start()
        if known_version > self.table.version:  # a router ahead of us (memory-only controller restarted)
            self._table_counter = known_version - (self.epoch << 32)
            self.publish()
        if self.table.version > known_version:
            return self.table
        try:
            await asyncio.wait_for(self._table_changed.wait(), timeout_s)
        except TimeoutError:
            return None
        return self.table if self.table.version > known_version else None

    async def wait_for_acks(self, version: int, timeout_s: float) -> bool:
        """True once every router still around acknowledged `version`; False (counted) after `timeout_s`."""
        return await self.acks.wait(version, timeout_s)

    # -- apply and runtime changes ----------------------------------------------------------------
    async def apply(self, spec_doc: Any, wait: bool = True) -> dict:
        """Validate and apply a spec. With wait=False, return at once with the generation to poll."""
        await self.start()
        spec = parse_apply_document(spec_doc)  # SpecError/ValueError go back to the caller (400)
        spec = expand_spec(spec, self.config.redis_url, self.config.namespace)  # scenarios, pipelines -> apps
        self.generation += 1
        generation = self.generation
        self.apply_status = {"generation": generation, "state": "applying", "error": None, "started_at": time.time()}
        task = self.spawn(rollout.apply_spec(self, spec, generation))
        if wait:
            await asyncio.shield(task)
        return dict(self.apply_status) if wait else {"generation": generation, "state": "applying"}

    def get_apply_status(self) -> dict:
        return dict(self.apply_status)

    def _version(self, app: Any, deployment: Any, version: Any) -> VersionState:
        state = self.versions.get((app, deployment, version)) if all(
            isinstance(v, str) for v in (app, deployment, version)) else None
        if state is None:
            raise KeyError(f"no version {version!r} of deployment {deployment!r} in app {app!r}")
        return state

    async def scale(self, app: Any, deployment: Any, version: Any, num_replicas: Any) -> dict:
        """Set a version's replica count (a runtime override; see deploy/changes.py for how long it lasts)."""
        await self.start()
        async with self.change_lock:
            state = self._version(app, deployment, version)
            count = parse_scale(num_replicas, state.resolved.max_replicas)
            self.scales[state.resolved.key] = count
            await self.persistence.save()
        return {"app": app, "deployment": deployment, "version": version, "target": count}

    async def set_weights(self, app: Any, deployment: Any, weights: Any) -> dict:
        """Set versions' weights (runtime overrides, merged with earlier ones); the table changes at once."""
        await self.start()
        async with self.change_lock:
            spec_weights = {k[2]: s.resolved.weight for k, s in self.versions.items() if k[:2] == (app, deployment)}
            if not spec_weights:
                raise KeyError(f"no deployment {deployment!r} in app {app!r}")
            parsed = parse_weights(weights, spec_weights, str(deployment))
            overrides = self.weights.get((app, deployment), {}) | parsed
            merged = merged_weights(spec_weights, overrides)
            self.weights[(app, deployment)] = overrides
            self.publish()
            version = self.table.version
            await self.persistence.save()
        await self.wait_for_acks(version, self.policy.ack_timeout_s)  # routers run the new weights on return
        return {"app": app, "deployment": deployment, "weights": merged, "table_version": version}

    # -- autoscaling (the contract in autoscale/actor.py) ----------------------------------------------
    def autoscaled_versions(self) -> list[dict]:
        """One row per live version, autoscaled or not; start-up samples are handed over once."""
        samples, self.startup_samples = self.startup_samples, {}
        return [version_row(state, self.target(key), samples.get(key, [])) for key, state in self.versions.items()]

    async def set_autoscale_target(self, app: str, deployment: str, version: str, target: int, reason: str) -> None:
        """The scaler's count for an autoscaled version, clamped to its bounds, held as `scale` holds one."""
        async with self.change_lock:
            state = self.versions.get((app, deployment, version))
            if state is None or state.resolved.autoscaling is None:  # removed, or no longer autoscaled
                return
            key = state.resolved.key
            count = clamp_target(state.resolved, target)
            self.autoscale_decisions[key] = record_decision(self.autoscale_decisions.get(key), self.target(key), count,
                                                            int(target), str(reason), self.clock())
            if self.target(key) == count:
                return
            log.info("autoscale_target_set", app=app, deployment=deployment, version=version, target=count,
                     previous=self.target(key), asked=target, reason=reason)
            self.scales[key] = count
            self.persistence.mark_dirty()

    async def metrics_snapshot(self) -> dict:
        """Contract 2: autoscale decisions and scenario price ages, JSON-able, for the gateways' /metrics."""
        scenarios = []
        if self.spec.scenarios:
            scenarios = (await feature_status(self.spec, self.config.redis_url, self.config.namespace))["scenarios"]
        return metrics_snapshot(self.versions, self.autoscale_decisions, scenarios)

    # -- status -----------------------------------------------------------------------------------
    async def status(self) -> dict:
        gateways, decisions, features = await asyncio.gather(
            self.fleet.stats(), scaler_decisions(self.scaler, self.policy.gateway_call_timeout_s),
            feature_status(self.spec, self.config.redis_url, self.config.namespace))
        status = build_status(spec=self.spec, versions=self.versions,
                              targets={key: self.target(key) for key in self.versions}, table=self.table,
                              generation=self.generation, apply_status=self.apply_status, gateways=gateways,
                              saved_state=self.persistence.summary(), acks=self.acks.snapshot(),
                              applied={k: d.to_dict() for k, d in self.autoscale_decisions.items()},
                              decisions=decisions_by_key(decisions) if decisions is not None else None)
        return status | features

    async def gateways(self) -> list:
        await self.start()
        return list(self.fleet.handles)

    async def shutdown(self, forget: bool = False) -> None:
        """Stop gateways and replicas. With forget=True the saved state is removed too."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        await stop_scaler(self.scaler, self.policy.gateway_stop_timeout_s)
        await self.fleet.stop(self.policy.gateway_stop_timeout_s)
        self.features.stop()
        for state in self.versions.values():
            for record in state.replicas.values():
                self.ops.kill(record)
        for record in [*self.launching.values(), *self.retiring.values()]:
            self.ops.kill(record)
        if forget:
            await self.persistence.forget()


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
