"""Requests held for a version with no replica (scaled to zero, or its first replica starting).

A request routed to a version without a replica waits in the version's wait queue (the router's `_acquire`) until
a replica joins the table (every table swap wakes the queue), its deadline passes, or it is refused because too
many are held already. The rule is the pure `decide_hold`; `Holds` applies it for the router and tells a listener
(`on_hold`, the load reporter) when a request starts being held, so the demand reaches the scaler at once instead
of at the next per-second report. What is held is exactly the version's wait queue: nothing is counted twice.

- past the bound (`HoldPolicy.max_held` per version): 503 `overloaded` with Retry-After (`retry_after_s`);
- past the request's deadline: 504 `deadline_exceeded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from replicas.routing.failures import DeadlineExceeded, Overloaded

__all__ = ["HOLD", "FULL", "EXPIRED", "HoldPolicy", "Holds", "decide_hold"]

HOLD, FULL, EXPIRED = "hold", "full", "expired"

VersionKey = tuple[str, str, str]


@dataclass(frozen=True)
class HoldPolicy:
    max_held: int = 256  # requests held per version while it has no replica; one more is refused with a 503
    retry_after_s: float = 5.0  # Retry-After of that 503: about a small model's start-up


def decide_hold(held: int, now: float, deadline: float, policy: HoldPolicy) -> str:
    """HOLD (wait for a replica), FULL (`held` already at the bound) or EXPIRED (the deadline passed). Pure."""
    if now >= deadline:
        return EXPIRED
    if held >= policy.max_held:
        return FULL
    return HOLD


class Holds:
    """The router's side: `hold(...)` returns when the request may wait, or raises its refusal."""

    def __init__(self, policy: HoldPolicy | None = None,
                 on_hold: Callable[[VersionKey], None] | None = None) -> None:
        self.policy = policy or HoldPolicy()
        self.on_hold = on_hold  # called with the version's key each time a request starts waiting there

    def hold(self, key: VersionKey, held: int, now: float, deadline: float) -> None:
        """`held`: requests already waiting for the version (its wait queue's live waiters)."""
        decision = decide_hold(held, now, deadline, self.policy)
        if decision == EXPIRED:
            raise DeadlineExceeded(f"version {key[2]!r} of deployment {key[1]!r} had no replica before the "
                                   "request's deadline")
        if decision == FULL:
            raise Overloaded(f"version {key[2]!r} of deployment {key[1]!r} is starting: {held} requests already "
                             "held", retry_after=self.policy.retry_after_s)
        if self.on_hold is not None:
            self.on_hold(key)
