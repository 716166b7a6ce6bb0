"""The process runtime shared by every serving process (gateways, replicas, the controller).

- `LoopThread`: a uvloop loop in a thread of its own, created by us rather than inherited from Ray, so the
  request path never shares a loop with Ray's control calls and its type never depends on a worker hook.
- `serving_priority`: Ray starts workers at niceness 15 (`RAY_worker_niceness`); a process that has booted
  (imports, model load) raises every thread back to 0 where it may (root or CAP_SYS_NICE), so a replica being
  started never takes CPU from the ones serving, and the ones serving are never starved by it.
- `configure_logging`: structlog JSON lines, configured once per process, with contextvars merged in.
- `stop_task`: cancel a background task and wait until it has ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Any, Coroutine

import orjson
import structlog
import uvloop

__all__ = ["LoopThread", "serving_priority", "can_raise_priority", "configure_logging", "stop_task"]


class LoopThread:
    """A uvloop event loop running forever in a daemon thread; `run` hops a coroutine onto it and waits."""

    def __init__(self, name: str) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run `coro` on the loop from another thread and return its result (raises what it raised)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def loop_type(self) -> str:
        return type(self.loop).__module__ + "." + type(self.loop).__name__


def can_raise_priority() -> bool:
    """Whether this process (and the workers it starts) may lower a niceness again (root or CAP_SYS_NICE)."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 23))  # CAP_SYS_NICE
    except OSError:
        pass
    return False


def serving_priority() -> None:
    """Niceness 0 for every thread of the process (Linux keeps a niceness per thread; threads started later
    inherit their creator's), if permitted; otherwise it stays as Ray started it."""
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
        except OSError:
            pass  # not permitted, or the thread ended


_configured = False


def configure_logging(level: int = logging.INFO, stream=None) -> None:
    """JSON lines on `stream` (stdout by default), with contextvars (request_id, app, ...) merged in. Once."""
    global _configured
    if _configured:
        return
    _configured = True
    out = stream or sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory(file=getattr(out, "buffer", out)),
        cache_logger_on_first_use=True,
    )


async def stop_task(task: asyncio.Task) -> None:
    """Cancel `task` and wait until it has ended (its CancelledError is the expected end, not an error)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
