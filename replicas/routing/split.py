"""Traffic split between a deployment's versions: weights, sticky keys, pinning.

Sticky keys hash to one of `BUCKETS` buckets; each bucket belongs to the version that wins weighted
rendezvous hashing for it. A weight change therefore moves only keys whose bucket changes winner: raising
v2 from 10 to 20 moves keys from the other versions to v2 and never between the others.
"""

from __future__ import annotations

import hashlib
import math
import random
from functools import lru_cache
from typing import Sequence

__all__ = ["BUCKETS", "bucket_of", "bucket_assignment", "choose_version", "weighted_index", "fallback_version"]

BUCKETS = 10_000


def _unit_hash(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # in (0, 1)


def bucket_of(split_key: str) -> int:
    digest = hashlib.blake2b(split_key.encode(), digest_size=8, person=b"rg-split").digest()
    return int.from_bytes(digest, "big") % BUCKETS


@lru_cache(maxsize=64)
def bucket_assignment(weights: tuple[tuple[str, float], ...]) -> tuple[int, ...]:
    """For each bucket, the index (into `weights`) of the version that owns it. Pure and deterministic."""
    live = [(i, name, w) for i, (name, w) in enumerate(weights) if w > 0]
    if not live:
        return ()
    owners = []
    for bucket in range(BUCKETS):
        tag = str(bucket)
        best, best_score = -1, -math.inf
        for i, name, weight in live:
            score = -weight / math.log(_unit_hash(name, tag))
            if score > best_score:
                best, best_score = i, score
        owners.append(best)
    return tuple(owners)


def choose_version(weights: Sequence[tuple[str, float]], split_key: str | None, rng: random.Random) -> int:
    """Index of the version for one request: sticky by key when given, random by weight otherwise.

    Returns -1 when no version has a positive weight.
    """
    if len(weights) == 1:
        return 0 if weights[0][1] > 0 else -1
    if split_key is not None:
        owners = bucket_assignment(tuple(weights))
        return owners[bucket_of(split_key)] if owners else -1
    return weighted_index(weights, rng)


def weighted_index(weights: Sequence[tuple[str, float]], rng: random.Random) -> int:
    """A random index, each with probability proportional to its weight; -1 when no weight is positive."""
    total = 0.0
    for _, weight in weights:
        total += weight
    if total <= 0:
        return -1
    point = rng.random() * total
    for i, (_, weight) in enumerate(weights):
        point -= weight
        if point < 0 and weight > 0:
            return i
    return max(i for i, (_, w) in enumerate(weights) if w > 0)


def fallback_version(weights: Sequence[tuple[str, float]], live: Sequence[bool], chosen: int,
                     rng: random.Random) -> int:
    """`chosen` when it has a live replica; else another live version drawn by weight; else `chosen` again (the
    request waits for it, or for its deadline)."""
    if live[chosen]:
        return chosen
    others = [(name, weight if live[i] and i != chosen else 0.0) for i, (name, weight) in enumerate(weights)]
    index = weighted_index(others, rng)
    return chosen if index < 0 else index
