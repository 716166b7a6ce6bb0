"""Gateway metrics: buffered observations give the same exposition as observing directly; scrapes are served
from a cached render; counters live in the node's shared files and outlive the process that wrote them."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.metrics import _LATENCY_BUCKETS, GatewayMetrics, ScrapeCache


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


async def test_scrapes_within_max_age_share_one_render():
    """A scrape storm renders once per max_age_s (per process); a scrape after that sees new samples."""
    now = [100.0]
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    renders = []
    render = metrics.render
    metrics.render = lambda: renders.append(1) or render()
    cache = ScrapeCache(metrics, max_age_s=0.25, clock=lambda: now[0])
    metrics.observe("app", "dep", "v1", 200, 0.01)
    bodies = await asyncio.gather(*(cache.body() for _ in range(50)))
    assert len(renders) == 1 and len(set(bodies)) == 1
    assert b'raygate_requests_total{app="app",code="200",deployment="dep",version="v1"} 1.0' in bodies[0]
    metrics.observe("app", "dep", "v1", 200, 0.01)
    now[0] += 0.1
    assert await cache.body() == bodies[0] and len(renders) == 1  # still fresh
    now[0] += 0.2
    assert b'version="v1"} 2.0' in await cache.body() and len(renders) == 2


_WRITER = """
import os, sys
from gateway.metrics import GatewayMetrics
metrics = GatewayMetrics(multiprocess_dir=sys.argv[1])
for _ in range(int(sys.argv[2])):
    metrics.observe("app", "dep", "v1", 200, 0.01)
metrics.flush()
os.kill(os.getpid(), 9)  # dies as a killed gateway does: no clean-up of any kind
"""

_READER = """
import sys
from gateway.metrics import GatewayMetrics
sys.stdout.write(GatewayMetrics(multiprocess_dir=sys.argv[1]).render().decode())
"""


def test_counters_of_killed_processes_stay_in_the_node_scrape(tmp_path):
    """Two gateway processes flush into the shared directory and are SIGKILLed; a third process's scrape
    counts both, from their files alone, with nothing read from the environment of the reader."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    for count in ("3", "4"):
        writer = subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path), count], env=env, timeout=60)
        assert writer.returncode == -9
    reader = subprocess.run([sys.executable, "-c", _READER, str(tmp_path)], env=env, timeout=60,
                            capture_output=True, text=True)
    assert 'raygate_requests_total{app="app",code="200",deployment="dep",version="v1"} 7.0' in reader.stdout


async def test_a_shared_render_is_replaced_only_by_a_later_one(tmp_path):
    """Two processes' caches over one shared file: each scrape serves the newest render either knows, so a
    scrape never shows an older render than the one before it, whichever process answers."""
    now = [10.0]
    shared = str(tmp_path / "scrape-cache.prom")
    bodies = {"a": [b"a1", b"a2"], "b": [b"b1"]}

    def cache(name):
        metrics = GatewayMetrics(CollectorRegistry())
        metrics.render = lambda: bodies[name].pop(0)
        return ScrapeCache(metrics, max_age_s=0.25, clock=lambda: now[0], shared_path=shared)

    a, b = cache("a"), cache("b")
    assert await a.body() == b"a1"  # rendered at 10.0 and shared
    now[0] += 0.1
    assert await b.body() == b"a1"  # fresh enough: b serves a's render instead of rendering
    now[0] += 0.2
    assert await b.body() == b"b1"  # stale: b renders (began 10.3) and shares it
    assert await a.body() == b"b1"  # a's own render (10.0) is older than the shared one
    b._keep(10.05, b"old")  # a render that began earlier never replaces a later one
    assert await a.body() == b"b1"
