"""Following the controller's routing table: a long poll that returns as soon as the table changes.

Every poll names the table version this router runs and a stable `watcher_id`, so each poll is also an
acknowledgement: the controller drains replicas that left the table only once its watchers run a table without them.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import structlog

from replicas.routing.router import Router
from replicas.routing.table import RoutingTable

__all__ = ["follow_routing_table"]

log = structlog.get_logger("raygate.watcher")


async def follow_routing_table(controller, router: Router, *, watcher_id: str,
                               on_update: Callable[[RoutingTable], None] | None = None,
                               poll_timeout_s: float = 10.0, retry_s: float = 0.2) -> None:
    """Apply every new table to `router` until cancelled. Survives controller restarts (retries).

    `watcher_id` is stable for this router (gateway: f"gateway-{node}-{index}/{pid}", its slot then its
    process, so a replacement supersedes it; handle: the replica id).
    """
    while True:
        try:
            table = await controller.watch_table.remote(router.table.version, poll_timeout_s, watcher_id)
            if table is not None and table.version > router.table.version:
                router.update_table(table)
                if on_update is not None:
                    on_update(table)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the controller restarts or is briefly unreachable: keep the last table
            log.warning("routing_table_watch_failed", watcher_id=watcher_id, error=repr(exc))
            await asyncio.sleep(retry_s)
