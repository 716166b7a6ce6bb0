"""Window metrics: per (app, deployment, version) per-second samples, merged from several reporters, kept in memory.

Who reports what (one `MetricReport` per version per second, sent even when every count is zero):
- edge reporters (gateways, handles): arrivals, completions, errors, in_flight (sent and not yet answered,
  queued included), queued (held at the edge, not yet sent), latency quantiles of the requests completed;
- replica reporters: in_flight (running plus queued inside the replica) and cpu (0-1 of its reserved CPUs).

Merging one second of several reports: counts are summed over edge reporters; in_flight is the larger of the edge
sum and the replica sum (both count the same requests from either side, so the larger is robust to a missing
reporter); latency quantiles are the completion-weighted mean over edge reporters (an approximation, documented in
docs/autoscaling.md); cpu is the mean over replicas. A reporter that reports the same second twice replaces its
first report, so re-sending is harmless. Seconds older than `retention_s` are dropped (a ring over seconds).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Iterable, Literal

__all__ = ["VersionKey", "MetricReport", "Sample", "ReplicaCounts", "WindowSnapshot", "MetricWindow", "merge_reports"]

VersionKey = tuple[str, str, str]  # (app, deployment, version)


@dataclass(frozen=True)
class MetricReport:
    """What one reporter saw of one version during one second."""

    app: str
    deployment: str
    version: str
    reporter: str  # stable id of the reporting process, e.g. "gateway-0@10.0.0.4" or a replica id
    role: Literal["edge", "replica"]  # edge: gateway or handle; replica: the serving process
    second: int  # the unix second these figures cover
    arrivals: int = 0  # requests received in that second (edge)
    completions: int = 0  # requests answered in that second, errors included (edge)
    errors: int = 0  # of the completions, how many failed (edge)
    in_flight: float = 0.0  # requests in flight at the end of the second (edge: queued included)
    queued: float = 0.0  # requests held at the edge, not yet sent to a replica (edge)
    latency_p50_s: float | None = None  # latency quantiles of that second's completions (edge)
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    cpu: float | None = None  # replica: CPU use over the second, 0-1 of its reserved CPUs

    @property
    def key(self) -> VersionKey:
        return (self.app, self.deployment, self.version)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MetricReport":
        report = cls(**data)
        if report.role not in ("edge", "replica"):
            raise ValueError(f"role must be 'edge' or 'replica', got {report.role!r}")
        for name in ("arrivals", "completions", "errors", "in_flight", "queued"):
            value = getattr(report, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        return report


@dataclass(frozen=True)
class Sample:
    """One second of one version, merged over its reporters."""

    second: int
    arrivals: float = 0.0
    completions: float = 0.0
    errors: float = 0.0
    in_flight: float = 0.0
    queued: float = 0.0
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    cpu: float | None = None
    reporters: int = 0  # how many reports were merged


@dataclass(frozen=True)
class ReplicaCounts:
    """What the controller says about a version's replicas."""

    ready: int = 0  # replicas serving
    starting: int = 0  # replicas created and not yet ready
    startup_samples_s: tuple[float, ...] = ()  # start-up durations (create -> ready) observed since the last tick


@dataclass(frozen=True)
class WindowSnapshot:
    """The recent samples of one version (ascending seconds, only seconds with data) plus its replica counts."""

    samples: tuple[Sample, ...] = ()
    replicas: ReplicaCounts = field(default_factory=ReplicaCounts)

    def since(self, start: float) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if s.second >= start)

    @staticmethod
    def mean(samples: Iterable[Sample], name: str) -> float | None:
        """Mean of a field over samples that have it; None when none has it."""
        values = [getattr(s, name) for s in samples]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None


def _weighted(values: list[tuple[float | None, float]]) -> float | None:
    present = [(v, w) for v, w in values if v is not None]
    if not present:
        return None
    weight = sum(w for _, w in present)
    if weight <= 0:
        return sum(v for v, _ in present) / len(present)
    return sum(v * w for v, w in present) / weight


def merge_reports(second: int, reports: Iterable[MetricReport]) -> Sample:
    """Merge the reports of one version for one second (rules in the module docstring)."""
    reports = list(reports)
    edges = [r for r in reports if r.role == "edge"]
    replicas = [r for r in reports if r.role == "replica"]
    latency_from = edges if any(r.latency_p50_s is not None for r in edges) else replicas
    cpus = [r.cpu for r in replicas if r.cpu is not None]
    return Sample(
        second=second,
        arrivals=float(sum(r.arrivals for r in edges)),
        completions=float(sum(r.completions for r in edges)),
        errors=float(sum(r.errors for r in edges)),
        in_flight=max(sum(r.in_flight for r in edges), sum(r.in_flight for r in replicas)),
        queued=float(sum(r.queued for r in edges)),
        latency_p50_s=_weighted([(r.latency_p50_s, r.completions) for r in latency_from]),
        latency_p90_s=_weighted([(r.latency_p90_s, r.completions) for r in latency_from]),
        latency_p99_s=_weighted([(r.latency_p99_s, r.completions) for r in latency_from]),
        cpu=sum(cpus) / len(cpus) if cpus else None,
        reporters=len(reports),
    )


class _Series:
    """The seconds of one version: raw reports by reporter, and merged samples cached until a report changes them."""

    def __init__(self) -> None:
        self.raw: dict[int, dict[str, MetricReport]] = {}
        self.order: deque[int] = deque()  # seconds in arrival order of their first report (for eviction)
        self.merged: dict[int, Sample] = {}


class MetricWindow:
    """A ring of per-second merged samples per version, `retention_s` long. Not thread-safe (one owner)."""

    def __init__(self, retention_s: float = 900.0) -> None:
        if not 1 <= retention_s <= 86_400:
            raise ValueError(f"retention_s must be within 1..86400, got {retention_s}")
        self.retention_s = retention_s
        self._series: dict[VersionKey, _Series] = {}
        self._newest = -math.inf

    def add(self, report: MetricReport) -> None:
        series = self._series.setdefault(report.key, _Series())
        second = int(report.second)
        if second < self._newest - self.retention_s:
            return  # too old to matter
        bucket = series.raw.get(second)
        if bucket is None:
            bucket = series.raw[second] = {}
            series.order.append(second)
        bucket[report.reporter] = report
        series.merged.pop(second, None)
        if second > self._newest:
            self._newest = second
            self._evict()

    def add_many(self, reports: Iterable[MetricReport]) -> int:
        count = 0
        for report in reports:
            self.add(report)
            count += 1
        return count

    def _evict(self) -> None:
        oldest = self._newest - self.retention_s
        for series in self._series.values():
            while series.order and series.order[0] < oldest:
                second = series.order.popleft()
                series.raw.pop(second, None)
                series.merged.pop(second, None)

    def keys(self) -> list[VersionKey]:
        return list(self._series)

    def forget(self, key: VersionKey) -> None:
        self._series.pop(key, None)

    def sample(self, key: VersionKey, second: int) -> Sample | None:
        series = self._series.get(key)
        if series is None or second not in series.raw:
            return None
        merged = series.merged.get(second)
        if merged is None:
            merged = series.merged[second] = merge_reports(second, series.raw[second].values())
        return merged

    def samples(self, key: VersionKey, start: float, end: float) -> tuple[Sample, ...]:
        """Merged samples of seconds in [start, end), ascending."""
        series = self._series.get(key)
        if series is None:
            return ()
        first, last = math.ceil(start), math.ceil(end)
        if last - first <= len(series.raw):
            seconds = [s for s in range(first, last) if s in series.raw]
        else:
            seconds = sorted(s for s in series.raw if first <= s < last)
        return tuple(self.sample(key, s) for s in seconds)

    def snapshot(self, key: VersionKey, now: float, span_s: float,
                 replicas: ReplicaCounts | None = None) -> WindowSnapshot:
        """The last `span_s` seconds before `now` (the current, incomplete second excluded)."""
        end = math.floor(now)
        return WindowSnapshot(self.samples(key, end - span_s, end), replicas or ReplicaCounts())
