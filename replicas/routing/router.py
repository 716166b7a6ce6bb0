"""Request routing shared by the HTTP gateway and deployment handles: version split, replica choice,
bounded queueing, deadlines, retries on a live replica, outlier ejection, hedging and mirroring.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass

from replicas.channel.client import (
    DeadlineReached,
    ReplicaConnection,
    ReplicaConnectionLost,
    ReplicaUnreachable,
)
from replicas.channel.frames import RETRYABLE_STATUSES, STATUS_USER_ERROR
from replicas.routing.budget import RetryBudget
from replicas.routing.choice import ReplicaSlot, choose_replica
from replicas.routing.failures import (
    DeadlineExceeded,
    NoReplicas,
    Overloaded,
    ReplicaFailed,
    RouteNotFound,
    UnknownVersionError,
)
from replicas.routing.split import choose_version
from replicas.routing.table import DeploymentRoute, RoutingTable

__all__ = ["Router", "CallResult", "FailoverPolicy", "RouterObserver"]


@dataclass(frozen=True)
class FailoverPolicy:
    monitor_interval_s: float = 0.1  # how often connections are checked
    probe_interval_s: float = 0.2  # data-plane ping period per open connection
    probe_timeout_s: float = 0.5  # an unanswered ping this old ejects the replica
    stall_min_s: float = 0.25  # an unanswered request older than max(this, stall_factor x peer median) ejects
    stall_factor: float = 20.0  # ... so a replica far slower than its peers is taken out
    consecutive_errors: int = 5  # 5xx answers in a row that eject a replica
    base_ejection_s: float = 1.0  # first ejection; doubles for each repeated ejection
    max_ejection_s: float = 30.0  # longest ejection
    max_ejected_share: float = 0.5  # never eject more than this share of a deployment's replicas
    retry_ratio: float = 0.2  # retry budget: retries per request over the window
    retry_min_per_s: float = 10.0  # retry budget floor
    retry_window_s: float = 10.0  # retry budget window


class RouterObserver:
    """Hooks for metrics and logs; the default does nothing."""

    def retried(self, app: str, deployment: str, reason: str) -> None: ...
    def ejected(self, replica_id: str, reason: str) -> None: ...
    def readmitted(self, replica_id: str) -> None: ...
    def mirrored(self, app: str, deployment: str, version: str, status: int, seconds: float) -> None: ...
    def pin_ignored(self, app: str, deployment: str) -> None: ...
    def fell_back(self, app: str, deployment: str, wanted: str, used: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CallResult:
    status: int  # replica status (200, 400, 500)
    body: bytes  # JSON body from the replica
    version: str  # version that answered
    replica_id: str  # replica that answered
    attempts: int  # 1 + retries


class _Retry(Exception):
    """One attempt failed in a way another replica may fix."""

    def __init__(self, reason: str, sent: bool, result: CallResult | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent  # the request may have run: retry only if idempotent
        self.result = result  # an answer to return if no retry happens


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class _VersionView:
    __slots__ = ("name", "weight", "mirror_percent", "slots", "queue", "stall_after")

    def __init__(self, name, weight, mirror_percent, slots, queue) -> None:
        self.name = name
        self.weight = weight
        self.mirror_percent = mirror_percent
        self.slots: list[ReplicaSlot] = slots
        self.queue: _WaitQueue = queue
        self.stall_after: float | None = None  # set by the monitor from peer latencies


class _DeploymentView:
    __slots__ = ("route", "versions", "weights", "by_name", "mirrors", "budget")

    def __init__(self, route: DeploymentRoute, versions: list[_VersionView], budget: RetryBudget) -> None:
        self.route = route
        self.versions = versions
        self.weights = tuple((v.name, v.weight) for v in versions)
        self.by_name = {v.name: v for v in versions}
        self.mirrors = tuple(v for v in versions if v.mirror_percent > 0)
        self.budget = budget

    def all_slots(self):
        return [s for v in self.versions for s in v.slots]


class _WaitQueue:
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

    The routing table is swapped whole by `update_table`; per-replica state (load, latency, ejection) and
    wait queues carry over by replica id and version.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, rng: random.Random | None = None,
                 connection_factory=ReplicaConnection, clock=time.monotonic,
                 policy: FailoverPolicy | None = None, observer: RouterObserver | None = None) -> None:
        self.loop = loop or asyncio.get_event_loop()
        self.rng = rng or random.Random()
        self.clock = clock
        self.policy = policy or FailoverPolicy()
        self.observer = observer or RouterObserver()
        self._connection_factory = connection_factory
        self.table = RoutingTable(version=0)
        self._views: dict[tuple[str, str], _DeploymentView] = {}
        self._slots: dict[str, ReplicaSlot] = {}
        self._queues: dict[tuple[str, str, str], _WaitQueue] = {}
        self._budgets: dict[tuple[str, str], RetryBudget] = {}
        self._queued: dict[tuple[str, str], int] = {}
        self._monitor: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self.ejections: deque[dict] = deque(maxlen=256)  # recent ejections, for status and tests
        self._in_probation = 0  # replicas ejected and not yet readmitted (recounted by the monitor)
        self._retired: set[ReplicaSlot] = set()  # gone from the table, calls still in flight

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
                versions.append(_VersionView(version.name, version.weight, version.mirror_percent,
                                             version_slots, queue))
            budget = self._budgets.get(key)
            if budget is None:
                budget = self._budgets[key] = RetryBudget(self.policy.retry_ratio, self.policy.retry_min_per_s,
                                                          self.policy.retry_window_s, self.clock)
            views[key] = _DeploymentView(route, versions, budget)
        for replica_id, slot in self._slots.items():
            if replica_id not in slots:
                slot.retired = True
                if slot.in_flight == 0:
                    if slot.connection is not None:
                        slot.connection.close()
                else:
                    self._retired.add(slot)  # its calls still need their deadlines watched
        self._slots = slots
        self._views = views
        self.table = table
        for queue in self._queues.values():
            queue.wake_all()
        if self._monitor is None:
            self._monitor = self.loop.create_task(self._monitor_loop())

    def deployment_view(self, app: str, deployment: str) -> _DeploymentView | None:
        return self._views.get((app, deployment))

    def slots(self) -> list[ReplicaSlot]:
        return list(self._slots.values())

    # -- calls ------------------------------------------------------------------------------------
    def choose_version(self, view: _DeploymentView, pinned: str | None, split_key: str | None) -> _VersionView:
        if pinned is not None:
            if view.route.allow_pinning:
                version = view.by_name.get(pinned)
                if version is None:
                    known = ", ".join(v.name for v in view.versions)
                    raise UnknownVersionError(
                        f"deployment {view.route.name!r} has no version {pinned!r} (versions: {known})")
                return version
            self.observer.pin_ignored(view.route.app, view.route.name)
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
        if pinned is None or not route.allow_pinning:
            version = self._live_version(view, version)
        if view.mirrors:
            self._mirror(view, version, body, request_id, path)
        timeout = route.request_timeout_s if timeout_s is None else timeout_s
        idempotent = route.idempotent if route.idempotent is not None else method in ("GET", "HEAD")
        view.budget.record_request()
        deadline = self.loop.time() + timeout  # every wait below ends by then (timers on its futures)
        try:
            return await self._call_version(view, version, body, request_id, path, idempotent,
                                            int(timeout * 1000), deadline)
        except DeadlineReached:
            raise DeadlineExceeded(f"no answer from deployment {deployment!r} within {timeout:g}s") from None

    def _live_version(self, view: _DeploymentView, version: _VersionView) -> _VersionView:
        """The chosen version, or, when none of its replicas can take traffic, another by weight."""
        if version.slots and not self._in_probation:
            return version  # the common case: nothing is ejected anywhere
        now = self.clock()
        if any(s.ejected_until <= now and not s.probation for s in version.slots):
            return version
        others = [v for v in view.versions if v is not version and v.weight > 0 and
                  any(s.ejected_until <= now and not s.probation for s in v.slots)]
        if not others:
            return version  # wait for a replica (or the deadline) on the chosen version
        total = sum(v.weight for v in others)
        point = self.rng.random() * total
        for other in others:
            point -= other.weight
            if point < 0:
                break
        self.observer.fell_back(view.route.app, view.route.name, version.name, other.name)
        return other

    async def _call_version(self, view: _DeploymentView, version: _VersionView, body, request_id, path,
                            idempotent: bool, deadline_ms: int, deadline: float) -> CallResult:
        route = view.route
        excluded: set[str] = set()
        attempts = 0
        retries = 0
        hedge = route.hedge_after_s if idempotent else None
        while True:
            attempts += 1
            try:
                if hedge:
                    result = await self._hedged_attempt(view, version, body, request_id, path, deadline_ms,
                                                        deadline, excluded, hedge)
                else:
                    result = await self._attempt(view, version, body, request_id, path, deadline_ms, deadline,
                                                 excluded)
                if attempts == 1:
                    return result
                return CallResult(result.status, result.body, result.version, result.replica_id, attempts)
            except _Retry as failure:
                if failure.sent:
                    if not idempotent or retries >= route.max_retries or not view.budget.try_retry():
                        if failure.result is not None:
                            return failure.result
                        raise ReplicaFailed(f"replica failed and the request was not retried: {failure.reason}")
                    retries += 1
                    self.observer.retried(route.app, route.name, failure.reason)
                current = self._views.get((route.app, route.name))
                if current is None:
                    raise RouteNotFound(f"deployment {route.name!r} of app {route.app!r} was removed") from None
                view = current
                version = view.by_name.get(version.name) or version
                version = self._live_version(view, version)

    async def _attempt(self, view: _DeploymentView, version: _VersionView, body, request_id, path, deadline_ms,
                       deadline: float, excluded: set[str]) -> CallResult:
        slot = choose_replica(version.slots, view.route.max_ongoing_requests, self.clock(), self.rng, excluded)
        if slot is None:
            slot = await self._acquire(view, version, excluded, deadline)
        else:
            slot.in_flight += 1
        connection = slot.connection
        if connection is None or connection.closed:
            connection = slot.connection = self._connection_factory(
                self.loop, slot.info.host, slot.info.port, self.table.channel_token)
        started = self.clock()
        try:
            status, answer = await connection.request(request_id, path, body, deadline_ms, deadline)
        except ReplicaUnreachable:
            self._eject(view, slot, "unreachable")
            excluded.add(slot.replica_id)
            raise _Retry("unreachable", sent=False) from None
        except ReplicaConnectionLost:
            self._eject(view, slot, "connection_lost")
            excluded.add(slot.replica_id)
            raise _Retry("connection_lost", sent=True) from None
        finally:
            self._release(version, slot)
        if status in RETRYABLE_STATUSES:
            excluded.add(slot.replica_id)
            if all(s.replica_id in excluded for s in version.slots):
                excluded.clear()
                if self.loop.time() + 0.002 >= deadline:
                    raise DeadlineReached()
                await asyncio.sleep(0.002)
            raise _Retry("busy", sent=False)
        elapsed = self.clock() - started
        slot.latency = elapsed if slot.latency == 0.0 else 0.9 * slot.latency + 0.1 * elapsed
        result = CallResult(status, answer, version.name, slot.replica_id, 1)
        if status >= STATUS_USER_ERROR:
            slot.consecutive_failures += 1
            if slot.consecutive_failures >= self.policy.consecutive_errors and all(
                    peer.consecutive_failures == 0 for peer in version.slots if peer is not slot):
                self._eject(view, slot, "errors")  # an outlier: its peers answer the same traffic fine
            excluded.add(slot.replica_id)
            if len(version.slots) > 1 and len(excluded) < len(version.slots):
                raise _Retry("server_error", sent=True, result=result)  # another replica may answer
            return result
        slot.consecutive_failures = 0
        return result

    async def _hedged_attempt(self, view, version, body, request_id, path, deadline_ms, deadline, excluded,
                              hedge_after_s: float) -> CallResult:
        """Send to one replica; if it has not answered after `hedge_after_s`, also to another; first wins."""
        first = self.loop.create_task(self._attempt(view, version, body, request_id, path, deadline_ms, deadline,
                                                    excluded))
        done, _ = await asyncio.wait({first}, timeout=hedge_after_s)
        if done:
            return first.result()
        hedged = set(excluded) | {s.replica_id for s in version.slots if s.in_flight and s.connection
                                  and s.connection.pending}
        second = self.loop.create_task(self._attempt(view, version, body, request_id, path, deadline_ms, deadline,
                                                     hedged))
        pending = {first, second}
        error: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    error = task.exception()
            raise error
        finally:
            for task in pending:
                task.cancel()

    async def _acquire(self, view: _DeploymentView, version: _VersionView, excluded: set[str],
                       deadline: float) -> ReplicaSlot:
        route = view.route
        key = (route.app, route.name)
        loop = self.loop
        while True:
            now = self.clock()
            slot = choose_replica(version.slots, route.max_ongoing_requests, now, self.rng, excluded)
            if slot is None and excluded and all(s.replica_id in excluded for s in version.slots):
                excluded.clear()  # every replica failed once: let the live ones be tried again
                slot = choose_replica(version.slots, route.max_ongoing_requests, now, self.rng)
            if slot is not None:
                slot.in_flight += 1
                return slot
            if loop.time() >= deadline:
                if not version.slots:
                    raise NoReplicas(f"version {version.name!r} of deployment {route.name!r} has no live replica")
                raise DeadlineReached()
            queued = self._queued.get(key, 0)
            if queued >= route.max_queued_requests:
                raise Overloaded(f"deployment {route.name!r} is at capacity: {queued} requests already queued")
            future = loop.create_future()
            version.queue.waiters.append(future)
            self._queued[key] = queued + 1
            if any(s.ejected_until > now or s.probation for s in version.slots):
                # a replica may be readmitted before anyone frees a slot: look again soon
                timer = loop.call_at(min(deadline, loop.time() + 0.05), _wake, future)
            else:
                timer = loop.call_at(deadline, _wake, future)
            try:
                await future
            finally:
                timer.cancel()
                self._queued[key] -= 1
                if not future.done():
                    future.cancel()  # so a wake-up is never spent on a waiter that left
            current = self._views.get(key)
            if current is not None and version.name in current.by_name:
                view, version = current, current.by_name[version.name]

    def _release(self, version: _VersionView, slot: ReplicaSlot) -> None:
        slot.in_flight -= 1
        if slot.retired:
            if slot.in_flight == 0:
                self._retired.discard(slot)
                if slot.connection is not None:
                    slot.connection.close()
            return
        version.queue.wake_one()

    # -- mirroring --------------------------------------------------------------------------------
    def _mirror(self, view: _DeploymentView, primary: _VersionView, body, request_id, path) -> None:
        """Copy the request to mirror versions; their answers are dropped and never delay the primary."""
        for version in view.mirrors:
            if version is primary or self.rng.random() * 100 >= version.mirror_percent:
                continue
            slot = choose_replica(version.slots, view.route.max_ongoing_requests, self.clock(), self.rng)
            if slot is None:
                self.observer.mirrored(view.route.app, view.route.name, version.name, 0, 0.0)  # dropped
                continue
            slot.in_flight += 1
            task = self.loop.create_task(self._send_mirror(view, version, slot, body, request_id, path))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_mirror(self, view, version, slot, body, request_id, path) -> None:
        started = self.clock()
        status = 0
        try:
            connection = slot.connection
            if connection is None or connection.closed:
                connection = slot.connection = self._connection_factory(
                    self.loop, slot.info.host, slot.info.port, self.table.channel_token)
            async with asyncio.timeout(view.route.request_timeout_s):
                status, _ = await connection.request(request_id + b"-mirror", path, body)
        except (ReplicaUnreachable, ReplicaConnectionLost, TimeoutError):
            status = 502
        finally:
            self._release(version, slot)
            self.observer.mirrored(view.route.app, view.route.name, version.name, status,
                                   self.clock() - started)

    # -- ejection and health ------------------------------------------------------------------------
    def _eject(self, view: _DeploymentView, slot: ReplicaSlot, reason: str) -> bool:
        """Take a replica out of choice (capped per deployment); it comes back after a passing probe."""
        now = self.clock()
        if slot.ejected_until > now or slot.probation:
            return True
        slots = view.all_slots()
        ejected = sum(1 for s in slots if s.ejected_until > now or s.probation)
        if ejected + 1 > int(len(slots) * self.policy.max_ejected_share) and not (
                reason in ("unreachable", "connection_lost") and len(slots) > 1):
            return False  # the cap: a bad probe or a deployment-wide problem must not empty it
        slot.ejections += 1
        duration = min(self.policy.max_ejection_s, self.policy.base_ejection_s * 2 ** (slot.ejections - 1))
        slot.ejected_until = now + duration
        slot.probation = True
        self._in_probation += 1
        slot.ejected_at = now
        self.ejections.append({"replica_id": slot.replica_id, "reason": reason, "at": time.time(),
                               "for_s": duration})
        self.observer.ejected(slot.replica_id, reason)
        return True

    async def _monitor_loop(self) -> None:
        """Stalled requests, unanswered pings and re-admission after ejection; never dies."""
        policy = self.policy
        while True:
            try:
                await asyncio.sleep(policy.monitor_interval_s)
                self._monitor_once(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:  # a monitoring bug must not stop routing
                continue

    def _monitor_once(self, now: float) -> None:
        policy = self.policy
        loop_now = self.loop.time()
        for slot in (*self._slots.values(), *self._retired):
            if slot.connection is not None and not slot.connection.closed:
                slot.connection.expire_overdue(loop_now)  # deadlines of calls in flight
        self._in_probation = sum(1 for slot in self._slots.values() if slot.probation)
        for view in self._views.values():
            for version in view.versions:
                latencies = sorted(s.latency for s in version.slots if s.latency > 0)
                median = latencies[len(latencies) // 2] if latencies else None
                stall_after = max(policy.stall_min_s, policy.stall_factor * median) if median else None
                for slot in version.slots:
                    if slot.probation:
                        if slot.ejected_until <= now and not slot.probing:
                            slot.probing = True
                            task = self.loop.create_task(self._probe(slot))
                            self._background.add(task)
                            task.add_done_callback(self._background.discard)
                        continue
                    if now - slot.ejected_at > 10 * policy.base_ejection_s:
                        slot.ejections = 0  # behaved for a while: next ejection starts short again
                    connection = slot.connection
                    if connection is None or connection.closed or connection.transport is None:
                        continue
                    if stall_after is not None and connection.oldest_pending_age(now) > stall_after:
                        if self._eject(view, slot, "stalled") and view.route.idempotent:
                            connection.close()  # in-flight requests fail now and are retried elsewhere
                    elif connection.oldest_ping_age(now) > policy.probe_timeout_s:
                        if self._eject(view, slot, "probe_timeout"):
                            connection.close()
                    elif now - connection.last_ping_at >= policy.probe_interval_s:
                        connection.send_ping()

    async def _probe(self, slot: ReplicaSlot) -> None:
        """A fresh connection and one ping: readmit the replica if it answers in time."""
        try:
            if slot.connection is not None:
                slot.connection.close()
            connection = slot.connection = self._connection_factory(
                self.loop, slot.info.host, slot.info.port, self.table.channel_token)
            await connection._connect()
            connection.send_ping()
            deadline = self.clock() + self.policy.probe_timeout_s
            while self.clock() < deadline:
                await asyncio.sleep(0.01)
                if connection.last_pong_at:
                    slot.probation = False
                    slot.consecutive_failures = 0
                    self.observer.readmitted(slot.replica_id)
                    return
            connection.close()
            slot.ejected_until = self.clock() + self.policy.base_ejection_s
        except Exception:
            slot.ejected_until = self.clock() + self.policy.base_ejection_s
        finally:
            slot.probing = False

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        for task in list(self._background):
            task.cancel()
        for slot in self._slots.values():
            if slot.connection is not None:
                slot.connection.close()
