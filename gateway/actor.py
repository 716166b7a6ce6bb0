"""The gateway actor: an aiohttp server on its own uvloop loop, one per process, many per port.

The server runs on a uvloop loop in a thread of its own (created here, not inherited from Ray), so the
HTTP hot path never shares a loop with Ray's control calls. Ray restarts a gateway that dies; its
constructor binds the port again with SO_REUSEPORT while its siblings keep serving. The constructor stays
lean (one Ray call for the controller's handle, one for the table) so a restarted gateway serves in well
under 2 s.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time

import structlog

from gateway.app_state import ROUTER, STATE
from gateway.config import GatewayConfig
from gateway.eventing_edge import EVENTS, events_context
from gateway.http_app import build_app
from gateway.lifecycle import (
    Listener,
    access_log_context,
    admin_context,
    drain,
    flusher_context,
    router_context,
    watcher_context,
)
from gateway.load_report import load_report_context
from gateway.metrics import GatewayMetrics, MetricsObserver, mark_dead_processes
from gateway.platform_metrics import platform_metrics_context
from replicas.routing.failures import BadRequest
from replicas.routing.table import RoutingTable
from replicas.runtime import LoopThread, configure_logging, serving_priority

__all__ = ["ControllerAdmin", "Gateway"]


async def _call(ref):
    """Await a controller call; its refusals (ValueError, KeyError: a bad spec, an unknown name) become 400s."""
    import ray

    try:
        return await ref
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, (ValueError, KeyError)):
            raise BadRequest(str(cause.args[0] if cause.args else cause)) from None
        raise


class ControllerAdmin:
    """AdminBackend over the controller actor."""

    def __init__(self, controller) -> None:
        self.controller = controller

    async def apply(self, spec_doc: dict, wait: bool) -> dict:
        return await _call(self.controller.apply.remote(spec_doc, wait))

    async def apply_status(self) -> dict:
        return await self.controller.get_apply_status.remote()

    async def status(self) -> dict:
        """The controller's view plus every gateway's traffic per version and recent ejections (an admin
        request, not a scrape: the only place the gateway asks its siblings anything)."""
        status = await self.controller.status.remote()
        gateways = await self.controller.gateways.remote()
        stats = await asyncio.gather(*(g.stats.remote() for g in gateways), return_exceptions=True)
        traffic: dict[tuple, int] = {}
        ejections = []
        for item in stats:
            if isinstance(item, BaseException):
                continue
            for row in item["traffic"]:
                key = (row["app"], row["deployment"], row["version"])
                traffic[key] = traffic.get(key, 0) + row["requests"]
            ejections += [dict(e, gateway_pid=item["pid"]) for e in item["ejections"]]
        status["traffic"] = [{"app": k[0], "deployment": k[1], "version": k[2], "requests": v}
                             for k, v in sorted(traffic.items())]
        status["ejections"] = sorted(ejections, key=lambda e: e["at"])
        return status

    async def set_weights(self, app: str, deployment: str, weights: dict[str, float]) -> dict:
        return await _call(self.controller.set_weights.remote(app, deployment, weights))

    async def scale(self, app: str, deployment: str, version: str, num_replicas: int) -> dict:
        return await _call(self.controller.scale.remote(app, deployment, version, num_replicas))

    async def shutdown(self) -> None:
        await self.controller.shutdown.remote(True)


class Gateway:
    """Ray actor class (created by the controller)."""

    def __init__(self, config: GatewayConfig, index: int = 0) -> None:
        import ray

        began = time.monotonic()
        configure_logging()
        self.config = config
        self.index = index
        if config.metrics_dir:
            os.makedirs(config.metrics_dir, exist_ok=True)
            mark_dead_processes(config.metrics_dir)
        self.metrics = GatewayMetrics(multiprocess_dir=config.metrics_dir)
        self.controller = ray.get_actor(config.controller_name, namespace=config.namespace)
        self._loop_thread = LoopThread("raygate-gateway-loop")
        self.loop = self._loop_thread.loop
        self.app = build_app(config, self.metrics, [
            access_log_context(config.log_dir),
            router_context(self.controller, MetricsObserver(self.metrics)),
            admin_context(ControllerAdmin(self.controller)),
            watcher_context(self.controller, f"gateway-{index}-{os.getpid()}", on_update=self._table_updated),
            flusher_context(config.metrics_flush_s),
            events_context(config.redis_url, config.namespace, f"gateway-{index}"),
            load_report_context(config.scaler_name, config.namespace, f"gateway-{index}-{os.getpid()}", ROUTER),
            platform_metrics_context(self.controller, self.metrics),
        ])
        self.listener = Listener(self.app, config)
        self._on_loop(self.listener.start(), 30)
        # Everything alive now (Ray, aiohttp, the app) lives as long as the process: keep it out of the
        # collector's way, so a full collection never scans it and stalls the loop for tens of ms.
        gc.collect()
        gc.freeze()
        serving_priority()  # booted at Ray's worker niceness; serve at 0 where permitted
        self.constructor_s = round(time.monotonic() - began, 3)
        structlog.get_logger("raygate.gateway").info("gateway_serving", index=index, pid=os.getpid(),
                                                     port=config.port, constructor_s=self.constructor_s)

    def _on_loop(self, coro, timeout: float | None = None):
        return self._loop_thread.run(coro, timeout)

    def _table_updated(self, table: RoutingTable) -> None:
        counts = {(*key, state): n for key, by_state in table.replica_states.items() for state, n in by_state.items()}
        for route in table.deployments.values():
            for version in route.versions:
                counts.setdefault((route.app, route.name, version.name, "RUNNING"), len(version.replicas))
        self.metrics.set_replicas(counts)
        events = self.app.get(EVENTS)
        if events is not None:
            events.update(table.pipelines)

    # -- Ray calls --------------------------------------------------------------------------------
    def ready(self) -> dict:
        return {"pid": os.getpid(), "host": self.config.host, "port": self.config.port, "index": self.index,
                "table_version": self.app[ROUTER].table.version, "constructor_s": self.constructor_s}

    def loop_type(self) -> str:
        """The class of the loop that runs the HTTP handlers."""
        return self._loop_thread.loop_type

    def stats(self) -> dict:
        """This process as `raygate status` shows it (contract 7)."""
        state = self.app[STATE]
        router = self.app[ROUTER]
        return {"pid": os.getpid(), "index": self.index, "state": state.state, "served": state.served,
                "in_flight": state.in_flight, "table_version": router.table.version,
                "traffic": state.traffic_rows(), "ejections": list(router.ejections)}

    def stop(self, drain_s: float | None = None) -> bool:
        """Drain: not ready at once, wait for in-flight requests (and a minimum time), then release every
        resource in reverse. Returns whether every in-flight request finished."""
        minimum = self.config.drain_s if drain_s is None else drain_s
        return self._on_loop(drain(self.listener, minimum, self.config.drain_timeout_s, time.monotonic),
                             self.config.drain_timeout_s + minimum + 30)
