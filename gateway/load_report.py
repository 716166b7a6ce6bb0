"""Per-second load reports from a gateway process to the scaler (the autoscaling window metrics).

The rows and the sending loop are `replicas/load_report.py`'s (one format for gateways, handles and replicas);
here they are wired into the gateway's app: the request path adds answered requests to a `LoadReporter`
(`observe`, dict work), and once a second the loop sends the last second's rows with the router's in-flight and
queued load, for every version the router knows. A request held for a version at zero replicas
(replicas/routing/hold.py) wakes the loop at once: the held demand goes to the scaler without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Callable

from aiohttp import web

from replicas.load_report import LoadReporter, quantile, report_loop
from replicas.runtime import stop_task

__all__ = ["LOAD_REPORTER", "LoadReporter", "load_report_context", "quantile"]

VersionKey = tuple[str, str, str]

LOAD_REPORTER = web.AppKey("load_reporter", LoadReporter)


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
        wake, woken = asyncio.Event(), set()

        def on_hold(key: VersionKey) -> None:
            woken.add(key)
            wake.set()

        def rows(second: int) -> list[dict]:
            known = [(r.app, r.name, v.name) for r in router.table.deployments.values() for v in r.versions]
            return reporter.rows(second, router.load_by_version(), known)

        def wake_rows(second: int) -> list[dict]:
            keys = set(woken)
            woken.clear()
            return reporter.held_rows(second, router.load_by_version(), keys)

        router.holds.on_hold = on_hold
        task = asyncio.get_running_loop().create_task(
            report_loop([rows], scaler_name, namespace, period_s, wall_clock, wake, wake_rows))
        yield
        await stop_task(task)

    return context
