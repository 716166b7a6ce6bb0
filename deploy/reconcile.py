"""Reconciliation as a pure function: `plan(desired, observed, now, policy) -> [Action]`.

The controller gathers what it wants (per version: a target count and the code fingerprint replicas must
run) and what it sees (per version: its replicas' states, fingerprints, start times and failed probes),
asks `plan` what to do, and carries out the actions. Nothing here touches Ray, Redis or a clock: `now` is
an argument (seconds, monotonic), so tests run on plain values.

The rules, in order, per version:
1. A replica that is dead, or failed `unhealthy_after` probes in a row, is replaced (out of routing first).
2. A version being rolled is left to its rolling update.
3. Replicas running an older fingerprint: roll the version (one replica at a time), once its start back-off
   (after failed starts) has passed.
4. Fewer live (STARTING or RUNNING) replicas than the target: start the difference, after the back-off.
5. More: retire the surplus, STARTING ones before RUNNING ones (they serve nothing yet), and among RUNNING
   ones the youngest first.
6. A version no longer desired: retire all of its replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deploy.policy import ControllerPolicy

__all__ = [
    "DRAINING",
    "FAILED",
    "LIVE_STATES",
    "RUNNING",
    "STARTING",
    "UNHEALTHY",
    "Action",
    "DesiredVersion",
    "ObservedVersion",
    "ReplaceReplica",
    "ReplicaView",
    "RetireReplica",
    "RollVersion",
    "StartReplicas",
    "plan",
]

STARTING, RUNNING, UNHEALTHY, DRAINING, FAILED = "STARTING", "RUNNING", "UNHEALTHY", "DRAINING", "FAILED"
LIVE_STATES = (STARTING, RUNNING)  # replicas that count toward a version's target

VersionKey = tuple[str, str, str]


@dataclass(frozen=True)
class ReplicaView:
    replica_id: str  # the replica's id
    state: str  # STARTING | RUNNING | DRAINING | ...
    fingerprint: str  # code/config fingerprint it runs
    started_at: float  # when it was started (monotonic seconds)
    failed_probes: int = 0  # consecutive failed health probes
    dead: bool = False  # its actor died (a probe said so)


@dataclass(frozen=True)
class DesiredVersion:
    target: int  # replicas wanted (runtime scale override or the spec's count)
    fingerprint: str  # what replicas must run


@dataclass(frozen=True)
class ObservedVersion:
    replicas: tuple[ReplicaView, ...]  # every replica the controller tracks for this version
    next_start_at: float = 0.0  # no start before this time (back-off after failed starts)
    rolling: bool = False  # a rolling update is in progress


@dataclass(frozen=True)
class StartReplicas:
    key: VersionKey  # version to start replicas of
    count: int  # how many


@dataclass(frozen=True)
class RetireReplica:
    key: VersionKey  # owning version
    replica_id: str  # replica to take out of routing, drain and stop
    reason: str  # "surplus" or "removed"


@dataclass(frozen=True)
class ReplaceReplica:
    key: VersionKey  # owning version
    replica_id: str  # replica to take out of routing and kill at once (a new one follows by rule 4)
    reason: str  # "dead" or "unhealthy"


@dataclass(frozen=True)
class RollVersion:
    key: VersionKey  # version whose replicas run an older fingerprint


Action = StartReplicas | RetireReplica | ReplaceReplica | RollVersion


def _surplus_order(replica: ReplicaView) -> tuple:
    # STARTING first; then RUNNING, youngest first.
    return (replica.state == RUNNING, -replica.started_at)


def _plan_version(key: VersionKey, want: DesiredVersion, seen: ObservedVersion, now: float,
                  policy: ControllerPolicy) -> list[Action]:
    actions: list[Action] = []
    healthy = []
    for replica in seen.replicas:
        if replica.state == RUNNING and (replica.dead or replica.failed_probes >= policy.unhealthy_after):
            actions.append(ReplaceReplica(key, replica.replica_id, "dead" if replica.dead else "unhealthy"))
        elif replica.state in LIVE_STATES:
            healthy.append(replica)
    if seen.rolling:
        return actions
    may_start = now >= seen.next_start_at
    if any(r.fingerprint != want.fingerprint for r in healthy):
        if may_start:
            actions.append(RollVersion(key))
        return actions
    if len(healthy) < want.target and may_start:
        actions.append(StartReplicas(key, want.target - len(healthy)))
    elif len(healthy) > want.target:
        for replica in sorted(healthy, key=_surplus_order)[: len(healthy) - want.target]:
            actions.append(RetireReplica(key, replica.replica_id, "surplus"))
    return actions


def plan(desired: Mapping[VersionKey, DesiredVersion], observed: Mapping[VersionKey, ObservedVersion],
         now: float, policy: ControllerPolicy) -> list[Action]:
    """What to do now to move `observed` toward `desired` (see the module docstring for the rules)."""
    actions: list[Action] = []
    for key, want in desired.items():
        actions += _plan_version(key, want, observed.get(key, ObservedVersion(())), now, policy)
    for key, seen in observed.items():
        if key not in desired:
            actions += [RetireReplica(key, r.replica_id, "removed") for r in seen.replicas
                        if r.state in LIVE_STATES]
    return actions
