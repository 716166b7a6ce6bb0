"""The retry decision: an attempt's outcome is a value, and one pure function decides what follows it.

Nothing that never reached the replica (`sent=False`: BUSY, DRAINING, could not connect) costs a retry: it is
tried again, elsewhere first, until the deadline. Something that may have run (`sent=True`: the connection was lost,
the replica answered 5xx) is retried only for an idempotent request, at most `max_retries` times, and only while the
deployment's retry budget allows; otherwise the replica's answer is returned, or the request fails (502).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CallResult", "Attempt", "Decision", "decide_retry"]


@dataclass(frozen=True, slots=True)
class CallResult:
    status: int  # replica status (200, 400, 500)
    body: bytes  # JSON body from the replica
    version: str  # version that answered
    replica_id: str  # replica that answered
    attempts: int  # 1 + retries


@dataclass(frozen=True, slots=True)
class Attempt:
    result: CallResult | None  # the replica's answer, when one came back
    failure: str | None  # None: done; else why another replica may do better (busy, connection_lost, ...)
    sent: bool  # the request may have run on the replica
    replica_id: str = ""  # the replica tried


class Decision(enum.Enum):
    RETURN = "return"  # hand back the attempt's result
    RETRY = "retry"  # try again (another replica first)
    FAIL = "fail"  # no answer to give: 502


def decide_retry(attempt: Attempt, *, idempotent: bool, retries: int, max_retries: int,
                 budget_allows: bool) -> Decision:
    """What follows `attempt`, given the request's idempotency, the retries it has had and the budget."""
    if attempt.failure is None:
        return Decision.RETURN
    if not attempt.sent:
        return Decision.RETRY
    if idempotent and retries < max_retries and budget_allows:
        return Decision.RETRY
    return Decision.RETURN if attempt.result is not None else Decision.FAIL
