"""Version split: weights, sticky keys with minimal movement, pinning."""

from __future__ import annotations

import random
from collections import Counter

from replicas.routing.split import BUCKETS, bucket_assignment, choose_version


def test_random_split_follows_weights():
    """Without a key, 20,000 draws at 90/10 land within 4 standard deviations of 90%."""
    rng = random.Random(42)
    weights = (("v1", 90.0), ("v2", 10.0))
    counts = Counter(choose_version(weights, None, rng) for _ in range(20_000))
    share = counts[0] / 20_000
    assert abs(share - 0.9) < 4 * (0.9 * 0.1 / 20_000) ** 0.5


def test_sticky_key_always_gets_the_same_version():
    weights = (("v1", 50.0), ("v2", 50.0))
    rng = random.Random(0)
    for key in ("alice", "bob", "carol", "42"):
        first = choose_version(weights, key, rng)
        assert all(choose_version(weights, key, rng) == first for _ in range(20))


def test_sticky_buckets_follow_weights():
    owners = bucket_assignment((("v1", 70.0), ("v2", 30.0)))
    share = Counter(owners)[0] / BUCKETS
    assert abs(share - 0.7) < 0.03


def test_weight_change_moves_only_the_minimum_share_of_keys():
    """90/10 -> 80/20 moves about 10% of keys, all of them from v1 to v2 (not hash % n reshuffling)."""
    before = bucket_assignment((("v1", 90.0), ("v2", 10.0)))
    after = bucket_assignment((("v1", 80.0), ("v2", 20.0)))
    moved = [(a, b) for a, b in zip(before, after) if a != b]
    assert all(a == 0 and b == 1 for a, b in moved)
    assert 0.07 < len(moved) / BUCKETS < 0.13


def test_adding_a_version_takes_keys_from_others_only():
    before = bucket_assignment((("v1", 50.0), ("v2", 50.0)))
    after = bucket_assignment((("v1", 50.0), ("v2", 50.0), ("v3", 25.0)))
    moved = [(a, b) for a, b in zip(before, after) if a != b]
    assert all(b == 2 for _, b in moved)
    assert 0.15 < len(moved) / BUCKETS < 0.25


def test_zero_weight_versions_get_nothing():
    rng = random.Random(1)
    weights = (("v1", 0.0), ("v2", 5.0))
    assert all(choose_version(weights, None, rng) == 1 for _ in range(200))
    assert all(choose_version(weights, str(k), rng) == 1 for k in range(200))
    assert choose_version((("v1", 0.0),), None, rng) == -1


def test_fallback_keeps_a_live_choice_and_otherwise_draws_by_weight_among_live_versions():
    from replicas.routing.split import fallback_version

    weights = (("v1", 90.0), ("v2", 10.0), ("v3", 0.0), ("v4", 30.0))
    rng = random.Random(3)
    assert fallback_version(weights, [True, True, True, True], 0, rng) == 0
    drawn = [fallback_version(weights, [False, True, True, True], 0, rng) for _ in range(4000)]
    assert set(drawn) == {1, 3}  # never the dead one, never a weight-0 version
    assert 0.2 < drawn.count(1) / len(drawn) < 0.3  # 10 : 30
    assert fallback_version(weights, [False, False, True, False], 0, rng) == 0  # nothing live to go to
