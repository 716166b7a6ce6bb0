"""Platform metrics in the gateway's /metrics: the scaler's decisions and the scenarios' price ages (contract 2).

The controller answers `metrics_snapshot()` -> `{"autoscale": [{"app", "deployment", "version", "desired",
"current", "ready", "decisions": {"up", "down"}}], "allocation": [{"scenario", "app", "prices_version",
"price_age_s", "stale"}]}`. Each gateway process refreshes a copy every `refresh_s` off the request path, and
`PlatformCollector` renders the copy at scrape time (a custom collector: nothing is written to the node's
multiprocess files, and only the process answering a scrape renders it, so nothing is counted twice):

    raygate_autoscale_desired_replicas{app, deployment, version}               gauge
    raygate_autoscale_decisions_total{app, deployment, version, direction}     counter (direction: up | down)
    raygate_allocation_price_age_seconds{app, scenario}                        gauge (scenarios with prices)

The decision counters count from the controller's start (a restarted controller starts again from zero, which
Prometheus reads as a counter reset).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.metrics import GatewayMetrics
from replicas.runtime import stop_task

__all__ = ["PLATFORM_METRIC_NAMES", "PlatformCollector", "platform_metrics_context"]

PLATFORM_METRIC_NAMES = ("raygate_autoscale_desired_replicas", "raygate_autoscale_decisions_total",
                         "raygate_allocation_price_age_seconds")

_VERSION = ["app", "deployment", "version"]

log = structlog.get_logger("raygate.platform_metrics")


class PlatformCollector:
    """A prometheus_client collector over the latest `metrics_snapshot()` (empty until the first refresh)."""

    def __init__(self) -> None:
        self.snapshot: dict = {"autoscale": [], "allocation": []}

    def update(self, snapshot: dict) -> None:
        self.snapshot = snapshot  # swapped whole: a scrape renders one snapshot or the next, never a mix

    def _families(self):
        desired = GaugeMetricFamily("raygate_autoscale_desired_replicas",
                                    "Replicas the scaler wants for an autoscaled version (as the controller applied)",
                                    labels=_VERSION)
        decisions = CounterMetricFamily("raygate_autoscale_decisions",
                                        "Scaling decisions that changed an autoscaled version's target, by direction",
                                        labels=[*_VERSION, "direction"])
        age = GaugeMetricFamily("raygate_allocation_price_age_seconds",
                                "Age of the dual prices a scenario's allocators decide with",
                                labels=["app", "scenario"])
        return desired, decisions, age

    def describe(self):
        return list(self._families())

    def collect(self):
        desired, decisions, age = self._families()
        snapshot = self.snapshot
        for row in snapshot.get("autoscale", ()):
            labels = [row["app"], row["deployment"], row["version"]]
            desired.add_metric(labels, float(row["desired"]))
            for direction in ("up", "down"):
                decisions.add_metric([*labels, direction], float(row.get("decisions", {}).get(direction, 0)))
        for row in snapshot.get("allocation", ()):
            if row.get("price_age_s") is not None:
                age.add_metric([row.get("app") or "", row["scenario"]], float(row["price_age_s"]))
        return [desired, decisions, age]


PLATFORM = web.AppKey("platform_metrics", PlatformCollector)


def platform_metrics_context(controller, metrics: GatewayMetrics, refresh_s: float = 5.0, timeout_s: float = 2.0):
    """Registers a `PlatformCollector` for the gateway's scrapes and refreshes its snapshot from the controller
    every `refresh_s` (a controller that does not answer leaves the last snapshot in place)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        collector = app[PLATFORM] = PlatformCollector()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        metrics.platform = registry

        async def refresh() -> None:
            while True:
                try:
                    collector.update(await asyncio.wait_for(controller.metrics_snapshot.remote(), timeout_s))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the controller restarts: keep the last snapshot, try again
                    log.debug("platform_metrics_refresh_failed", error=repr(exc))
                await asyncio.sleep(refresh_s)

        task = asyncio.get_running_loop().create_task(refresh())
        yield
        await stop_task(task)
        metrics.platform = None

    return context
