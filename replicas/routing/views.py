"""A router's live view of the routing table: per deployment and version, the replica slots and wait queue.

Views are rebuilt whole on every table swap (`build_views`); slots (load, latency, ejection), wait queues and retry
budgets carry over by replica id, version and deployment.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from replicas.routing.budget import RetryBudget
from replicas.routing.choice import ReplicaSlot
from replicas.routing.table import DeploymentRoute, RoutingTable

__all__ = ["VersionView", "DeploymentView", "WaitQueue", "build_views", "usable"]


def usable(slot: ReplicaSlot, now: float) -> bool:
    """Not ejected and not on probation."""
    return slot.ejected_until <= now and not slot.probation


class WaitQueue:
    """Requests of one version waiting for a free replica, woken one per released slot."""

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


class VersionView:
    __slots__ = ("name", "weight", "mirror_percent", "slots", "queue")

    def __init__(self, name: str, weight: float, mirror_percent: float, slots: list[ReplicaSlot],
                 queue: WaitQueue) -> None:
        self.name = name
        self.weight = weight
        self.mirror_percent = mirror_percent
        self.slots = slots
        self.queue = queue


class DeploymentView:
    __slots__ = ("route", "versions", "weights", "by_name", "mirrors", "budget")

    def __init__(self, route: DeploymentRoute, versions: list[VersionView], budget: RetryBudget) -> None:
        self.route = route
        self.versions = versions
        self.weights = tuple((v.name, v.weight) for v in versions)
        self.by_name = {v.name: v for v in versions}
        self.mirrors = tuple(v for v in versions if v.mirror_percent > 0)
        self.budget = budget

    def all_slots(self) -> list[ReplicaSlot]:
        return [s for v in self.versions for s in v.slots]


def build_views(table: RoutingTable, slots: dict[str, ReplicaSlot], queues: dict[tuple, WaitQueue],
                budgets: dict[tuple, RetryBudget], new_budget: Callable[[], RetryBudget],
                ) -> tuple[dict[tuple, DeploymentView], dict[str, ReplicaSlot]]:
    """Views and slots for `table`, reusing the existing slots, queues and budgets (`queues` and `budgets` gain
    entries for new versions and deployments)."""
    new_slots: dict[str, ReplicaSlot] = {}
    views: dict[tuple, DeploymentView] = {}
    for key, route in table.deployments.items():
        versions = []
        for version in route.versions:
            version_slots = []
            for info in version.replicas:
                slot = slots.get(info.replica_id)
                if slot is None:
                    slot = ReplicaSlot(info=info)
                else:
                    slot.info = info
                new_slots[info.replica_id] = slot
                version_slots.append(slot)
            queue = queues.setdefault((route.app, route.name, version.name), WaitQueue())
            versions.append(VersionView(version.name, version.weight, version.mirror_percent, version_slots, queue))
        budget = budgets.get(key)
        if budget is None:
            budget = budgets[key] = new_budget()
        views[key] = DeploymentView(route, versions, budget)
    return views, new_slots
