"""Acting on replica actors through Ray: create, wait until ready, probe, drain, kill, adopt, rotate tokens.

No decisions here (those are in deploy/reconcile.py) and no bookkeeping beyond the record passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import ray
import structlog

from deploy.names import replica_name, scaler_name
from deploy.policy import ControllerPolicy
from deploy.reconcile import RUNNING
from deploy.records import ReplicaRecord, short_error
from deploy.spec import ResolvedVersion
from replicas.replica import Replica, ReplicaConfig

__all__ = ["stop_then_kill", "ApplyError", "ProbeResult", "ReplicaOps", "rotate_channel_tokens"]

log = structlog.get_logger("raygate.controller")

_ReplicaActor = ray.remote(Replica)


class ApplyError(RuntimeError):
    """A spec could not be applied; the running apps were left as they were."""


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool  # the probe answered in time
    dead: bool  # the actor is gone
    reason: str  # why it failed ("" when healthy)


class ReplicaOps:
    """Ray calls on replicas, with the controller's names, namespace and timing."""

    def __init__(self, *, namespace: str, controller_name: str, replica_host: str | None,
                 policy: ControllerPolicy, clock: Callable[[], float]) -> None:
        self.namespace = namespace  # Ray namespace of replica actors
        self.controller_name = controller_name  # handed to replicas (their handles watch this controller)
        self.replica_host = replica_host  # bind address of direct channels; None: the node's Ray address
        self.policy = policy  # timing
        self.clock = clock  # monotonic seconds

    def create(self, resolved: ResolvedVersion, channel_token: bytes) -> ReplicaRecord:
        """Start a replica actor (returns at once; `wait_ready` waits for it)."""
        replica_id = replica_name(resolved.app, resolved.deployment, resolved.name)
        options = dict(
            name=replica_id, namespace=self.namespace, lifetime="detached", max_restarts=0, max_concurrency=8,
            num_cpus=resolved.resources.num_cpus, num_gpus=resolved.resources.num_gpus,
            runtime_env=resolved.runtime_env.to_ray() or None,
        )
        if resolved.resources.memory:
            options["memory"] = resolved.resources.memory
        config = ReplicaConfig(
            replica_id=replica_id, app=resolved.app, deployment=resolved.deployment, version=resolved.name,
            import_path=resolved.import_path, init_args=tuple(resolved.init_args),
            init_kwargs=dict(resolved.init_kwargs), max_ongoing_requests=resolved.max_ongoing_requests,
            channel_token=channel_token, bind_host=self.replica_host,
            controller_name=self.controller_name, namespace=self.namespace,
            scaler_name=scaler_name(self.controller_name), report_load=resolved.autoscaling is not None,
            num_cpus=resolved.resources.num_cpus or 0.0,
        )
        actor = _ReplicaActor.options(**options).remote(config)
        return ReplicaRecord(replica_id, resolved.key, actor, started_at=self.clock(),
                             fingerprint=resolved.fingerprint)

    async def wait_ready(self, record: ReplicaRecord) -> None:
        """Fill the record from the replica's `ready` answer; ApplyError naming the user's error otherwise."""
        try:
            info = await asyncio.wait_for(record.actor.ready.remote(), self.policy.start_timeout_s)
        except Exception as exc:
            record.error = short_error(exc) if not isinstance(exc, asyncio.TimeoutError) else (
                f"not ready after {self.policy.start_timeout_s:g}s")
            self.kill(record)
            raise ApplyError(f"replica of {'/'.join(record.key)} failed to start: {record.error}") from None
        record.fill(info)

    def kill(self, record: ReplicaRecord) -> None:
        try:
            ray.kill(record.actor, no_restart=True)
        except Exception:
            pass

    async def drain_and_kill(self, record: ReplicaRecord) -> None:
        """Let a replica that no router sends to any more finish its requests, then stop it."""
        try:
            await asyncio.wait_for(record.actor.drain.remote(self.policy.drain_timeout_s),
                                   self.policy.drain_timeout_s + self.policy.drain_call_margin_s)
        except Exception as exc:
            log.warning("replica_drain_incomplete", replica=record.replica_id, error=repr(exc))
        self.kill(record)
        log.info("replica_retired", replica=record.replica_id)

    async def probe(self, record: ReplicaRecord) -> ProbeResult:
        try:
            await asyncio.wait_for(record.actor.check_health.remote(), self.policy.probe_timeout_s)
            return ProbeResult(True, False, "")
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
            return ProbeResult(False, True, short_error(exc))
        except TimeoutError:
            return ProbeResult(False, False, "probe timed out")
        except Exception as exc:
            return ProbeResult(False, False, short_error(exc))

    async def adopt(self, replica_id: str, resolved: ResolvedVersion) -> ReplicaRecord | None:
        """A saved replica that still answers, as a RUNNING record; None when it is gone."""
        try:
            actor = ray.get_actor(replica_id, namespace=self.namespace)
            info = await asyncio.wait_for(actor.ready.remote(), self.policy.adopt_timeout_s)
        except Exception:
            return None
        record = ReplicaRecord(replica_id, resolved.key, actor, started_at=self.clock(),
                               fingerprint=resolved.fingerprint, state=RUNNING)
        record.fill(info)
        return record


async def rotate_channel_tokens(records: list[ReplicaRecord], new_token: bytes, grace_s: float,
                                timeout_s: float) -> list[ReplicaRecord]:
    """Ask every replica to accept `new_token` (and the previous one for `grace_s`); return those that
    did not confirm (contract 3: `rotate_channel_token(new, old_valid_s)` on the replica actor)."""

    async def one(record: ReplicaRecord) -> bool:
        try:
            await asyncio.wait_for(record.actor.rotate_channel_token.remote(new_token, grace_s), timeout_s)
            return True
        except Exception as exc:
            log.warning("channel_token_rotation_failed", replica=record.replica_id, error=repr(exc))
            return False

    confirmed = await asyncio.gather(*(one(r) for r in records))
    return [r for r, ok in zip(records, confirmed) if not ok]


async def stop_then_kill(handle, timeout_s: float) -> None:
    """Ask an actor to stop (bounded), then kill it for good; an actor already gone is fine."""
    import ray

    try:
        await asyncio.wait_for(handle.stop.remote(), timeout_s)
    except Exception:
        pass
    try:
        ray.kill(handle, no_restart=True)
    except Exception:
        pass
