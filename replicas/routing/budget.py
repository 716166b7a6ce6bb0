"""Retry budget: retries may add at most a fixed share of a deployment's traffic (plus a small floor), so a
failing deployment cannot be amplified into a retry storm."""

from __future__ import annotations

import time
from collections import deque

__all__ = ["RetryBudget"]


class RetryBudget:
    """Sliding-window budget: within `window_s`, retries <= ratio * requests + min_per_s * window_s."""

    def __init__(self, ratio: float = 0.2, min_per_s: float = 10.0, window_s: float = 10.0,
                 clock=time.monotonic) -> None:
        self.ratio = ratio  # retries allowed per request
        self.min_per_s = min_per_s  # retries always allowed per second, however little traffic
        self.window_s = window_s  # how far back requests and retries count
        self.clock = clock
        self._buckets: deque[list] = deque()  # [second, requests, retries]

    def _bucket(self) -> list:
        second = int(self.clock())
        buckets = self._buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
            horizon = second - self.window_s
            while buckets and buckets[0][0] <= horizon:
                buckets.popleft()
        return buckets[-1]

    def record_request(self) -> None:
        self._bucket()[1] += 1

    def allows(self) -> bool:
        """Whether one more retry fits in the window (spends nothing)."""
        self._bucket()
        requests = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        return retries + 1 <= self.ratio * requests + self.min_per_s * self.window_s

    def spend(self) -> None:
        """Count one retry."""
        self._bucket()[2] += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        if not self.allows():
            return False
        self.spend()
        return True
