"""Per-second load rows for the scaler (the autoscaling window metrics), shared by every reporter.

One row format (`autoscale.window.MetricReport`'s fields, sent as plain dicts so no reporter imports `autoscale/`)
and one sending path (`report_loop`, a task on the reporter's event loop calling the scaler actor's `report(rows)`):
- edges (gateway processes, deployment handles) count answered requests per version with `LoadReporter.observe`
  (plain dict work on the request path) and read the router's in-flight and queued load once a second;
- replicas add one `role: "replica"` row per second with their in-flight count and process CPU (`ProcessCpu`).
Versions an edge knows but that saw no traffic are reported too, with zeros: "idle" is a fact the policy needs.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Callable, Iterable

import structlog

__all__ = ["LoadReporter", "ProcessCpu", "quantile", "replica_row", "report_loop"]

VersionKey = tuple[str, str, str]
RowSource = Callable[[int], list[dict]]  # second -> rows for that second

log = structlog.get_logger("raygate.load_report")


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
    """Accumulates one edge's answered requests per version and second; `rows(second, load)` drains them."""

    max_latencies = 2048  # per version and second: enough for p99, bounded memory under any load

    def __init__(self, reporter: str) -> None:
        self.reporter = reporter  # stable id of this process, e.g. "gateway-0-1234" or "handle@<replica id>"
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

    def held_rows(self, second: int, load: dict[VersionKey, tuple[float, float]],
                  keys: Iterable[VersionKey]) -> list[dict]:
        """Rows sent at once when requests start being held for a version at zero replicas: its queue as in-flight
        and queued, under a reporter id of their own (`<reporter>:held`) so they replace none of the regular rows
        and drain nothing the regular rows count."""
        return [{"app": key[0], "deployment": key[1], "version": key[2], "reporter": f"{self.reporter}:held",
                 "role": "edge", "second": second, "in_flight": float(sum(load[key])), "queued": float(load[key][1])}
                for key in sorted(keys) if key in load]


class ProcessCpu:
    """This process's CPU use between two reads, as a share of its reserved CPUs (0-1).

    `reserved_cpus` is the replica's `num_cpus` (0 or less counts as one CPU); the share is clamped to 1, as the
    window's `cpu` field is documented (a replica on more than its reservation reads 1: "at least saturated").
    """

    def __init__(self, reserved_cpus: float, cpu_clock: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reserved = reserved_cpus if reserved_cpus > 0 else 1.0
        self.cpu_clock, self.clock = cpu_clock, clock
        self._last = (clock(), cpu_clock())

    def read(self) -> float | None:
        """CPU share since the previous read; None when no time passed."""
        now, cpu = self.clock(), self.cpu_clock()
        (then, cpu_then), self._last = self._last, (now, cpu)
        if now - then <= 0:
            return None
        return max(0.0, min(1.0, (cpu - cpu_then) / (now - then) / self.reserved))


def replica_row(key: VersionKey, reporter: str, second: int, in_flight: float, cpu: float | None) -> dict:
    """A replica's row for `second`: its in-flight requests (running and queued inside it) and CPU share."""
    return {"app": key[0], "deployment": key[1], "version": key[2], "reporter": reporter, "role": "replica",
            "second": second, "in_flight": float(in_flight), "cpu": cpu}


async def report_loop(sources: Iterable[RowSource], scaler_name: str, namespace: str, period_s: float = 1.0,
                      wall_clock: Callable[[], float] = time.time, wake: asyncio.Event | None = None,
                      wake_rows: RowSource | None = None,
                      find_scaler: Callable[[str, str], object] | None = None) -> None:
    """Every `period_s`, the rows of every source for the last whole second to the named scaler actor's
    `report(rows)`; when `wake` is set (requests held for a version at zero replicas), `wake_rows` at once (rows
    of their own reporter id, so they replace none of the regular rows). Runs until cancelled; a scaler that is
    down or restarting is looked up again next round (rows for that second are lost, never retried)."""
    sources = list(sources)
    scaler = None
    next_round = asyncio.get_running_loop().time() + period_s
    while True:
        woken = False
        if wake is None:
            await asyncio.sleep(period_s)
        else:
            try:
                remaining = next_round - asyncio.get_running_loop().time()
                await asyncio.wait_for(wake.wait(), max(0.0, remaining))
                woken = wake_rows is not None
            except asyncio.TimeoutError:
                pass
            wake.clear()
            if not woken:
                next_round = asyncio.get_running_loop().time() + period_s
        try:
            second = int(wall_clock()) - 1
            rows = wake_rows(second) if woken else [row for source in sources for row in source(second)]
            if not rows:
                continue
            if scaler is None:
                scaler = (find_scaler or _find_scaler)(scaler_name, namespace)
            await asyncio.wait_for(scaler.report.remote(rows), 2.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the scaler restarts or is not up yet: next round, look again
            scaler = None
            log.debug("load_report_failed", error=repr(exc))


def _find_scaler(name: str, namespace: str):
    import ray

    return ray.get_actor(name, namespace=namespace)
