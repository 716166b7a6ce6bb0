"""Request routing shared by the HTTP gateway and deployment handles: version split, replica choice,
bounded queueing, deadlines and retries on a live replica.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass

from gateway.choice import ReplicaSlot, choose_replica
from gateway.client import ReplicaConnection, ReplicaConnectionLost, ReplicaUnreachable
from gateway.errors import (
    DeadlineExceeded, NoReplicas, Overloaded, ReplicaFailed, RouteNotFound, UnknownVersionError,
)
from gateway.split import choose_version
from gateway.table import DeploymentRoute, RoutingTable
from replicas.wire import RETRYABLE_STATUSES

__all__ = ["Router", "CallResult"]

_EJECT_S = 2.0  # a replica whose connection failed is skipped this long (or until a new table drops it)
_MAX_EJECTED_SHARE = 0.5  # never eject more than this share of a version's replicas at once


@dataclass(frozen=True, slots=True)
class CallResult:
    status: int  # replica status (200, 400, 500)
    body: bytes  # JSON body from the replica
    version: str  # version that answered
    replica_id: str  # replica that answered
    attempts: int  # 1 + retries


class _VersionView:
    """Per-table view of one version: its slots, plus the wait queue that outlives tables."""

    __slots__ = ("name", "weight", "slots", "queue")

    def __init__(self, name: str, weight: float, slots: list[ReplicaSlot], queue: "_WaitQueue") -> None:
        self.name = name
        self.weight = weight
        self.slots = slots
        self.queue = queue


class _DeploymentView:
    __slots__ = ("route", "versions", "weights", "by_name")

    def __init__(self, route: DeploymentRoute, versions: list[_VersionView]) -> None:
        self.route = route
        self.versions = versions
        self.weights = tuple((v.name, v.weight) for v in versions)
        self.by_name = {v.name: v for v in versions}


class _WaitQueue:
    """Requests waiting for a free replica of one version; bounded per deployment by the caller."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: deque[asyncio.Future] = deque()

    def wake_one(self) -> None:
        waiters = self.waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return

    def wake_all(self) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)


class Router:
    """Routes calls to a deployment's replicas over their direct channels.

    The routing table is swapped whole by `update_table`; per-replica load and wait queues carry over.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, rng: random.Random | None = None,
                 connection_factory=ReplicaConnection, clock=time.monotonic) -> None:
        self.loop = loop or asyncio.get_event_loop()
        self.rng = rng or random.Random()
        self.clock = clock
        self._connection_factory = connection_factory
        self.table = RoutingTable(version=0)
        self._views: dict[tuple[str, str], _DeploymentView] = {}
        self._slots: dict[str, ReplicaSlot] = {}
        self._queues: dict[tuple[str, str, str], _WaitQueue] = {}
        self._queued: dict[tuple[str, str], int] = {}

    # -- table ------------------------------------------------------------------------------------
    def update_table(self, table: RoutingTable) -> None:
        """Swap in a new table. Replicas that left are closed once their in-flight requests finish."""
        if table.version <= self.table.version and self.table.version:
            return
        slots: dict[str, ReplicaSlot] = {}
        views: dict[tuple[str, str], _DeploymentView] = {}
        for key, route in table.deployments.items():
            versions = []
            for version in route.versions:
                version_slots = []
                for info in version.replicas:
                    slot = self._slots.get(info.replica_id)
                    if slot is None:
                        slot = ReplicaSlot(info=info)
                    else:
                        slot.info = info
                    slots[info.replica_id] = slot
                    version_slots.append(slot)
                queue = self._queues.setdefault((route.app, route.name, version.name), _WaitQueue())
                versions.append(_VersionView(version.name, version.weight, version_slots, queue))
            views[key] = _DeploymentView(route, versions)
        for replica_id, slot in self._slots.items():
            if replica_id not in slots:
                slot.retired = True
                if slot.in_flight == 0 and slot.connection is not None:
                    slot.connection.close()
        self._slots = slots
        self._views = views
        self.table = table
        for queue in self._queues.values():
            queue.wake_all()

    def deployment_view(self, app: str, deployment: str) -> _DeploymentView | None:
        return self._views.get((app, deployment))

    def slots(self) -> list[ReplicaSlot]:
        return list(self._slots.values())

    # -- calls ------------------------------------------------------------------------------------
    def choose_version(self, view: _DeploymentView, pinned: str | None, split_key: str | None) -> _VersionView:
        if pinned is not None and view.route.allow_pinning:
            version = view.by_name.get(pinned)
            if version is None:
                known = ", ".join(v.name for v in view.versions)
                raise UnknownVersionError(
                    f"deployment {view.route.name!r} has no version {pinned!r} (versions: {known})")
            return version
        index = choose_version(view.weights, split_key, self.rng)
        if index < 0:
            raise NoReplicas(f"deployment {view.route.name!r} has no version with a positive weight")
        return view.versions[index]

    async def call(self, app: str, deployment: str, body: bytes, request_id: bytes, path: bytes = b"", *,
                   method: str = "POST", pinned: str | None = None, split_key: str | None = None,
                   timeout_s: float | None = None) -> CallResult:
        """Call one replica of the deployment and return its answer; raise a RaygateError otherwise."""
        view = self._views.get((app, deployment))
        if view is None:
            raise RouteNotFound(f"no deployment {deployment!r} in app {app!r}")
        route = view.route
        version = self.choose_version(view, pinned, split_key)
        timeout = route.request_timeout_s if timeout_s is None else timeout_s
        idempotent = route.idempotent if route.idempotent is not None else method in ("GET", "HEAD")
        deadline = self.loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                return await self._call_version(app, deployment, version, body, request_id, path,
                                                idempotent, int(timeout * 1000))
        except TimeoutError:
            raise DeadlineExceeded(f"no answer from deployment {deployment!r} within {timeout:g}s") from None

    async def _call_version(self, app, deployment, version: _VersionView, body, request_id, path, idempotent,
                            deadline_ms) -> CallResult:
        excluded: set[str] = set()
        attempts = 0
        retries = 0
        while True:
            view = self._views.get((app, deployment))
            if view is not None and view.by_name.get(version.name) is not None:
                version = view.by_name[version.name]  # a newer table may have new replicas
            route = view.route if view is not None else None
            if route is None:
                raise RouteNotFound(f"deployment {deployment!r} of app {app!r} was removed")
            slot = await self._acquire(route, version, excluded)
            attempts += 1
            connection = slot.connection
            if connection is None or connection.closed:
                connection = slot.connection = self._connection_factory(
                    self.loop, slot.info.host, slot.info.port, self.table.channel_token)
            try:
                status, answer = await connection.request(request_id, path, body, deadline_ms)
            except ReplicaUnreachable:
                self._eject(version, slot)
                excluded.add(slot.replica_id)
                continue
            except ReplicaConnectionLost as exc:
                self._eject(version, slot)
                excluded.add(slot.replica_id)
                if idempotent and retries < route.max_retries:
                    retries += 1
                    continue
                raise ReplicaFailed(f"replica {slot.replica_id} failed during the request: {exc}") from None
            finally:
                self._release(version, slot)
            if status in RETRYABLE_STATUSES:
                excluded.add(slot.replica_id)
                if len(excluded) >= len(version.slots):
                    excluded.clear()
                    await asyncio.sleep(0.002)
                continue
            slot.consecutive_failures = 0
            return CallResult(status, answer, version.name, slot.replica_id, attempts)

    async def _acquire(self, route: DeploymentRoute, version: _VersionView, excluded: set[str]) -> ReplicaSlot:
        key = (route.app, route.name)
        while True:
            slot = choose_replica(version.slots, route.max_ongoing_requests, self.clock(), self.rng, excluded)
            if slot is None and excluded and all(s.replica_id in excluded for s in version.slots):
                excluded.clear()  # every replica failed once: let the live ones be tried again
                slot = choose_replica(version.slots, route.max_ongoing_requests, self.clock(), self.rng)
            if slot is not None:
                slot.in_flight += 1
                return slot
            queued = self._queued.get(key, 0)
            if queued >= route.max_queued_requests:
                raise Overloaded(f"deployment {route.name!r} is at capacity: {queued} requests already queued")
            future = self.loop.create_future()
            version.queue.waiters.append(future)
            self._queued[key] = queued + 1
            try:
                await future
            except asyncio.CancelledError:
                if not version.slots:
                    raise NoReplicas(f"version {version.name!r} of deployment {route.name!r} has no live "
                                     f"replica") from None
                raise
            finally:
                self._queued[key] -= 1
            view = self._views.get(key)
            if view is not None and version.name in view.by_name:
                version = view.by_name[version.name]

    def _release(self, version: _VersionView, slot: ReplicaSlot) -> None:
        slot.in_flight -= 1
        if slot.retired:
            if slot.in_flight == 0 and slot.connection is not None:
                slot.connection.close()
            return
        version.queue.wake_one()

    def _eject(self, version: _VersionView, slot: ReplicaSlot) -> None:
        slot.consecutive_failures += 1
        now = self.clock()
        ejected = sum(1 for s in version.slots if s.ejected_until > now)
        if ejected + 1 <= max(1, int(len(version.slots) * _MAX_EJECTED_SHARE)) or len(version.slots) == 1:
            slot.ejected_until = now + _EJECT_S

    def close(self) -> None:
        for slot in self._slots.values():
            if slot.connection is not None:
                slot.connection.close()

