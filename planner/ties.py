"""Consistent tie-breaking: a tiny deterministic per-(user, item) raise of every value.

Users whose options tie exactly (equal coupon values, equal usage) get the same answer from the hard argmax rule,
so a capacity that ends inside such a group is overshot or left unfilled by the whole group at once, whatever the
prices (docs/planner.md, "Where the overshoot floor comes from"). Ranking them by a hash breaks the tie the same way
everywhere: every value becomes

    c'_ij = c_ij + delta * |c_ij| * h(user_i, item_ij),     h a 64-bit hash of (user, item), uniform in [0, 1)

with `delta` relative (`DEFAULT_TIE_BREAK`). The solver solves, and the online rule decides on, c'. Its cost is
bounded: c <= c' <= (1 + delta) c on positive values, so the perturbed LP optimum is at most (1 + delta) times the
true one, and the rule's true value is at least its perturbed value / (1 + delta). The certificate stays rigorous:
its dual bound is the perturbed dual (>= the perturbed optimum >= the true optimum) and its primal is the rule's
true value, so the reported gap includes the tie-break's cost.

The same function serves the planner (user = row index in the instance file, item = catalog index) and an online
decision (`break_ties(values, user, items)`; string ids are hashed to 64 bits with BLAKE2b first), so the rule the
certificate describes is the rule that decides.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_TIE_BREAK", "break_ties", "id_key", "tie_broken_values", "tie_hash"]

DEFAULT_TIE_BREAK = 1e-3  # relative value raise at most (delta): a tie group spreads over 1e-3 of its value, 10
# widths of the last temperature stage (1e-4), which the smoothed solve resolves (5e-4 did not on a test instance);
# costs at most 0.1% of the optimum, a fifth of the default gap tolerance (2e-3 also converged everywhere but left
# bind10 at 1M 0.46% from its bound)

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(_M1)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(_M2)
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    x ^= x >> 30
    x = (x * _M1) & _MASK
    x ^= x >> 27
    x = (x * _M2) & _MASK
    return x ^ (x >> 31)


def id_key(x) -> int:
    """The 64-bit key of a user or item id: an integer is itself (mod 2^64), a string its BLAKE2b-64 digest."""
    if isinstance(x, (int, np.integer)):
        return int(x) & _MASK
    if isinstance(x, str):
        return _str_key(x)  # catalog items repeat in every request: their digests are cached
    return _digest(bytes(x))


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@functools.lru_cache(maxsize=1 << 16)
def _str_key(x: str) -> int:
    return _digest(x.encode())


def tie_hash(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """h(user, item) in [0, 1) for broadcastable integer arrays of user and item keys."""
    u = np.asarray(users).astype(np.uint64)
    p = np.asarray(items).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(_mix(u + np.uint64(_GOLDEN)) + p * np.uint64(_GOLDEN))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _hash_keys(user: int, item: int) -> float:
    """tie_hash for one (user key, item key) pair, in Python integers (bit-identical to the array version)."""
    h = _mix_int((_mix_int((user + _GOLDEN) & _MASK) + item * _GOLDEN) & _MASK)
    return (h >> 11) * (1.0 / (1 << 53))


def tie_broken_values(c: np.ndarray, item: np.ndarray, delta: float = DEFAULT_TIE_BREAK, first_user: int = 0,
                      chunk_users: int = 1 << 16) -> np.ndarray:
    """c + delta |c| h(first_user + row, item) for an (n, J) block of users; `c` itself when delta is 0."""
    if delta <= 0.0:
        return c
    out = np.empty_like(c, dtype=np.float64)
    for start in range(0, c.shape[0], chunk_users):
        stop = min(c.shape[0], start + chunk_users)
        rows = np.arange(first_user + start, first_user + stop, dtype=np.int64)[:, None]
        block = c[start:stop]
        out[start:stop] = block + delta * np.abs(block) * tie_hash(rows, item[start:stop])
    return out


def break_ties(values: np.ndarray, user, items: Sequence, delta: float = DEFAULT_TIE_BREAK) -> np.ndarray:
    """The online rule's values for one request: `values` (J,) of candidates `items` shown to `user`, raised as the
    planner raised them (ids may be integers or strings)."""
    values = np.asarray(values, dtype=np.float64)
    if delta <= 0.0:
        return values
    u = id_key(user)
    h = np.array([_hash_keys(u, id_key(it)) for it in items], dtype=np.float64)
    return values + delta * np.abs(values) * h
