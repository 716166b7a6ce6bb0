"""Prometheus metrics of the gateway tier.

With several gateway processes on one port, each writes its samples to files in a directory shared by the
node's gateways (prometheus_client's multiprocess mode), and whichever process answers a scrape sums all
of them: the scrape shows the whole node, and counters of a process that died stay counted, so they never
go backwards. Each process writes its own buffered samples there every `metrics_flush_s`; a scrape reads the
files as they are (no call to the other processes) and is rendered at most once per `max_age_s` per process, so
a scrape storm costs the request path nothing more than serving a cached body.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import time
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from replicas.routing.router import RouterObserver

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics", "MetricsObserver", "ScrapeCache", "mark_dead_processes"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _write_to(directory: str) -> None:
    """Make prometheus_client keep this process's samples in files under `directory`.

    prometheus_client takes the directory only from its environment variable (read when a sample's file is
    opened) and picks its value class at import: both are set here, from the config. Nothing here reads them.
    """
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


class GatewayMetrics:
    """The gateway's metrics. `multiprocess_dir` (GatewayConfig.metrics_dir): the node's shared metric files;
    empty: samples stay in `registry` (the default registry when None), for one process and unit tests."""

    def __init__(self, registry: CollectorRegistry | None = None, multiprocess_dir: str = "") -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir:
            os.makedirs(multiprocess_dir, exist_ok=True)
            _write_to(multiprocess_dir)
            registry = None  # multiprocess mode: the files are the registry
        elif registry is None:
            registry = REGISTRY
        self._registry = registry
        kwargs = {"registry": registry}  # None: multiprocess mode, where the files are the registry
        self.requests = Counter("raygate_requests", "HTTP requests answered, by app, deployment, version and "
                                "status code", ["app", "deployment", "version", "code"], **kwargs)
        self.latency = Histogram("raygate_request_latency_seconds", "Gateway request latency",
                                 ["app", "deployment", "version"], buckets=_LATENCY_BUCKETS, **kwargs)
        self.in_flight = Gauge("raygate_requests_in_flight", "Requests being answered", ["app"],
                               multiprocess_mode="livesum", **kwargs)
        self.replicas = Gauge("raygate_replicas", "Replicas by state (as seen in the routing table)",
                              ["app", "deployment", "version", "state"], multiprocess_mode="livemax", **kwargs)
        self.retries = Counter("raygate_retries", "Requests tried again on another replica",
                               ["app", "deployment", "reason"], **kwargs)
        self.ejections = Counter("raygate_ejections", "Replicas taken out of routing by this gateway",
                                 ["reason"], **kwargs)
        self.fallbacks = Counter("raygate_version_fallbacks", "Requests sent to another version because "
                                 "the chosen one had no live replica", ["app", "deployment", "wanted", "used"],
                                 **kwargs)
        self.mirror_requests = Counter("raygate_mirror_requests", "Mirrored requests by version and status "
                                       "(code 0: dropped, no free replica)",
                                       ["app", "deployment", "version", "code"], **kwargs)
        self.mirror_latency = Histogram("raygate_mirror_latency_seconds", "Latency of mirrored requests",
                                        ["app", "deployment", "version"], buckets=_LATENCY_BUCKETS, **kwargs)
        self.pin_ignored = Counter("raygate_pin_ignored", "X-Raygate-Version headers ignored because the "
                                   "deployment does not allow pinning", ["app", "deployment"], **kwargs)
        self.in_flight_source = None  # callable -> {app: requests in flight}, sampled at each flush
        self.platform: CollectorRegistry | None = None  # rendered after the node's (gateway/platform_metrics.py)
        self._request_children: dict = {}
        self._pending_requests: dict = {}
        self._pending_latency: dict = {}
        self._latency_children: dict = {}
        self._in_flight_children: dict = {}

    def observe(self, app: str, deployment: str, version: str, code: int, seconds: float) -> None:
        """Count one answered request. Kept in plain dicts and applied by `flush` (a few times a second and
        before every scrape), so the hot path never takes the multiprocess files' lock."""
        key = (app, deployment, version, code)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1
        key = (app, deployment, version)
        histogram = self._pending_latency.get(key)
        if histogram is None:
            histogram = self._pending_latency[key] = [0] * (len(_LATENCY_BUCKETS) + 1) + [0.0]
        histogram[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    def flush(self) -> None:
        if self.in_flight_source is not None:
            for app, count in list(self.in_flight_source().items()):
                self.in_flight_for(app).set(count)
        requests, self._pending_requests = self._pending_requests, {}
        for (app, deployment, version, code), count in requests.items():
            key = (app, deployment, version, code)
            counter = self._request_children.get(key)
            if counter is None:
                counter = self._request_children[key] = self.requests.labels(app, deployment, version, str(code))
            counter.inc(count)
        latency, self._pending_latency = self._pending_latency, {}
        for key, histogram in latency.items():
            child = self._latency_children.get(key)
            if child is None:
                child = self._latency_children[key] = self.latency.labels(*key)
            # prometheus_client keeps per-bucket (non-cumulative) counts and a sum: add ours to them.
            for index, count in enumerate(histogram[:-1]):
                if count:
                    child._buckets[index].inc(count)
            child._sum.inc(histogram[-1])

    def in_flight_for(self, app: str):
        child = self._in_flight_children.get(app)
        if child is None:
            child = self._in_flight_children[app] = self.in_flight.labels(app)
        return child

    def set_replicas(self, counts: dict[tuple[str, str, str, str], int]) -> None:
        for labels, value in counts.items():
            self.replicas.labels(*labels).set(value)

    def render(self) -> bytes:
        """Prometheus text for the whole node (call `flush` first, on the loop that observes)."""
        registry = self._registry
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        platform = self.platform
        return generate_latest(registry) + (generate_latest(platform) if platform is not None else b"")


class ScrapeCache:
    """The /metrics body, rendered at most about once per `max_age_s` and shared by every scrape in between: a
    storm of scrapes costs a render per interval, never one per scrape (a render of the node's files takes
    milliseconds of CPU).

    With `shared_path` (a file in the node's metrics directory) the latest render is shared by every gateway
    process of the node, stamped with the time its render began (the monotonic clock is the node's): a process
    replaces it only with a render that began later (under a file lock), and a scrape serves the newest render
    it can see. So whichever process answers, each scrape shows the files as of a moment no earlier than the
    scrape before it: counters never appear to go backwards between scrapes.
    """

    _STAMP = struct.Struct("<d")

    def __init__(self, metrics: GatewayMetrics, max_age_s: float, clock: Callable[[], float] = time.monotonic,
                 shared_path: str = ""):
        self.metrics = metrics
        self.max_age_s = max_age_s
        self.clock = clock
        self.shared_path = shared_path
        self._newest: tuple[float, bytes] | None = None  # (render began, body)
        self._lock = asyncio.Lock()

    async def body(self) -> bytes:
        newest = self._read_newest()
        if newest is not None and self.clock() - newest[0] < self.max_age_s:
            return newest[1]
        async with self._lock:  # one render at a time per process; scrapes that waited take the newest
            newest = self._read_newest()
            if newest is None or self.clock() - newest[0] >= self.max_age_s:
                began = self.clock()
                self.metrics.flush()  # this process's own samples, on the loop that observes them
                body = await asyncio.get_running_loop().run_in_executor(None, self.metrics.render)
                self._keep(began, body)
                newest = self._read_newest()
            return newest[1]

    def _read_shared(self) -> tuple[float, bytes] | None:
        try:
            with open(self.shared_path, "rb") as shared:
                data = shared.read()
        except OSError:
            return None
        if len(data) < self._STAMP.size:
            return None
        return self._STAMP.unpack_from(data)[0], data[self._STAMP.size:]

    def _read_newest(self) -> tuple[float, bytes] | None:
        """The newest render this process knows of: its own, or the node's shared one."""
        shared = self._read_shared() if self.shared_path else None
        if shared is not None and (self._newest is None or shared[0] > self._newest[0]):
            self._newest = shared
        return self._newest

    def _keep(self, began: float, body: bytes) -> None:
        if self._newest is None or began > self._newest[0]:
            self._newest = (began, body)
        if not self.shared_path:
            return
        with open(self.shared_path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            shared = self._read_shared()
            if shared is not None and shared[0] >= began:
                return  # a render that began later is already shared
            temporary = f"{self.shared_path}.{os.getpid()}"
            with open(temporary, "wb") as out:
                out.write(self._STAMP.pack(began) + body)
            os.replace(temporary, self.shared_path)


class MetricsObserver(RouterObserver):
    """RouterObserver that records routing events as metrics (hooks it does not count stay the base no-ops)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def retried(self, app: str, deployment: str, reason: str) -> None:
        self.metrics.retries.labels(app, deployment, reason).inc()

    def ejected(self, replica_id: str, reason: str) -> None:
        self.metrics.ejections.labels(reason).inc()

    def mirrored(self, app: str, deployment: str, version: str, status: int, seconds: float) -> None:
        self.metrics.mirror_requests.labels(app, deployment, version, str(status)).inc()
        if status:
            self.metrics.mirror_latency.labels(app, deployment, version).observe(seconds)

    def pin_ignored(self, app: str, deployment: str) -> None:
        self.metrics.pin_ignored.labels(app, deployment).inc()

    def fell_back(self, app: str, deployment: str, wanted: str, used: str) -> None:
        self.metrics.fallbacks.labels(app, deployment, wanted, used).inc()


def mark_dead_processes(directory: str) -> None:
    """Drop live-gauge files of gateway processes that no longer exist (counters are kept)."""
    from prometheus_client import multiprocess

    pids = set()
    for name in os.listdir(directory):
        if name.startswith("gauge_live") and name.endswith(".db"):
            try:
                pids.add(int(name.rsplit("_", 1)[1][:-3]))
            except ValueError:
                continue
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass

