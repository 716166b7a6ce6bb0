"""The controller's side of autoscaling (the contract in autoscale/actor.py): rows for the scaler, its targets
clamped and recorded, and the cluster's scaler actor started, asked and stopped.

Plain functions over the controller's records; the Ray calls are in the three `*_scaler*` functions at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from deploy.expand import scenario_app_name
from deploy.reconcile import LIVE_STATES, RUNNING, STARTING
from deploy.records import VersionState
from deploy.replica_ops import stop_then_kill
from deploy.spec import ResolvedVersion

__all__ = [
    "MAX_STARTUP_SAMPLES",
    "AutoscaleDecision",
    "clamp_target",
    "decisions_by_key",
    "metrics_snapshot",
    "record_decision",
    "scaler_decisions",
    "start_scaler",
    "stop_scaler",
    "version_row",
]

log = structlog.get_logger("raygate.controller")

MAX_STARTUP_SAMPLES = 32  # create -> ready durations kept per version between two scaler reads

VersionKey = tuple[str, str, str]


@dataclass(frozen=True)
class AutoscaleDecision:
    """The last target the scaler set on a version, as the controller applied it."""

    target: int  # the count applied (after clamping)
    asked: int  # the count the scaler asked for
    reason: str  # the scaler's reason
    at: float  # when (controller clock, monotonic seconds)
    up: int = 0  # targets raised on this version since the controller started (raygate_autoscale_decisions_total)
    down: int = 0  # targets lowered on this version since the controller started

    def to_dict(self) -> dict:
        return {"target": self.target, "asked": self.asked, "reason": self.reason, "at": self.at}


def record_decision(previous: AutoscaleDecision | None, before: int, target: int, asked: int, reason: str,
                    at: float) -> AutoscaleDecision:
    """The decision applied now, counting it as up or down against the count held `before` it."""
    up, down = (previous.up, previous.down) if previous is not None else (0, 0)
    return AutoscaleDecision(target, asked, reason, at, up + (target > before), down + (target < before))


def metrics_snapshot(versions: Mapping[VersionKey, VersionState], decisions: Mapping[VersionKey, AutoscaleDecision],
                     scenarios: list[dict]) -> dict:
    """`controller.metrics_snapshot()` (contract 2): per autoscaled version the desired (applied), current and
    ready counts and its decisions up and down; per scenario its prices version and age. Plain values only."""
    autoscale = []
    for key, state in versions.items():
        if state.resolved.autoscaling is None:
            continue
        decision = decisions.get(key)
        replicas = list(state.replicas.values())
        autoscale.append({
            "app": key[0], "deployment": key[1], "version": key[2],
            "desired": decision.target if decision is not None else state.resolved.autoscaling.start_replicas,
            "current": sum(r.state in LIVE_STATES for r in replicas),
            "ready": sum(r.state == RUNNING for r in replicas),
            "decisions": {"up": decision.up if decision else 0, "down": decision.down if decision else 0}})
    allocation = [{"scenario": s["scenario"], "app": scenario_app_name(s["scenario"]),
                   "prices_version": s.get("prices_version"), "price_age_s": s.get("prices_age_s"),
                   "stale": s.get("stale")} for s in scenarios if "scenario" in s]
    return {"autoscale": autoscale, "allocation": allocation}


def version_row(state: VersionState, target: int, startup_samples_s: list[float]) -> dict:
    """One row of `autoscaled_versions()` (autoscale/actor.py's contract), plain values only."""
    resolved = state.resolved
    resources = {k: float(v) for k, v in resolved.resources.model_dump().items() if v is not None}
    return {"app": resolved.app, "deployment": resolved.deployment, "version": resolved.name,
            "autoscaling": resolved.autoscaling.model_dump(mode="json") if resolved.autoscaling else None,
            "replicas": target,
            "ready": sum(r.state == RUNNING for r in state.replicas.values()),
            "starting": sum(r.state == STARTING for r in state.replicas.values()),
            "startup_samples_s": list(startup_samples_s), "resources": resources}


def clamp_target(resolved: ResolvedVersion, target: int) -> int:
    """The scaler's target within the version's autoscaling bounds and its deployment's max_replicas."""
    config = resolved.autoscaling
    low, high = (config.min_replicas, config.max_replicas) if config else (0, resolved.max_replicas)
    return max(low, min(int(target), high, resolved.max_replicas))


def decisions_by_key(rows: list[dict] | None) -> dict[VersionKey, dict]:
    """The scaler's `last_decisions()` rows by version (empty when the scaler did not answer)."""
    return {(r["app"], r["deployment"], r["version"]): r for r in rows or () if isinstance(r, Mapping)}


def start_scaler(controller, *, name: str, namespace: str, redis_url: str | None, history_prefix: str):
    """The cluster's scaler actor (detached, named, restarted by Ray), created unless it exists already; its
    arrival history and lead times go to Redis under `history_prefix` (they survive its restarts)."""
    import ray

    from autoscale.actor import ScalerActor

    return ray.remote(ScalerActor).options(
        name=name, namespace=namespace, lifetime="detached", max_restarts=-1, num_cpus=0, get_if_exists=True,
    ).remote(controller, redis_url=redis_url, namespace=history_prefix)


async def scaler_decisions(handle, timeout_s: float) -> list[dict] | None:
    """The scaler's last decisions, or None when it does not answer within `timeout_s` (down, restarting)."""
    if handle is None:
        return None
    try:
        return await asyncio.wait_for(handle.last_decisions.remote(), timeout_s)
    except Exception as exc:
        log.debug("scaler_unreachable", error=repr(exc))
        return None


async def stop_scaler(handle, timeout_s: float) -> None:
    """Stop the scaler's loop, then the actor for good."""
    if handle is not None:
        await stop_then_kill(handle, timeout_s)
