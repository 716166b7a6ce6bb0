"""Prometheus metrics of the event pipelines (one set per process; the registry is injectable for tests)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["EventMetrics", "default_metrics"]


class EventMetrics:
    """Counters and gauges labelled by pipeline (and source where it applies)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        kwargs = {"registry": registry}
        self.read = Counter("raygate_events_read", "Stream entries read by pipeline consumers",
                            ["pipeline"], **kwargs)
        self.emitted = Counter("raygate_events_emitted", "Results the sink accepted (new, after deduplication)",
                               ["pipeline"], **kwargs)
        self.duplicates = Counter("raygate_events_sink_duplicates", "Results the sink dropped as already delivered",
                                  ["pipeline"], **kwargs)
        self.dead = Counter("raygate_events_dead_lettered", "Events sent to the dead-letter stream",
                            ["pipeline", "stage"], **kwargs)
        self.reclaimed = Counter("raygate_events_reclaimed", "Entries reclaimed from idle consumers (XAUTOCLAIM)",
                                 ["pipeline"], **kwargs)
        self.stage_failures = Counter("raygate_events_stage_failures", "Failed stage calls (before retries)",
                                      ["pipeline", "stage"], **kwargs)
        self.lag = Gauge("raygate_events_lag", "Entries not yet delivered to the group (XINFO GROUPS lag)",
                         ["pipeline", "source"], **kwargs)
        self.pending = Gauge("raygate_events_pending", "Entries delivered but not acknowledged",
                             ["pipeline", "source"], **kwargs)
        self.in_flight = Gauge("raygate_events_batches_in_flight", "Batches in the stages now",
                               ["pipeline"], **kwargs)
        self.held = Gauge("raygate_events_held", "Entries held by stateful stages (join windows)",
                          ["pipeline"], **kwargs)
        self.dead_letters = Gauge("raygate_events_dead_letters", "Length of the dead-letter stream",
                                  ["pipeline"], **kwargs)
        self.batch_latency = Histogram("raygate_events_batch_seconds", "Time from read to acknowledgement",
                                       ["pipeline"], buckets=(.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5),
                                       **kwargs)


_default: EventMetrics | None = None


def default_metrics() -> EventMetrics:
    """The process's metrics on the default registry, created once."""
    global _default
    if _default is None:
        _default = EventMetrics()
    return _default
