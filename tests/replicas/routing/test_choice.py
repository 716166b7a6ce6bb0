"""Power-of-two-choices replica choice."""

from __future__ import annotations

import random
from collections import Counter

from replicas.routing.choice import ReplicaSlot, choose_replica
from replicas.routing.table import ReplicaInfo


def _slots(loads):
    return [ReplicaSlot(info=ReplicaInfo(f"r{i}", "a", "d", "v1", "h", i), in_flight=n) for i, n in enumerate(loads)]


def test_picks_less_loaded_of_two():
    """With two replicas, the less loaded one is always chosen."""
    slots = _slots([5, 1])
    rng = random.Random(1)
    assert all(choose_replica(slots, 10, 0.0, rng) is slots[1] for _ in range(50))


def test_spreads_load_and_avoids_the_busiest():
    """Over many picks the most loaded replica of four is chosen least."""
    slots = _slots([0, 0, 0, 8])
    rng = random.Random(7)
    picks = Counter(choose_replica(slots, 10, 0.0, rng).replica_id for _ in range(2000))
    assert picks["r3"] == 0  # never both sampled: r3 only loses
    assert min(picks[f"r{i}"] for i in range(3)) > 400


def test_full_and_ejected_replicas_are_skipped():
    slots = _slots([3, 3, 1])
    slots[2].ejected_until = 10.0
    rng = random.Random(3)
    assert choose_replica(slots, 3, now=5.0, rng=rng) is None  # r0/r1 full, r2 ejected
    assert choose_replica(slots, 3, now=11.0, rng=rng) is slots[2]  # ejection expired
    assert choose_replica(slots, 4, now=5.0, rng=rng) in slots[:2]


def test_falls_back_to_any_free_replica():
    """When both samples are full, a replica with room is still found."""
    slots = _slots([2, 2, 2, 2, 0])
    rng = random.Random(0)
    assert all(choose_replica(slots, 2, 0.0, rng) is slots[4] for _ in range(100))


def test_excluded_and_empty():
    slots = _slots([0])
    assert choose_replica(slots, 1, 0.0, random.Random(), excluded={"r0"}) is None
    assert choose_replica([], 1, 0.0, random.Random()) is None
