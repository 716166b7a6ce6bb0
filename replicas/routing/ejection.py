"""Outlier ejection and re-admission, as pure rules over plain values and `now` (seconds, monotonic).

A replica leaves routing when its connection closes or cannot open (`unreachable`, `connection_lost`), when a
ping on its connection goes unanswered for `ping_timeout_s` (`ping_timeout`: its loop is frozen), when a request
waits far longer than its peers' median (`stalled`: half-alive), or after `consecutive_errors` 5xx answers in a row
while its peers have none (`errors`). At most `max_ejected_share` of a deployment's replicas are out at once, so a
bad probe or a deployment-wide problem never empties it; a lost connection is exempt. Each ejection in a row lasts
twice as long (up to `max_ejection_s`); `good_behaviour_s` without one resets the doubling. An ejected replica
stays on probation until a fresh connection answers a ping. The router applies these decisions; nothing here acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from replicas.routing.policy import FailoverPolicy

__all__ = [
    "UNREACHABLE", "CONNECTION_LOST", "PING_TIMEOUT", "STALLED", "ERRORS", "SEND_PING", "Ejection",
    "ejection_allowed", "decide_ejection", "errors_outlier", "stall_threshold", "connection_verdict",
    "closes_connection", "probe_due", "after_probe",
]

UNREACHABLE = "unreachable"
CONNECTION_LOST = "connection_lost"
PING_TIMEOUT = "ping_timeout"
STALLED = "stalled"
ERRORS = "errors"
SEND_PING = "send_ping"  # not an ejection: the connection is due a ping
_CONNECTION_REASONS = frozenset({UNREACHABLE, CONNECTION_LOST})


@dataclass(frozen=True, slots=True)
class Ejection:
    until: float  # not chosen before this time; then probed
    in_a_row: int  # ejections in a row, this one included
    duration_s: float  # until - now


def ejection_allowed(reason: str, ejected: int, total: int, policy: FailoverPolicy) -> bool:
    """The cap: `ejected` of `total` replicas are out already; may one more go for `reason`?"""
    if reason in _CONNECTION_REASONS and total > 1:
        return True
    return ejected + 1 <= int(total * policy.max_ejected_share)


def decide_ejection(reason: str, *, in_a_row: int, last_until: float, ejected: int, total: int, now: float,
                    policy: FailoverPolicy) -> Ejection | None:
    """The ejection to apply for `reason`, or None when the cap forbids it. `in_a_row` and `last_until` describe
    the replica's previous ejections (0 and -inf when none)."""
    if not ejection_allowed(reason, ejected, total, policy):
        return None
    if now - last_until >= policy.good_behaviour_s:
        in_a_row = 0
    in_a_row += 1
    duration = min(policy.max_ejection_s, policy.base_ejection_s * 2 ** (in_a_row - 1))
    return Ejection(now + duration, in_a_row, duration)


def errors_outlier(consecutive_errors: int, peer_errors: Iterable[int], policy: FailoverPolicy) -> bool:
    """5xx answers in a row from one replica while every peer's last answer was fine: the replica is the problem."""
    return consecutive_errors >= policy.consecutive_errors and all(n == 0 for n in peer_errors)


def stall_threshold(latencies: Sequence[float], policy: FailoverPolicy) -> float | None:
    """Age after which an unanswered request counts as stalled, from the peers' answered latencies."""
    known = sorted(x for x in latencies if x > 0)
    if not known:
        return None
    return max(policy.stall_min_s, policy.stall_factor * known[len(known) // 2])


def connection_verdict(*, pending_age: float, ping_age: float, since_ping: float, stall_after: float | None,
                       policy: FailoverPolicy) -> str | None:
    """The monitor's look at one open connection: STALLED, PING_TIMEOUT, SEND_PING or None."""
    if stall_after is not None and pending_age > stall_after:
        return STALLED
    if ping_age > policy.ping_timeout_s:
        return PING_TIMEOUT
    if since_ping >= policy.ping_interval_s:
        return SEND_PING
    return None


def closes_connection(idempotent: bool | None) -> bool:
    """Close the ejected replica's connection, failing its in-flight calls at once? Only for an idempotent
    deployment, whose calls are retried elsewhere. A non-idempotent call may already have reached the model, so
    it waits for the replica's own answer (a loop that stalled past `ping_timeout_s` usually answers a moment
    later) or its deadline (504); a replica that dies closes the connection itself, and the controller replaces a
    hung one. Failing it would answer 502 while the model may still run it."""
    return bool(idempotent)


def probe_due(*, probation: bool, probing: bool, ejected_until: float, now: float) -> bool:
    """An ejected replica whose ejection ran out is probed (once at a time)."""
    return probation and not probing and ejected_until <= now


def after_probe(answered: bool, now: float, policy: FailoverPolicy) -> tuple[bool, float]:
    """-> (still on probation, ejected until): readmitted when a fresh connection answered, else probed again
    after `base_ejection_s`."""
    if answered:
        return False, now
    return True, now + policy.base_ejection_s
