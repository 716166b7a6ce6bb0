"""Arrival history in Redis, so forecasts (and the measured start-up lead time) survive a scaler restart.

Keys (namespace defaults to "raygate"; `{key}` is `app/deployment/version`):
    {ns}:autoscale:arrivals:{key}   stream, one entry per completed forecast bucket: index, rate, bucket_s;
                                    capped with XADD MAXLEN ~ (the forecast's history length in buckets)
    {ns}:autoscale:lead:{key}       string: the measured start-up lead time in seconds

Appends of several buckets go in one MULTI/EXEC pipeline. The store receives its client and never closes it.
"""

from __future__ import annotations

import math
from typing import Iterable

from autoscale.window import VersionKey

__all__ = ["ArrivalHistoryStore"]


class ArrivalHistoryStore:
    """Bounded per-version arrival history (forecast buckets) and lead times, in Redis."""

    def __init__(self, client, namespace: str = "raygate", max_buckets: int = 4320) -> None:
        if not 1 <= max_buckets <= 1_000_000:
            raise ValueError(f"max_buckets must be within 1..1000000, got {max_buckets}")
        self.client = client
        self.namespace = namespace
        self.max_buckets = max_buckets

    def _name(self, key: VersionKey) -> str:
        return "/".join(key)

    def arrivals_key(self, key: VersionKey) -> str:
        return f"{self.namespace}:autoscale:arrivals:{self._name(key)}"

    def lead_key(self, key: VersionKey) -> str:
        return f"{self.namespace}:autoscale:lead:{self._name(key)}"

    def append(self, key: VersionKey, buckets: Iterable[tuple[int, float]], bucket_s: float) -> int:
        """Add completed buckets (index, arrivals per second) atomically; the stream stays capped."""
        rows = [(int(i), float(r)) for i, r in buckets]
        for _, rate in rows:
            if not math.isfinite(rate) or rate < 0:
                raise ValueError(f"bucket rates must be finite and >= 0, got {rate!r}")
        if not rows:
            return 0
        pipe = self.client.pipeline(transaction=True)
        for index, rate in rows:
            pipe.xadd(self.arrivals_key(key), {"index": index, "rate": repr(rate), "bucket_s": repr(float(bucket_s))},
                      maxlen=self.max_buckets, approximate=True)
        pipe.execute()
        return len(rows)

    def load(self, key: VersionKey, bucket_s: float) -> list[tuple[int, float]]:
        """Stored buckets of this bucket length, oldest first (others, from an older config, are skipped)."""
        rows = []
        for _, fields in self.client.xrange(self.arrivals_key(key)):
            if float(fields[b"bucket_s"]) != float(bucket_s):
                continue
            rows.append((int(fields[b"index"]), float(fields[b"rate"])))
        return rows[-self.max_buckets:]

    def save_lead_time(self, key: VersionKey, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"lead time must be finite and >= 0, got {seconds!r}")
        self.client.set(self.lead_key(key), repr(float(seconds)))

    def load_lead_time(self, key: VersionKey) -> float | None:
        value = self.client.get(self.lead_key(key))
        return float(value) if value is not None else None

    def forget(self, key: VersionKey) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.arrivals_key(key), self.lead_key(key))
        pipe.execute()
