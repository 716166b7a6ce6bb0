"""The routing table from the applied spec, the runtime weight overrides and the replicas: a pure function.

Every field of every route comes from the validated spec (no defaults repeated here); weights are the
spec's, overridden per version by `raygate split`; only RUNNING replicas take traffic.
"""

from __future__ import annotations

from collections.abc import Mapping

from deploy.reconcile import DRAINING, RUNNING, STARTING
from deploy.records import VersionState
from deploy.spec import Spec
from replicas.routing.table import AppRoute, DeploymentRoute, RoutingTable, VersionRoute

__all__ = ["build_table", "replica_state_counts"]


def replica_state_counts(versions: Mapping[tuple, VersionState]) -> dict[tuple, dict[str, int]]:
    """(app, deployment, version) -> {STARTING: n, RUNNING: n, DRAINING: n, ...}."""
    counts: dict[tuple, dict[str, int]] = {}
    for key, state in versions.items():
        by_state = {name: 0 for name in (STARTING, RUNNING, DRAINING)}
        for record in state.replicas.values():
            by_state[record.state] = by_state.get(record.state, 0) + 1
        counts[key] = by_state
    return counts


def build_table(spec: Spec, versions: Mapping[tuple, VersionState], weights: Mapping[tuple, Mapping[str, float]],
                version: int, channel_token: bytes) -> RoutingTable:
    """Table `version` for `spec`, with `weights` overriding the spec's per (app, deployment) and version."""
    apps, deployments = [], {}
    for app in spec.apps:
        if app.route_prefix is not None:  # internal apps are reached through handles only
            apps.append(AppRoute(app.name, app.route_prefix, app.ingress))
        for dep in app.deployments:
            overrides = weights.get((app.name, dep.name), {})
            routes = []
            for spec_version in dep.versions:
                state = versions.get((app.name, dep.name, spec_version.name))
                replicas = tuple(r.info() for r in state.replicas.values() if r.state == RUNNING) if state else ()
                routes.append(VersionRoute(name=spec_version.name,
                                           weight=overrides.get(spec_version.name, spec_version.weight),
                                           replicas=replicas, mirror_percent=spec_version.mirror_percent))
            deployments[(app.name, dep.name)] = DeploymentRoute(
                app=app.name, name=dep.name, versions=tuple(routes),
                max_ongoing_requests=dep.max_ongoing_requests, max_queued_requests=dep.max_queued_requests,
                request_timeout_s=dep.request_timeout_s, idempotent=dep.idempotent,
                allow_pinning=dep.allow_pinning, max_retries=dep.max_retries, hedge_after_s=dep.hedge_after_s)
    return RoutingTable(version=version, apps=tuple(apps), deployments=deployments, channel_token=channel_token,
                        replica_states=replica_state_counts(versions),
                        pipelines=tuple(p.model_dump(mode="json") for p in spec.pipelines))
