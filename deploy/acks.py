"""Which routing-table version every router runs, from their long polls (contract 1).

Every `watch_table(known_version, timeout_s, watcher_id)` call is also an acknowledgement: the router runs
`known_version`. Before draining replicas that left the table, the controller waits until every router
that is still around acknowledged the table without them. A router not heard from for `gone_after_s`
(3x the long-poll timeout) counts as gone and is not waited for. A router known to be gone is not waited for
either: a watcher id `SLOT/INSTANCE` (a gateway: its node and index, then its pid) is superseded by the next
instance that polls for the same slot (the spare that took over a killed gateway's index), and the controller
forgets the watcher of a replica it replaced or stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Ack", "AckTracker", "pending_watchers"]


@dataclass(frozen=True)
class Ack:
    version: int  # table version the router runs
    seen_at: float  # when it said so (monotonic seconds)


def pending_watchers(acks: dict[str, Ack], version: int, now: float, gone_after_s: float) -> list[str]:
    """Routers still around that have not acknowledged `version` (or newer)."""
    return sorted(w for w, ack in acks.items() if ack.version < version and now - ack.seen_at <= gone_after_s)


class AckTracker:
    """Records acknowledgements and lets callers wait for a version to be acknowledged by every router."""

    def __init__(self, gone_after_s: float, clock: Callable[[], float]) -> None:
        self.gone_after_s = gone_after_s  # silent this long: gone
        self.clock = clock  # monotonic seconds
        self.acks: dict[str, Ack] = {}
        self.timeouts = 0  # wait_for_acks calls that gave up (the metric of contract 1)
        self._changed = asyncio.Event()

    def record(self, watcher_id: str, version: int) -> None:
        # "" for ids without a slot: a handle's id is its replica id, made of spec names, which never hold "/"
        # (deploy/spec.py's name rule)
        slot = watcher_id.rpartition("/")[0]
        if slot and watcher_id not in self.acks:  # a new instance of the slot: the one it replaced is gone
            for older in [w for w in self.acks if w.startswith(slot + "/")]:
                del self.acks[older]
        self.acks[watcher_id] = Ack(version, self.clock())
        now = self.clock()
        for gone in [w for w, a in self.acks.items() if now - a.seen_at > 10 * self.gone_after_s]:
            del self.acks[gone]  # forget long-gone routers (restarted gateways get new pids)
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def forget(self, watcher_id: str) -> None:
        """A router that is known to be gone (its replica stopped): nothing waits for it any more."""
        if self.acks.pop(watcher_id, None) is not None:
            event, self._changed = self._changed, asyncio.Event()
            event.set()

    def pending(self, version: int) -> list[str]:
        return pending_watchers(self.acks, version, self.clock(), self.gone_after_s)

    async def wait(self, version: int, timeout_s: float) -> bool:
        """True once every router still around runs `version` or newer; False after `timeout_s`."""
        deadline = self.clock() + timeout_s
        while self.pending(version):
            left = deadline - self.clock()
            if left <= 0:
                self.timeouts += 1
                return False
            try:  # woken by the next acknowledgement, or in time to notice a router going silent
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass
        return True

    def snapshot(self) -> dict:
        now = self.clock()
        return {"timeouts": self.timeouts,
                "watchers": {w: {"version": a.version, "seen_s_ago": round(now - a.seen_at, 3)}
                             for w, a in sorted(self.acks.items())}}
