"""`controller.status()`: what `raygate status --json` prints, built from plain values (contract 7)."""

from __future__ import annotations

from collections.abc import Mapping

from deploy.reconcile import LIVE_STATES, RUNNING
from deploy.records import VersionState
from deploy.spec import Spec
from replicas.routing.table import RoutingTable

__all__ = ["GATEWAY_FIELDS", "build_status"]

# What each gateway process reports (Gateway.stats()); the fleet adds "name" and "node_ip". "state" is "serving"
# (or "draining"), "spare" (warm, not listening: promoted when a serving one dies, index -1), "starting" (Ray
# restarting its process) or "unreachable"; every alive node has its own gateways.
GATEWAY_FIELDS = ("pid", "index", "node_id", "node_ip", "state", "served", "in_flight", "table_version",
                  "serving_since", "traffic", "ejections")


def _version_status(name: str, weight: float, target: int, state: VersionState | None) -> dict:
    replicas = [{"replica_id": r.replica_id, "actor_id": r.actor_id, "node_id": r.node_id, "pid": r.pid,
                 "version": name, "state": r.state, "address": f"{r.host}:{r.port}"}
                for r in (state.replicas.values() if state else ())]
    rolling = bool(state and (state.rolling or any(r.fingerprint != state.resolved.fingerprint
                                                   for r in state.live())))
    running = sum(r["state"] == RUNNING for r in replicas)
    return {"name": name, "weight": weight, "rolling": rolling, "target": target, "running": running,
            "current": sum(r["state"] in LIVE_STATES for r in replicas), "ready": running,
            "last_error": state.last_error if state else "", "replaced": dict(state.replaced) if state else {},
            "replicas": replicas}


def _autoscale_status(state: VersionState | None, applied: dict | None, decision: dict | None) -> dict | None:
    """An autoscaled version's bounds, the last target the controller applied and the scaler's last decision
    with its reason (absent when the scaler did not answer); None for a fixed-size version."""
    config = state.resolved.autoscaling if state else None
    if config is None:
        return None
    out = {"min_replicas": config.min_replicas, "max_replicas": config.max_replicas,
           "target_ongoing_requests": config.target_ongoing_requests, "applied": applied}
    if decision is not None:
        out["decision"] = decision
    return out


def build_status(*, spec: Spec, versions: Mapping[tuple, VersionState], targets: Mapping[tuple, int],
                 table: RoutingTable, generation: int, apply_status: dict, gateways: list[dict],
                 saved_state: dict, acks: dict, applied: Mapping[tuple, dict] | None = None,
                 decisions: Mapping[tuple, dict] | None = None) -> dict:
    """Apps -> deployments -> versions (weight, target, replicas), gateways, acknowledgements, saved state."""
    apps = []
    for app in spec.apps:
        deployments = []
        for dep in app.deployments:
            route = table.deployment(app.name, dep.name)
            versions_out = []
            for spec_version in dep.versions:
                key = (app.name, dep.name, spec_version.name)
                routed = route.version(spec_version.name) if route else None
                weight = routed.weight if routed else spec_version.weight
                versions_out.append(_version_status(spec_version.name, weight, targets.get(key, 0),
                                                    versions.get(key)))
                versions_out[-1]["autoscaling"] = _autoscale_status(
                    versions.get(key), (applied or {}).get(key), (decisions or {}).get(key))
            deployments.append({"name": dep.name, "versions": versions_out})
        apps.append({"name": app.name, "route_prefix": app.route_prefix, "ingress": app.ingress,
                     "deployments": deployments})
    return {"generation": generation, "apply": dict(apply_status), "table_version": table.version, "apps": apps,
            "gateways": gateways, "acks": acks, "saved_state": saved_state}
