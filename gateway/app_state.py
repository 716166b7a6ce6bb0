"""What a gateway's aiohttp app holds, reached only through these `web.AppKey`s.

`CONFIG`, `METRICS` and `STATE` are set when the app is built; `ROUTER`, `ADMIN` and `ACCESS_LOG` are set by the
app's cleanup contexts (gateway/lifecycle.py) when it starts, so unit tests hand in fakes the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from replicas.routing.router import Router

__all__ = [
    "ACCESS_LOG",
    "ACCESS_STREAM",
    "ADMIN",
    "CONFIG",
    "DRAINING",
    "METRICS",
    "ROUTER",
    "SERVING",
    "STARTING",
    "STATE",
    "STOPPED",
    "AdminBackend",
    "GatewayState",
]

STARTING, SERVING, DRAINING, STOPPED = "starting", "serving", "draining", "stopped"


class AdminBackend(Protocol):
    """What the admin API asks of the control plane (the controller actor, or a fake in unit tests)."""

    async def apply(self, spec_doc: dict, wait: bool) -> dict: ...
    async def apply_status(self) -> dict: ...
    async def status(self) -> dict: ...
    async def set_weights(self, app: str, deployment: str, weights: dict[str, float]) -> dict: ...
    async def scale(self, app: str, deployment: str, version: str, num_replicas: int) -> dict: ...
    async def shutdown(self) -> None: ...


@dataclass
class GatewayState:
    """Counters and the lifecycle state of one gateway process (read by /-/ready, stats and status)."""

    state: str = STARTING  # STARTING -> SERVING -> DRAINING -> STOPPED; /-/ready is 200 only while SERVING
    in_flight: int = 0  # requests being answered by this process
    in_flight_by_app: dict = field(default_factory=dict)  # app -> requests being answered
    served: int = 0  # requests answered by this process
    traffic: dict = field(default_factory=dict)  # (app, deployment, version) -> requests answered
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while nothing is in flight

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def draining(self) -> bool:
        return self.state in (DRAINING, STOPPED)

    def traffic_rows(self) -> list[dict]:
        return [{"app": k[0], "deployment": k[1], "version": k[2], "requests": v}
                for k, v in list(self.traffic.items())]


CONFIG = web.AppKey("config", GatewayConfig)
METRICS = web.AppKey("metrics", GatewayMetrics)
STATE = web.AppKey("state", GatewayState)
ROUTER = web.AppKey("router", Router)
ADMIN = web.AppKey("admin", Any)  # AdminBackend, or None where the admin API is off
ACCESS_LOG = web.AppKey("access_log", Any)  # gateway.access_log.AccessLog, or None
ACCESS_STREAM = web.AppKey("access_stream", Any)  # the buffered stream ACCESS_LOG writes to, or None
