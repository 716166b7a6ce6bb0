"""Gateway metrics: buffered observations give the same exposition as observing directly."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.metrics import _LATENCY_BUCKETS, GatewayMetrics


def _lines(text: bytes, prefix: str) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line.startswith(prefix))


def test_flushed_histogram_and_counter_match_direct_observation():
    rng = random.Random(3)
    samples = [rng.choice([0.0001, 0.001, 0.0025, 0.02, 0.3, 7.0, 99.0, rng.random()]) for _ in range(500)]
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    for value in samples:
        metrics.observe("app", "dep", "v1", 200, value)
    assert "raygate_requests_total{" not in generate_latest(registry).decode()  # buffered until flushed
    metrics.flush()
    reference_registry = CollectorRegistry()
    reference = Histogram("raygate_request_latency_seconds", "x", ["app", "deployment", "version"],
                          buckets=_LATENCY_BUCKETS, registry=reference_registry)
    for value in samples:
        reference.labels("app", "dep", "v1").observe(value)
    ours = generate_latest(registry)
    theirs = generate_latest(reference_registry)
    assert _lines(ours, "raygate_request_latency_seconds_bucket") == _lines(theirs, "raygate_request_latency_seconds_bucket")
    assert _lines(ours, "raygate_request_latency_seconds_count") == _lines(theirs, "raygate_request_latency_seconds_count")
    ours_sum = float(_lines(ours, "raygate_request_latency_seconds_sum")[0].rsplit(" ", 1)[1])
    assert abs(ours_sum - sum(samples)) < 1e-9
    assert 'raygate_requests_total{app="app",code="200",deployment="dep",version="v1"} 500.0' in ours.decode()
    metrics.observe("app", "dep", "v1", 200, 0.01)
    metrics.flush()
    assert 'raygate_requests_total{app="app",code="200",deployment="dep",version="v1"} 501.0' in \
        generate_latest(registry).decode()
