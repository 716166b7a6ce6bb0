"""The router's monitor: a few times a second it expires overdue calls, pings open connections, ejects replicas
whose pings or requests go unanswered (rules in ejection.py), and probes ejected ones for re-admission.

It runs on the router's loop and clock; a bug in one pass is logged and the next pass runs (it never dies).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from replicas.routing.choice import ReplicaSlot
from replicas.routing.ejection import SEND_PING, after_probe, connection_verdict, probe_due, stall_threshold
from replicas.routing.views import DeploymentView

if TYPE_CHECKING:
    from replicas.routing.router import Router

__all__ = ["HealthMonitor"]

log = structlog.get_logger("raygate.router")


class HealthMonitor:
    """Connection health and re-admission for one router."""

    def __init__(self, router: "Router") -> None:
        self.router = router

    async def run(self) -> None:
        """Check every `monitor_interval_s` until cancelled."""
        while True:
            try:
                await asyncio.sleep(self.router.policy.monitor_interval_s)
                self.check(self.router.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a monitoring bug must not stop routing
                log.error("router_monitor_failed", error=repr(exc))

    def check(self, now: float) -> None:
        """One pass at time `now`."""
        router = self.router
        for slot in (*router.slots(), *router.retired):
            if slot.connection is not None and not slot.connection.closed:
                slot.connection.expire_overdue(now)  # deadlines of calls in flight
        for connection in list(router.finishing):
            if not connection.closed:
                connection.expire_overdue(now)
            if connection.closed or not connection.pending:
                connection.close()
                router.finishing.discard(connection)
        router.in_probation = sum(1 for slot in router.slots() if slot.probation)
        for view in router.views.values():
            for version in view.versions:
                stall_after = stall_threshold([s.latency for s in version.slots], router.policy)
                for slot in version.slots:
                    if slot.probation:
                        if probe_due(probation=True, probing=slot.probing, ejected_until=slot.ejected_until, now=now):
                            self._start_probe(slot)
                    else:
                        self._check_connection(view, slot, stall_after, now)

    def _check_connection(self, view: DeploymentView, slot: ReplicaSlot, stall_after: float | None,
                          now: float) -> None:
        connection = slot.connection
        if connection is None or connection.closed or connection.transport is None:
            return
        verdict = connection_verdict(pending_age=connection.oldest_pending_age(now),
                                     ping_age=connection.oldest_ping_age(now),
                                     since_ping=now - connection.last_ping_at, stall_after=stall_after,
                                     policy=self.router.policy)
        if verdict == SEND_PING:
            connection.send_ping()
        elif verdict is not None:
            self.router.eject(view, slot, verdict)

    def _start_probe(self, slot: ReplicaSlot) -> None:
        slot.probing = True
        task = self.router.loop.create_task(self.probe(slot))
        self.router.background.add(task)
        task.add_done_callback(self.router.background.discard)

    async def probe(self, slot: ReplicaSlot) -> bool:
        """A fresh connection and one ping: readmit the replica if it answers within `probe_timeout_s`."""
        router = self.router
        try:
            connection = router.connection(slot, fresh=True)
            answered = await connection.ping(router.policy.probe_timeout_s)
            if not answered:
                connection.close()
        except Exception as exc:
            log.warning("replica_probe_failed", replica=slot.replica_id, error=repr(exc))
            answered = False
        finally:
            slot.probing = False
        slot.probation, slot.ejected_until = after_probe(answered, router.clock(), router.policy)
        if answered:
            router.readmitted(slot)
        return answered
