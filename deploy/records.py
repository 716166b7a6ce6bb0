"""What the controller tracks per version and per replica (plain mutable records, no Ray calls)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from deploy.reconcile import LIVE_STATES, STARTING, ObservedVersion, ReplicaView
from deploy.spec import ResolvedVersion
from replicas.routing.table import ReplicaInfo

__all__ = ["ReplicaRecord", "VersionState", "short_error"]


@dataclass
class ReplicaRecord:
    replica_id: str  # id and actor name
    key: tuple[str, str, str]  # (app, deployment, version)
    actor: object  # Ray actor handle
    started_at: float  # monotonic seconds
    fingerprint: str  # code/config fingerprint the replica runs (rolling updates replace the others)
    state: str = STARTING  # STARTING | RUNNING | DRAINING | UNHEALTHY | FAILED
    host: str = ""  # direct channel address
    port: int = 0  # direct channel port
    pid: int = 0  # process id
    node_id: str = ""  # Ray node id, hex
    actor_id: str = ""  # Ray actor id, hex
    failed_probes: int = 0  # consecutive failed health probes
    dead: bool = False  # a probe found the actor dead
    ready: asyncio.Task | None = None  # resolves when the replica is RUNNING (raises when its start failed)
    error: str = ""  # last error

    def fill(self, info: dict) -> None:
        """Take the address and identity a replica's `ready` call returned."""
        self.host, self.port, self.pid = info["host"], info["port"], info["pid"]
        self.node_id, self.actor_id = info["node_id"], info["actor_id"]

    def info(self) -> ReplicaInfo:
        app, deployment, version = self.key
        return ReplicaInfo(replica_id=self.replica_id, app=app, deployment=deployment, version=version,
                           host=self.host, port=self.port, actor=self.actor, actor_id=self.actor_id,
                           node_id=self.node_id, pid=self.pid, state=self.state)

    def view(self) -> ReplicaView:
        return ReplicaView(self.replica_id, self.state, self.fingerprint, self.started_at, self.failed_probes,
                           self.dead)


@dataclass
class VersionState:
    resolved: ResolvedVersion  # the version as the applied spec resolves it
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)  # tracked replicas by id
    start_failures: int = 0  # failed starts in a row
    next_start_at: float = 0.0  # back-off: no start before this (monotonic seconds)
    last_error: str = ""  # last start error, for status
    rolling: bool = False  # a rolling update is replacing replicas one at a time
    replaced: dict[str, int] = field(default_factory=dict)  # replicas replaced by reason ("dead", "unhealthy")

    def live(self) -> list[ReplicaRecord]:
        return [r for r in self.replicas.values() if r.state in LIVE_STATES]

    def observed(self) -> ObservedVersion:
        return ObservedVersion(tuple(r.view() for r in self.replicas.values()), self.next_start_at, self.rolling)


def short_error(exc: BaseException) -> str:
    """The line of a Ray error that names the user's exception, not the whole remote traceback."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if ("Error" in line or "Exception" in line) and not line.startswith(("File ", "Traceback", "^")):
            return line[:800]
    return (lines[-1] if lines else repr(exc))[:800]
