"""Replica choice: power of two choices on in-flight counts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from replicas.routing.table import ReplicaInfo

__all__ = ["ReplicaSlot", "choose_replica"]


@dataclass(eq=False)
class ReplicaSlot:
    """A router's live view of one replica. Survives routing-table swaps (keyed by replica id)."""

    info: ReplicaInfo
    in_flight: int = 0  # requests this router has outstanding on the replica
    connection: object | None = None  # replicas.channel.client.ReplicaConnection, opened lazily
    ejected_until: float = -1e18  # clock time before which the replica is not chosen (end of the last ejection)
    probation: bool = False  # ejected: needs a passing data-plane probe before it takes traffic again
    probing: bool = False  # a re-admission probe is running
    ejections: int = 0  # ejections in a row (each one lasts twice as long)
    latency: float = 0.0  # moving average of answered requests' latency, seconds
    consecutive_failures: int = 0  # 5xx answers in a row
    retired: bool = False  # gone from the table: close the connection when in_flight reaches 0
    ejection: dict | None = None  # the record (Router.ejections) of the ejection it is out for, until readmitted

    @property
    def replica_id(self) -> str:
        return self.info.replica_id


def choose_replica(slots: Sequence[ReplicaSlot], max_ongoing: int, now: float, rng: random.Random,
                   excluded: frozenset | set = frozenset()) -> ReplicaSlot | None:
    """Pick two replicas at random and take the less loaded; None when every replica is full or ejected.

    Ejected or excluded replicas are skipped; if the two picks are both unusable, the least loaded usable
    replica is taken, so a request never waits while some replica has room.
    """
    n = len(slots)
    if n == 0:
        return None
    if n == 1:
        only = slots[0]
        ok = (only.in_flight < max_ongoing and only.ejected_until <= now and not only.probation
              and only.replica_id not in excluded)
        return only if ok else None
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    if j >= i:
        j += 1
    a, b = slots[i], slots[j]
    a_ok = a.in_flight < max_ongoing and a.ejected_until <= now and not a.probation and a.replica_id not in excluded
    b_ok = b.in_flight < max_ongoing and b.ejected_until <= now and not b.probation and b.replica_id not in excluded
    if a_ok and b_ok:
        return a if a.in_flight <= b.in_flight else b
    if a_ok:
        return a
    if b_ok:
        return b
    best = None
    for slot in slots:
        if (slot.in_flight < max_ongoing and slot.ejected_until <= now and not slot.probation
                and slot.replica_id not in excluded):
            if best is None or slot.in_flight < best.in_flight:
                best = slot
    return best
