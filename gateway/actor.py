"""The gateway actor: an aiohttp server on its own uvloop loop, one per process, many per port.

The server runs on a uvloop loop in a thread of its own (created here, not inherited from Ray), so the
HTTP hot path never shares a loop with Ray's control calls. Ray restarts a gateway that dies; its
constructor binds the port again with SO_REUSEPORT while its siblings keep serving.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time

from aiohttp import web

from gateway.access_log import open_access_log
from gateway.config import GatewayConfig
from gateway.http_app import build_app
from gateway.metrics import GatewayMetrics, MetricsObserver, mark_dead_processes
from replicas.routing.failures import BadRequest
from replicas.routing.router import Router
from replicas.routing.table import RoutingTable
from replicas.routing.watcher import follow_routing_table
from replicas.runtime import LoopThread, configure_logging, serving_priority

__all__ = ["Gateway", "ControllerAdmin"]


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
        """The controller's view plus every gateway's traffic per version and recent ejections."""
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
        configure_logging()
        self.config = config
        self.index = index
        self.started_at = time.time()
        if config.metrics_dir:
            os.makedirs(config.metrics_dir, exist_ok=True)
            mark_dead_processes(config.metrics_dir)
        self._loop_thread = LoopThread("raygate-gateway-loop")
        self.loop = self._loop_thread.loop
        self._on_loop(self._start(), 30)

    def _on_loop(self, coro, timeout: float | None = None):
        return self._loop_thread.run(coro, timeout)

    async def _start(self) -> None:
        import ray

        config = self.config
        controller = ray.get_actor(config.controller_name, namespace=config.namespace)
        self.metrics = GatewayMetrics()
        self.router = Router(asyncio.get_running_loop(), observer=MetricsObserver(self.metrics))
        path = None
        if config.log_dir:
            os.makedirs(config.log_dir, exist_ok=True)
            path = os.path.join(config.log_dir, f"access-{os.getpid()}.jsonl")
        self.access_log, self._access_stream = open_access_log(path) if config.access_log else (None, None)
        self.controller = controller
        self.app = build_app(config, self.router, self.metrics, ControllerAdmin(controller), self.access_log,
                             before_scrape=self._flush_siblings)
        # A restarted gateway must know the routes before it takes connections (no 404 storm on restart).
        self.router.update_table(await controller.current_table.remote())
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, config.host, config.port, reuse_port=True, backlog=4096)
        await site.start()
        self.watch = asyncio.get_running_loop().create_task(
            follow_routing_table(controller, self.router, watcher_id=f"gateway-{self.index}-{os.getpid()}",
                                 on_update=self._table_updated))
        self.flusher = asyncio.get_running_loop().create_task(self._flush_access_log())
        # Everything alive now (Ray, aiohttp, the app) lives as long as the process: keep it out of the
        # collector's way, so a full collection never scans it and stalls the loop for tens of ms.
        gc.collect()
        gc.freeze()
        serving_priority()  # booted at Ray's worker niceness; serve at 0 where permitted

    async def _flush_siblings(self) -> None:
        """Have every gateway apply its buffered metrics, so this scrape sees the whole node's traffic."""
        try:
            gateways = await asyncio.wait_for(self.controller.gateways.remote(), 1.0)
            await asyncio.wait_for(asyncio.gather(*(g.flush_metrics.remote() for g in gateways),
                                                  return_exceptions=True), 1.0)
        except Exception:  # a sibling that is restarting: its samples show on the next scrape
            pass

    async def _flush_access_log(self) -> None:
        """Apply buffered metrics and write buffered access lines, four times a second."""
        while True:
            await asyncio.sleep(0.25)
            self.metrics.flush()
            if self._access_stream is not None:
                try:
                    self._access_stream.flush()
                except (OSError, ValueError):
                    pass

    def _table_updated(self, table: RoutingTable) -> None:
        counts = {(*key, state): n for key, by_state in table.replica_states.items() for state, n in by_state.items()}
        for route in table.deployments.values():
            for version in route.versions:
                counts.setdefault((route.app, route.name, version.name, "RUNNING"), len(version.replicas))
        self.metrics.set_replicas(counts)

    # -- Ray calls --------------------------------------------------------------------------------
    def ready(self) -> dict:
        return {"pid": os.getpid(), "host": self.config.host, "port": self.config.port, "index": self.index,
                "table_version": self.router.table.version}

    def flush_metrics(self) -> None:
        """Apply this process's buffered metrics to the node's shared metric files."""

        async def flush():
            self.metrics.flush()

        self._on_loop(flush(), 5)

    def loop_type(self) -> str:
        """The class of the loop that runs the HTTP handlers (asked from inside that loop)."""

        async def current():
            loop = asyncio.get_running_loop()
            return type(loop).__module__ + "." + type(loop).__name__

        return self._on_loop(current(), 5)

    def stats(self) -> dict:
        from gateway.http_app import STATE

        state = self.app[STATE]
        return {"pid": os.getpid(), "in_flight": state.in_flight, "served": state.served,
                "table_version": self.router.table.version, "ejections": list(self.router.ejections),
                "traffic": [{"app": k[0], "deployment": k[1], "version": k[2], "requests": v}
                            for k, v in list(state.traffic.items())]}

    def stop(self, drain_s: float | None = None) -> bool:
        """Drain: not ready at once, wait for in-flight requests (and a minimum time), then close."""
        from gateway.http_app import STATE

        state = self.app[STATE]
        minimum = self.config.drain_s if drain_s is None else drain_s

        async def drain() -> bool:
            state.draining = True
            started = time.monotonic()
            try:
                await asyncio.wait_for(state.idle.wait(), 30)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(max(0.0, minimum - (time.monotonic() - started)))
            for task in (self.watch, self.flusher):
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            self.metrics.flush()
            if self._access_stream is not None:
                self._access_stream.flush()
            await self.runner.cleanup()
            self.router.close()
            return True

        return self._on_loop(drain(), 60)
