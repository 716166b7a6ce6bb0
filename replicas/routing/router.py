"""Request routing shared by the HTTP gateway and deployment handles: version split, replica choice, bounded
queueing, deadlines, retries on a live replica, hedging and mirroring. The rules live in pure modules (`split`,
`choice`, `retry`, `hedge`, `ejection`); this module applies them on the request path, and `health` runs the
monitor (pings, stalls, deadlines, re-admission probes). One clock, injected, times everything.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from functools import partial

from replicas.channel.client import DeadlineReached, ReplicaConnection, ReplicaConnectionLost, ReplicaUnreachable
from replicas.channel.frames import RETRYABLE_STATUSES, STATUS_USER_ERROR
from replicas.routing.budget import RetryBudget
from replicas.routing.choice import ReplicaSlot, choose_replica
from replicas.routing.ejection import (
    CONNECTION_LOST,
    ERRORS,
    UNREACHABLE,
    closes_connection,
    decide_ejection,
    errors_outlier,
)
from replicas.routing.failures import (
    DeadlineExceeded,
    NoReplicas,
    Overloaded,
    ReplicaFailed,
    RouteNotFound,
    UnknownVersionError,
)
from replicas.routing.health import HealthMonitor
from replicas.routing.hedge import hedge_delay, race
from replicas.routing.hold import Holds
from replicas.routing.mirror import mirror
from replicas.routing.observer import RouterObserver
from replicas.routing.policy import FailoverPolicy
from replicas.routing.retry import Attempt, CallResult, Decision, decide_retry
from replicas.routing.split import choose_version, fallback_version
from replicas.routing.table import RoutingTable
from replicas.routing.views import DeploymentView, VersionView, WaitQueue, build_views, usable

__all__ = ["Router", "CallResult", "FailoverPolicy", "RouterObserver"]

BUSY = "busy"
SERVER_ERROR = "server_error"
NO_REPLICA = "no_replica"  # the version lost its usable replicas while the request waited
_NOTHING: frozenset = frozenset()


class _Request:
    """One call's constant inputs, and the replicas it should not be sent to again (made on the first failure)."""

    __slots__ = ("body", "request_id", "path", "idempotent", "deadline_ms", "deadline", "excluded")

    def __init__(self, body: bytes, request_id: bytes, path: bytes, idempotent: bool, deadline_ms: int,
                 deadline: float) -> None:
        self.body = body
        self.request_id = request_id
        self.path = path
        self.idempotent = idempotent
        self.deadline_ms = deadline_ms  # sent to the replica
        self.deadline = deadline  # clock time
        self.excluded: set[str] | None = None

    def exclude(self, replica_id: str) -> None:
        if self.excluded is None:
            self.excluded = set()
        self.excluded.add(replica_id)


def _wake(future: asyncio.Future) -> None:
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
        self.views: dict[tuple[str, str], DeploymentView] = {}
        self._slots: dict[str, ReplicaSlot] = {}
        self._queues: dict[tuple[str, str, str], WaitQueue] = {}
        self._budgets: dict[tuple[str, str], RetryBudget] = {}
        self._queued: dict[tuple[str, str], int] = {}
        self.health = HealthMonitor(self)
        self._monitor: asyncio.Task | None = None
        self.background: set[asyncio.Task] = set()  # probes and mirror copies
        self.ejections: deque[dict] = deque(maxlen=256)  # recent ejections, for status and tests
        self.in_probation = 0  # replicas ejected and not yet readmitted (recounted by the monitor)
        self.retired: set[ReplicaSlot] = set()  # gone from the table, calls still in flight
        self.finishing: set = set()  # connections replaced by a probe's fresh one, calls still in flight
        self.holds = Holds()  # requests for a version with no replica wait (scale-to-zero): routing/hold.py

    # -- table ------------------------------------------------------------------------------------
    def update_table(self, table: RoutingTable) -> None:
        """Swap in a new table. Replicas that left are closed once their in-flight requests finish."""
        if table.version <= self.table.version and self.table.version:
            return
        policy = self.policy
        views, slots = build_views(table, self._slots, self._queues, self._budgets, lambda: RetryBudget(
            policy.retry_ratio, policy.retry_min_per_s, policy.retry_window_s, self.clock))
        for replica_id, slot in self._slots.items():
            if replica_id not in slots:
                slot.retired = True
                if slot.in_flight == 0:
                    self._close(slot)
                else:
                    self.retired.add(slot)  # its calls still need their deadlines watched
        self._slots, self.views, self.table = slots, views, table
        for queue in self._queues.values():
            queue.wake_all()
        if self._monitor is None:
            self._monitor = self.loop.create_task(self.health.run())

    def deployment_view(self, app: str, deployment: str) -> DeploymentView | None:
        return self.views.get((app, deployment))

    def slots(self) -> list[ReplicaSlot]:
        return list(self._slots.values())

    def load_by_version(self) -> dict[tuple[str, str, str], tuple[float, float]]:
        """(in flight on replicas, queued waiting for one) per (app, deployment, version), as this router sees
        it now: what the autoscaler's window needs from an edge, read once a second, off the request path."""
        load = {}
        for (app, deployment), view in self.views.items():
            for version in view.versions:
                in_flight = sum(slot.in_flight for slot in version.slots)
                load[(app, deployment, version.name)] = (float(in_flight), float(len(version.queue.waiters)))
        return load

    def connection(self, slot: ReplicaSlot, fresh: bool = False) -> ReplicaConnection:
        """The slot's open connection, or a new one (not yet opened: the first request or ping opens it)."""
        connection = slot.connection
        if connection is None or connection.closed or fresh:
            if connection is not None:
                if connection.pending and not connection.closed:
                    self.finishing.add(connection)  # its calls (not retried: not idempotent) keep waiting
                else:
                    connection.close()
            connection = slot.connection = self._connection_factory(
                self.loop, slot.info.host, slot.info.port, self.table.channel_token, clock=self.clock,
                connect_timeout_s=self.policy.connect_timeout_s)
        return connection

    # -- calls ------------------------------------------------------------------------------------
    def choose_version(self, view: DeploymentView, pinned: str | None, split_key: str | None) -> VersionView:
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
        view = self.views.get((app, deployment))
        if view is None:
            raise RouteNotFound(f"no deployment {deployment!r} in app {app!r}")
        route = view.route
        version = self.choose_version(view, pinned, split_key)
        if pinned is None or not route.allow_pinning:
            version = self._live_version(view, version)
        if view.mirrors:
            mirror(self, view, version, body, request_id, path)
        timeout = route.request_timeout_s if timeout_s is None else timeout_s
        idempotent = route.idempotent if route.idempotent is not None else method in ("GET", "HEAD")
        view.budget.record_request()
        request = _Request(body, request_id, path, idempotent, int(timeout * 1000), self.clock() + timeout)
        try:
            return await self._call_version(view, version, request)
        except DeadlineReached:
            raise DeadlineExceeded(f"no answer from deployment {deployment!r} within {timeout:g}s") from None

    def _live_version(self, view: DeploymentView, version: VersionView) -> VersionView:
        """The chosen version, or, when none of its replicas can take traffic, another by weight."""
        if version.slots and not self.in_probation:
            return version  # the common case: nothing is ejected anywhere
        now = self.clock()
        live = [any(usable(s, now) for s in v.slots) for v in view.versions]
        chosen = view.versions.index(version)
        index = fallback_version(view.weights, live, chosen, self.rng)
        if index == chosen:
            return version
        used = view.versions[index]
        self.observer.fell_back(view.route.app, view.route.name, version.name, used.name)
        return used

    async def _call_version(self, view: DeploymentView, version: VersionView, request: _Request) -> CallResult:
        attempts = retries = 0
        hedge = hedge_delay(idempotent=request.idempotent, hedge_after_s=view.route.hedge_after_s)
        while True:
            attempts += 1
            if hedge is None:
                outcome = await self._attempt(view, version, request)
            else:
                outcome = await race(self._attempt(view, version, request),
                                     partial(self._attempt, view, version, request, True), hedge)
            if type(outcome) is CallResult:  # the fast path: answered
                return outcome if attempts == 1 else _with_attempts(outcome, attempts)
            route = view.route
            decision = decide_retry(outcome, idempotent=request.idempotent, retries=retries,
                                    max_retries=route.max_retries, budget_allows=view.budget.allows())
            if decision is Decision.RETURN:
                return _with_attempts(outcome.result, attempts)
            if decision is Decision.FAIL:
                raise ReplicaFailed(f"replica failed and the request was not retried: {outcome.failure}")
            if outcome.sent:
                retries += 1
                view.budget.spend()
                self.observer.retried(route.app, route.name, outcome.failure)
            elif outcome.failure == BUSY:
                await self._after_busy(version, request)
            view, version = self._current(view, version)
            version = self._live_version(view, version)

    async def _after_busy(self, version: VersionView, request: _Request) -> None:
        """Every replica of the version answered BUSY: let them all be tried again after a short pause."""
        if all(s.replica_id in request.excluded for s in version.slots):
            request.excluded.clear()
            if self.clock() + self.policy.busy_backoff_s >= request.deadline:
                raise DeadlineReached()
            await asyncio.sleep(self.policy.busy_backoff_s)

    def _current(self, view: DeploymentView, version: VersionView) -> tuple[DeploymentView, VersionView]:
        """The deployment's view in the table now (it may have been swapped while the request waited)."""
        route = view.route
        current = self.views.get((route.app, route.name))
        if current is None:
            raise RouteNotFound(f"deployment {route.name!r} of app {route.app!r} was removed")
        return current, current.by_name.get(version.name) or version

    async def _attempt(self, view: DeploymentView, version: VersionView, request: _Request,
                       hedging: bool = False) -> CallResult | Attempt:
        """One try on one replica: its answer (a CallResult), or an Attempt saying why another may do better."""
        excluded = request.excluded or _NOTHING
        if hedging:  # not the replicas the first copy may be waiting on
            excluded = excluded | {s.replica_id for s in version.slots if s.connection and s.connection.pending}
        route = view.route
        slot = choose_replica(version.slots, route.max_ongoing_requests, self.clock(), self.rng, excluded)
        if slot is None:
            slot = await self._acquire(view, version, request, excluded)
            if slot is None:  # the version lost its last usable replica while we waited: another one serves
                return Attempt(None, NO_REPLICA, False)
        else:
            slot.in_flight += 1
        started = self.clock()
        try:
            status, answer = await self.connection(slot).request(
                request.request_id, request.path, request.body, request.deadline_ms, request.deadline)
        except ReplicaUnreachable:
            return self._lost(view, slot, request, UNREACHABLE, sent=False)
        except ReplicaConnectionLost:
            return self._lost(view, slot, request, CONNECTION_LOST, sent=True)
        finally:
            self.release(version, slot)
        if status in RETRYABLE_STATUSES:
            request.exclude(slot.replica_id)
            return Attempt(None, BUSY, False, slot.replica_id)
        elapsed = self.clock() - started
        slot.latency = elapsed if slot.latency == 0.0 else 0.9 * slot.latency + 0.1 * elapsed
        result = CallResult(status, answer, version.name, slot.replica_id, 1)
        if status >= STATUS_USER_ERROR:
            return self._server_error(view, version, slot, request, result)
        slot.consecutive_failures = 0
        return result

    def _lost(self, view: DeploymentView, slot: ReplicaSlot, request: _Request, reason: str, sent: bool) -> Attempt:
        self.eject(view, slot, reason)
        request.exclude(slot.replica_id)
        return Attempt(None, reason, sent, slot.replica_id)

    def _server_error(self, view: DeploymentView, version: VersionView, slot: ReplicaSlot, request: _Request,
                      result: CallResult) -> CallResult | Attempt:
        """A 5xx answer: count it against the replica; worth another replica while one is left untried."""
        slot.consecutive_failures += 1
        peers = (peer.consecutive_failures for peer in version.slots if peer is not slot)
        if errors_outlier(slot.consecutive_failures, peers, self.policy):
            self.eject(view, slot, ERRORS)  # an outlier: its peers answer the same traffic fine
        request.exclude(slot.replica_id)
        now, excluded = self.clock(), request.excluded
        if any(usable(peer, now) and peer.replica_id not in excluded for peer in version.slots):
            return Attempt(result, SERVER_ERROR, True, slot.replica_id)
        return result

    async def _acquire(self, view: DeploymentView, version: VersionView, request: _Request,
                       excluded: set | frozenset) -> ReplicaSlot | None:
        """Wait for a replica of the version with room (bounded by max_queued_requests and the deadline); None
        when the version has no usable replica left and another version does (the caller falls back to it)."""
        key = (view.route.app, view.route.name)
        while True:
            route, now = view.route, self.clock()
            slot = choose_replica(version.slots, route.max_ongoing_requests, now, self.rng, excluded)
            if slot is None and excluded and all(s.replica_id in excluded or not usable(s, now)
                                                 for s in version.slots):
                excluded = _NOTHING  # every usable replica failed once: let them be tried again
                if request.excluded:
                    request.excluded.clear()
                slot = choose_replica(version.slots, route.max_ongoing_requests, now, self.rng)
            if slot is not None:
                slot.in_flight += 1
                return slot
            if self._elsewhere(view, version, now):
                return None
            if not version.slots:  # none yet (scaled to zero, first replica starting): held, or 503/504
                self.holds.hold((*key, version.name), sum(not f.done() for f in version.queue.waiters), now,
                                request.deadline)
            elif now >= request.deadline:
                raise DeadlineReached()
            queued = self._queued.get(key, 0)
            if queued >= route.max_queued_requests:
                raise Overloaded(f"deployment {route.name!r} is at capacity: {queued} requests already queued")
            wait_s = request.deadline - now
            if any(not usable(s, now) for s in version.slots):
                wait_s = min(wait_s, self.policy.requeue_check_s)  # an ejected replica may come back first
            await self._queue_wait(key, version.queue, queued, wait_s)
            current = self.views.get(key)
            if current is not None and version.name in current.by_name:
                view, version = current, current.by_name[version.name]

    @staticmethod
    def _elsewhere(view: DeploymentView, version: VersionView, now: float) -> bool:
        """No usable replica in `version`, and one in another version with traffic: wait there, not here."""
        if any(usable(s, now) for s in version.slots):
            return False
        return any(v.weight > 0 and any(usable(s, now) for s in v.slots) for v in view.versions if v is not version)

    async def _queue_wait(self, key: tuple[str, str], queue: WaitQueue, queued: int, wait_s: float) -> None:
        future = self.loop.create_future()
        queue.waiters.append(future)
        self._queued[key] = queued + 1
        timer = self.loop.call_later(wait_s, _wake, future)
        try:
            await future
        finally:
            timer.cancel()
            self._queued[key] -= 1
            if not future.done():
                future.cancel()  # so a wake-up is never spent on a waiter that left

    def release(self, version: VersionView, slot: ReplicaSlot) -> None:
        """A call on `slot` finished: wake one waiter, or close a retired replica's last connection."""
        slot.in_flight -= 1
        if slot.retired:
            if slot.in_flight == 0:
                self.retired.discard(slot)
                self._close(slot)
            return
        version.queue.wake_one()

    # -- ejection ---------------------------------------------------------------------------------
    def eject(self, view: DeploymentView, slot: ReplicaSlot, reason: str) -> bool:
        """Take a replica out of choice, if the cap allows (see ejection.py); True when it is out."""
        now = self.clock()
        if not usable(slot, now):
            return True
        slots = view.all_slots()
        ejection = decide_ejection(reason, in_a_row=slot.ejections, last_until=slot.ejected_until,
                                   ejected=sum(1 for s in slots if not usable(s, now)), total=len(slots), now=now,
                                   policy=self.policy)
        if ejection is None:
            return False
        slot.ejections, slot.ejected_until, slot.probation = ejection.in_a_row, ejection.until, True
        self.in_probation += 1
        slot.ejection = {"replica_id": slot.replica_id, "reason": reason, "at": time.time(),
                         "for_s": ejection.duration_s, "readmitted_at": None}
        self.ejections.append(slot.ejection)
        self.observer.ejected(slot.replica_id, reason)
        version = view.by_name.get(slot.info.version)
        if version is not None:
            version.queue.wake_all()  # its waiters look again: another replica, or another version
        connection = slot.connection
        if connection is not None and connection.pending and closes_connection(view.route.idempotent):
            connection.close()  # its in-flight calls fail now and are retried elsewhere
        return True

    def readmitted(self, slot: ReplicaSlot) -> None:
        """A fresh connection answered the probe (health.py took it off probation): its ejection record says
        when, in wall seconds (`for_s` is the least it stays out; a probe that fails keeps it out longer)."""
        slot.consecutive_failures = 0
        self.in_probation = sum(1 for s in self.slots() if s.probation)
        if slot.ejection is not None:
            slot.ejection["readmitted_at"] = time.time()
            slot.ejection = None

    def _close(self, slot: ReplicaSlot) -> None:
        if slot.connection is not None:
            slot.connection.close()

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        for task in list(self.background):
            task.cancel()
        for slot in self._slots.values():
            self._close(slot)
        for connection in self.finishing:
            connection.close()
        self.finishing.clear()


def _with_attempts(result: CallResult, attempts: int) -> CallResult:
    return CallResult(result.status, result.body, result.version, result.replica_id, attempts)
