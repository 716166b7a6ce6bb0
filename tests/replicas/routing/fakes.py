"""Fakes for the router's unit tests: a clock the test moves, replicas that answer, fail or freeze on command,
and a connection factory that opens fake connections to them. No sockets, no threads, no wall clock."""

from __future__ import annotations

import asyncio
import random

from replicas.channel.client import (
    DeadlineReached,
    ReplicaConnectionLost,
    ReplicaUnreachable,
)
from replicas.routing.policy import FailoverPolicy
from replicas.routing.router import Router, RouterObserver
from replicas.routing.table import ReplicaInfo, VersionRoute
from tests.replicas.tables import route, table

__all__ = ["FakeClock", "FakeReplica", "Fleet", "Recorder", "QUIET"]

# The background monitor never wakes during a test: tests run its passes with `router.health.check(now)`.
QUIET = FailoverPolicy(monitor_interval_s=3600.0)


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeReplica:
    """What one replica does: answer `status` after `service_s` (moving the fake clock), or hang, or refuse."""

    def __init__(self, replica_id: str, version: str, port: int) -> None:
        self.info = ReplicaInfo(replica_id, "app", "dep", version, "127.0.0.1", port)
        self.status = 200
        self.service_s = 0.001
        self.hang = False  # requests are received and never answered
        self.drop = False  # the connection drops once a request was sent (ConnectionLost)
        self.refuse = False  # connections cannot open (Unreachable)
        self.pongs = True  # pings are answered
        self.received = 0  # requests that reached the replica
        self.connections = 0  # connections opened to it


class FakeConnection:
    def __init__(self, fleet: "Fleet", replica: FakeReplica) -> None:
        self.fleet, self.replica, self.clock = fleet, replica, fleet.clock
        self.closed = False
        self.transport = object()
        self.last_ping_at = 0.0
        self._pings: list[float] = []
        self._pending: dict[asyncio.Future, tuple[float, float | None]] = {}
        replica.connections += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(self, request_id, path, body, deadline_ms=0, deadline=None):
        replica = self.replica
        if self.closed or replica.refuse:
            self.closed = True
            raise ReplicaUnreachable("fake: refused")
        await asyncio.sleep(0)  # a real send yields to the loop
        replica.received += 1
        self.fleet.log.append((replica.info.replica_id, request_id))
        if replica.drop:
            self.close()
            raise ReplicaConnectionLost("fake: dropped after sending")
        if not replica.hang:
            self.clock.advance(replica.service_s)
            return replica.status, b'{"from": "%s"}' % replica.info.replica_id.encode()
        future = asyncio.get_running_loop().create_future()
        self._pending[future] = (self.clock(), deadline)
        try:
            return await future
        finally:
            self._pending.pop(future, None)

    def expire_overdue(self, now: float) -> None:
        for future, (_, deadline) in list(self._pending.items()):
            if deadline is not None and deadline <= now and not future.done():
                future.set_exception(DeadlineReached())

    def send_ping(self, waiter=None) -> None:
        self.last_ping_at = self.clock()
        if not self.replica.pongs:
            self._pings.append(self.last_ping_at)

    async def ping(self, timeout_s: float) -> bool:
        if self.replica.refuse:
            return False
        return self.replica.pongs

    def oldest_ping_age(self, now: float) -> float:
        return now - self._pings[0] if self._pings else 0.0

    def oldest_pending_age(self, now: float) -> float:
        return now - min(sent for sent, _ in self._pending.values()) if self._pending else 0.0

    def answer_pending(self) -> None:
        """The replica's loop runs again: every call waiting on this connection gets the replica's answer."""
        replica = self.replica
        for future in list(self._pending):
            if not future.done():
                future.set_result((replica.status, b'{"from": "%s"}' % replica.info.replica_id.encode()))

    def close(self) -> None:
        self.closed = True
        self.transport = None
        for future in list(self._pending):
            if not future.done():
                future.set_exception(ReplicaConnectionLost("fake: closed"))


class Recorder(RouterObserver):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def retried(self, app, deployment, reason):
        self.events.append(("retried", reason))

    def ejected(self, replica_id, reason):
        self.events.append(("ejected", replica_id, reason))

    def mirrored(self, app, deployment, version, status, seconds):
        self.events.append(("mirrored", version, status))

    def pin_ignored(self, app, deployment):
        self.events.append(("pin_ignored",))

    def fell_back(self, app, deployment, wanted, used):
        self.events.append(("fell_back", wanted, used))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


class Fleet:
    """Fake replicas by version, a router over them on a fake clock with a seeded rng."""

    def __init__(self, versions: dict[str, int], *, weights: dict[str, float] | None = None,
                 mirror: dict[str, float] | None = None, policy: FailoverPolicy = QUIET, seed: int = 7,
                 **route_fields) -> None:
        self.clock = FakeClock()
        self.log: list[tuple[str, bytes]] = []
        self.replicas: dict[str, FakeReplica] = {}
        routes = []
        for version, count in versions.items():
            infos = []
            for i in range(count):
                replica = FakeReplica(f"{version}-{i}", version, 1000 + len(self.replicas))
                self.replicas[replica.info.replica_id] = replica
                infos.append(replica.info)
            routes.append(VersionRoute(version, (weights or {}).get(version, 100.0), tuple(infos),
                                       (mirror or {}).get(version, 0.0)))
        self.by_port = {r.info.port: r for r in self.replicas.values()}
        self.observer = Recorder()
        self.router = Router(asyncio.get_running_loop(), rng=random.Random(seed), connection_factory=self.connect,
                             clock=self.clock, policy=policy, observer=self.observer)
        self.router.update_table(table(1, route(routes, **route_fields)))

    def connect(self, loop, host, port, token, *, clock, connect_timeout_s) -> FakeConnection:
        assert clock is self.clock  # one clock: the router's
        return FakeConnection(self, self.by_port[port])

    def slot(self, replica_id: str):
        return next(s for s in self.router.slots() if s.replica_id == replica_id)

    def view(self):
        return self.router.deployment_view("app", "dep")

    async def call(self, method: str = "POST", **kwargs):
        return await self.router.call("app", "dep", b"{}", b"rid", method=method, **kwargs)

    def check(self) -> None:
        """One monitor pass now."""
        self.router.health.check(self.clock())
