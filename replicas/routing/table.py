"""The versioned routing table: which apps answer which prefixes, and which replicas serve each version.

The controller builds a new table on every change and pushes it whole; routers swap their reference to it
in one assignment, so a request sees either the old table or the new one, never a mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReplicaInfo", "VersionRoute", "DeploymentRoute", "AppRoute", "RoutingTable", "normalize_prefix"]


@dataclass(frozen=True)
class ReplicaInfo:
    replica_id: str  # unique for the life of the cluster, e.g. "quickstart.linear.v1#3f2a"
    app: str  # app the replica belongs to
    deployment: str  # deployment name within the app
    version: str  # version name within the deployment
    host: str  # address of the replica's direct channel
    port: int  # port of the replica's direct channel
    actor: Any = field(default=None, compare=False, repr=False)  # Ray actor handle (control path only)
    actor_id: str = ""  # Ray actor id, hex
    node_id: str = ""  # Ray node id, hex
    pid: int = 0  # replica process id
    state: str = "RUNNING"  # STARTING | RUNNING | UNHEALTHY | DRAINING


@dataclass(frozen=True)
class VersionRoute:
    name: str  # version name, e.g. "v1"
    weight: float  # share of the deployment's traffic (relative to the other versions' weights)
    replicas: tuple[ReplicaInfo, ...]  # replicas that take traffic (RUNNING)
    mirror_percent: float = 0.0  # share of the deployment's primary traffic copied to this version (0-100)


@dataclass(frozen=True)
class DeploymentRoute:
    app: str  # owning app
    name: str  # deployment name
    versions: tuple[VersionRoute, ...]  # live versions, in spec order
    # Every field below comes from the validated spec (deploy/spec.py holds the defaults); none has one here.
    max_ongoing_requests: int  # per replica, enforced by the router and by the replica
    max_queued_requests: int  # per router, waiting for a free replica; beyond: 503
    request_timeout_s: float  # whole-request deadline (504 after it)
    idempotent: bool | None  # None: GET/HEAD only; True: every method may be retried
    allow_pinning: bool  # honour X-Raygate-Version
    max_retries: int  # attempts after the first on retryable failures
    hedge_after_s: float | None  # idempotent only: a second attempt elsewhere after this long

    def version(self, name: str) -> VersionRoute | None:
        for version in self.versions:
            if version.name == name:
                return version
        return None


def normalize_prefix(prefix: str) -> str:
    """'/linear/' -> '/linear'; '/' stays '/'."""
    if not prefix.startswith("/"):
        raise ValueError(f"route prefix {prefix!r} must start with '/'")
    return prefix.rstrip("/") or "/"


@dataclass(frozen=True)
class AppRoute:
    name: str  # app name
    route_prefix: str  # normalised prefix
    ingress: str  # deployment that receives the app's HTTP traffic


@dataclass(frozen=True)
class RoutingTable:
    version: int  # strictly increasing, from the controller's stored counter (0: no table yet)
    apps: tuple[AppRoute, ...] = ()  # empty only in the version-0 placeholder
    deployments: dict = field(default_factory=dict)  # (app, deployment) -> DeploymentRoute
    channel_token: bytes = b""  # shared secret for replicas' direct channels (proved by HMAC, never sent)
    replica_states: dict = field(default_factory=dict)  # (app, deployment, version) -> {state: count}
    pipelines: tuple = ()  # event pipeline specs (JSON documents) that gateways ingest and consume
    _by_prefix: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Longest prefix first, so the first match wins.
        ordered = tuple(sorted(((a.route_prefix, a) for a in self.apps), key=lambda item: -len(item[0])))
        object.__setattr__(self, "_by_prefix", ordered)

    def match(self, path: str) -> AppRoute | None:
        """Longest route prefix that matches `path` on a segment boundary."""
        for prefix, app in self._by_prefix:
            if prefix == "/" or path == prefix or path.startswith(prefix) and path[len(prefix)] == "/":
                return app
        return None

    def deployment(self, app: str, name: str) -> DeploymentRoute | None:
        return self.deployments.get((app, name))

    def replicas(self) -> list[ReplicaInfo]:
        return [r for d in self.deployments.values() for v in d.versions for r in v.replicas]
