"""Per-second load reports from a gateway process to the scaler (the autoscaling window metrics).

The request path only adds to plain dicts (`observe`, as the Prometheus buffer does); once a second the gateway's
loop turns the last whole second into one row per version (`autoscale.window.MetricReport`'s fields, sent as plain
dicts so the gateway needs nothing from `autoscale/`) and hands them to a sender (the scaler actor's `report`).
Versions the router knows but that saw no traffic are reported too, with zeros: "idle" is a fact the policy needs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Callable, Iterable

import structlog
from aiohttp import web

__all__ = ["LOAD_REPORTER", "LoadReporter", "load_report_context", "quantile"]

VersionKey = tuple[str, str, str]


def quantile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile of already sorted values (nearest rank); None for no values."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


class _Second:
    __slots__ = ("completions", "errors", "latencies")

    def __init__(self) -> None:
        self.completions = 0
        self.errors = 0
        self.latencies: list[float] = []


class LoadReporter:
    """Accumulates one gateway's answered requests per version and second; `rows(second, load)` drains them."""

    max_latencies = 2048  # per version and second: enough for p99, bounded memory under any load

    def __init__(self, reporter: str) -> None:
        self.reporter = reporter  # stable id of this process, e.g. "gateway-0-1234"
        self._current: dict[VersionKey, _Second] = {}

    def observe(self, app: str, deployment: str, version: str, status: int, seconds: float) -> None:
        """One answered request (any status). Called on the request path: dict work only."""
        key = (app, deployment, version)
        entry = self._current.get(key)
        if entry is None:
            entry = self._current[key] = _Second()
        entry.completions += 1
        if status >= 500:
            entry.errors += 1
        if len(entry.latencies) < self.max_latencies:
            entry.latencies.append(seconds)

    def rows(self, second: int, load: dict[VersionKey, tuple[float, float]],
             versions: Iterable[VersionKey] = ()) -> list[dict]:
        """Rows for `second`: what was answered since the last call, plus `load` ((in_flight, queued) per version,
        read from the router now) for every version seen, loaded or known."""
        current, self._current = self._current, {}
        keys = set(current) | set(load) | set(versions)
        out = []
        for key in sorted(keys):
            if "-" in key:
                continue  # requests that matched no version (404s): nothing to scale
            entry = current.get(key) or _Second()
            in_flight, queued = load.get(key, (0.0, 0.0))
            latencies = sorted(entry.latencies)
            out.append({
                "app": key[0], "deployment": key[1], "version": key[2], "reporter": self.reporter,
                "role": "edge", "second": second,
                "arrivals": entry.completions,  # answered ~ arrived at these latencies (ms)
                "completions": entry.completions, "errors": entry.errors,
                "in_flight": float(in_flight + queued), "queued": float(queued),
                "latency_p50_s": quantile(latencies, 0.5), "latency_p90_s": quantile(latencies, 0.9),
                "latency_p99_s": quantile(latencies, 0.99),
            })
        return out


LOAD_REPORTER = web.AppKey("load_reporter", LoadReporter)

log = structlog.get_logger("raygate.load_report")


def load_report_context(scaler_name: str, namespace: str, reporter_id: str, router_key: web.AppKey,
                        period_s: float = 1.0, wall_clock: Callable[[], float] = time.time):
    """Once a second, the last second's rows to the named scaler actor (`report(rows)`), sent without waiting
    on the request path; no scaler configured (empty name): nothing is counted or sent."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if not scaler_name:
            yield
            return
        reporter = app[LOAD_REPORTER] = LoadReporter(reporter_id)
        router = app[router_key]
        scaler = None

        async def every_second() -> None:
            nonlocal scaler
            while True:
                await asyncio.sleep(period_s)
                try:
                    known = [(r.app, r.name, v.name) for r in router.table.deployments.values() for v in r.versions]
                    rows = reporter.rows(int(wall_clock()) - 1, router.load_by_version(), known)
                    if scaler is None:
                        import ray

                        scaler = ray.get_actor(scaler_name, namespace=namespace)
                    await asyncio.wait_for(scaler.report.remote(rows), 2.0)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the scaler restarts or is not up yet: next second, look again
                    scaler = None
                    log.debug("load_report_failed", error=repr(exc))

        task = asyncio.get_running_loop().create_task(every_second())
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    return context
