"""What the client decides, apart from what it does: whether an attempt may be retried, how long to wait,
whether the retry budget allows it, and what an outcome says about the endpoint.

Retry rule: an attempt that certainly never reached a gateway (the connection was refused or could not be
opened) may always go to another endpoint. Anything that may have been delivered (a connection reset after
sending, a timeout, a 502/504) is retried only when the call is idempotent: GET/HEAD/PUT/DELETE/OPTIONS by
default, any method when the caller says `idempotent=True`. A 429/503 whose code says the gateway refused it
before any replica ran it (`overloaded`, `no_replicas`) is retried for every call.

Retry budget (as in Finagle and gRPC): every first attempt deposits `ratio` tokens, time adds `min_per_s`,
every retry spends one; retries stop when the bucket is empty, so a failing cluster never multiplies load.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "CONNECT_FAILED",
    "IDEMPOTENT_METHODS",
    "SEND_FAILED",
    "TIMED_OUT",
    "ClientConfig",
    "Outcome",
    "RetryBudget",
    "backoff_s",
    "may_retry",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Error codes of a gateway refusal that ran nothing (replicas/routing/failures.py).
_NOT_RUN_CODES = frozenset({"overloaded", "no_replicas"})

# Outcomes of an attempt that got no HTTP answer.
CONNECT_FAILED = "connect_failed"  # no connection: nothing was sent
SEND_FAILED = "send_failed"  # the connection broke after the request may have been sent
TIMED_OUT = "timed_out"  # no answer within the attempt's timeout


@dataclass(frozen=True)
class ClientConfig:
    timeout_s: float = 10.0  # one attempt: connect, send, answer
    connect_timeout_s: float = 2.0  # opening a connection to one endpoint
    deadline_s: float = 30.0  # the whole call, retries and back-off included
    max_attempts: int = 4  # attempts per call, the first included
    backoff_base_s: float = 0.05  # back-off before retrying the same endpoint: full jitter up to base * 2^n
    backoff_max_s: float = 2.0  # cap of one back-off (and of an honoured Retry-After)
    budget_ratio: float = 0.2  # retry tokens earned per call
    budget_min_per_s: float = 10.0  # retry tokens earned per second regardless of traffic
    budget_cap: float = 100.0  # most tokens the bucket holds
    down_after_errors: int = 3  # consecutive 5xx/timeouts that take an endpoint out (connection errors: one)
    probe_interval_s: float = 1.0  # how often endpoints that are down are probed with GET /-/ready
    probe_timeout_s: float = 1.0  # one probe
    refresh_interval_s: float = 2.0  # how often the endpoint list is re-read from the Keeper (if given)
    pool_size: int = 100  # open connections per client, all endpoints together
    pool_per_endpoint: int = 0  # per endpoint; 0: no limit beyond pool_size


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: `status` is the HTTP status, or 0 with `failure` set when no answer came."""

    status: int = 0
    failure: str = ""  # CONNECT_FAILED, SEND_FAILED, TIMED_OUT; empty when an HTTP answer came
    code: str = ""  # the gateway's error code, when it answered an error
    retry_after: float | None = None  # seconds, from Retry-After

    @property
    def ok(self) -> bool:
        return 0 < self.status < 500 and self.status != 429

    @property
    def endpoint_failed(self) -> bool:
        """Counts against the endpoint's health: no answer, or a gateway-level 5xx (502/503/504)."""
        return bool(self.failure) or self.status in (502, 503, 504)

    @property
    def endpoint_down_now(self) -> bool:
        """A connection that failed: the endpoint is out at once (no need to wait for more strikes)."""
        return self.failure in (CONNECT_FAILED, SEND_FAILED)


def may_retry(outcome: Outcome, idempotent: bool) -> bool:
    """Whether another attempt is allowed by what this one did (the budget and deadline are checked apart)."""
    if outcome.failure == CONNECT_FAILED:
        return True
    if outcome.status in (429, 503) and outcome.code in _NOT_RUN_CODES:
        return True
    if not idempotent:
        return False
    return outcome.failure in (SEND_FAILED, TIMED_OUT) or outcome.status in (429, 502, 503, 504)


def backoff_s(config: ClientConfig, retry: int, same_endpoint: bool, retry_after: float | None,
              rng: random.Random) -> float:
    """Wait before retry number `retry` (1 = the first retry). Failing over to another endpoint goes at once;
    the same endpoint again waits a full-jitter exponential back-off, or its Retry-After (capped)."""
    if not same_endpoint:
        return 0.0
    if retry_after is not None:
        return min(config.backoff_max_s, max(0.0, retry_after))
    return rng.uniform(0.0, min(config.backoff_max_s, config.backoff_base_s * (2 ** retry)))


class RetryBudget:
    """Token bucket of retries; `now` comes from the caller's clock (seconds, monotonic)."""

    def __init__(self, ratio: float, min_per_s: float, cap: float, now: float) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.cap = cap
        self.tokens = min(cap, min_per_s)  # a fresh client may retry a little at once
        self._last = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.cap, self.tokens + max(0.0, now - self._last) * self.min_per_s)
        self._last = max(self._last, now)

    def on_call(self, now: float) -> None:
        self._refill(now)
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def try_spend(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
