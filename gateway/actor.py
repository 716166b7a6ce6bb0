"""The gateway actor: an aiohttp server on its own uvloop loop, one per process, many per port.

The server runs on a uvloop loop in a thread of its own (created here, not inherited from Ray), so the
HTTP hot path never shares a loop with Ray's control calls.

Every gateway process starts as a warm spare: its process is up, every import done, logging, metrics and the
loop thread ready, and it does not listen. The controller's fleet (deploy/gateways.py) promotes spares with
`promote(index)`: the app is built and bound to the node's port with SO_REUSEPORT beside its siblings in tens
of milliseconds. A process that dies is restarted by Ray and comes back as a spare.

A serving process's death is seen at once by the node's armed spare: the fleet hands it its serving siblings
(`guard`), it holds a pidfd per sibling on its loop, and when one becomes readable (that process exited) it
promotes itself into the dead one's index: no polling and no Ray round trip (Ray tells the fleet about the death
about a second later). The fleet then arms the restarted process, the node's next spare.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
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


SPARE = "spare"  # the state a spare reports (a serving process reports its app's state: serving, draining...)


class Gateway:
    """Ray actor class (created by the controller's fleet, deploy/gateways.py): a warm spare until promoted."""

    def __init__(self, config: GatewayConfig) -> None:
        import ray

        began = time.monotonic()
        configure_logging()
        self.config = config
        self.index = -1  # serving index on its node once promoted (-1: spare)
        self.app = self.listener = None
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        self.cores = _cores()
        if config.metrics_dir:
            os.makedirs(config.metrics_dir, exist_ok=True)
        self.metrics = GatewayMetrics(multiprocess_dir=config.metrics_dir)
        self.controller = ray.get_actor(config.controller_name, namespace=config.namespace)
        self._loop_thread = LoopThread("raygate-gateway-loop")
        self.loop = self._loop_thread.loop
        self._promote_lock = threading.Lock()
        self._changed = threading.Condition()  # notified when the state changes (watch answers then)
        self._stopped = threading.Event()
        self._guards: dict[int, int] = {}  # pidfd of a serving sibling -> its index (loop thread only)
        self.constructor_s = round(time.monotonic() - began, 3)
        self.promote_s = 0.0
        self.serving_since = 0.0  # wall-clock time it began listening (0: spare)
        # Everything alive now lives as long as the process: keep it out of the collector's way, so a full
        # collection never scans it and stalls the loop for tens of ms.
        gc.collect()
        gc.freeze()
        # A spare takes over from its loop thread the moment a sibling dies, often under load: at Ray's worker
        # niceness that wake-up would wait behind everything else. Idle, priority costs nothing.
        serving_priority()
        structlog.get_logger("raygate.gateway").info("gateway_spare_ready", pid=os.getpid(), node_ip=self.node_ip,
                                                     constructor_s=self.constructor_s)

    def promote(self, index: int) -> dict:
        """Serve as gateway `index` of this node: build the app, take the table, bind the shared port.
        Promoting a process that already serves that index answers as `ready` does."""
        with self._promote_lock:
            if self.app is not None:
                if self.index != index:
                    raise ValueError(f"gateway pid {os.getpid()} already serves as index {self.index}")
                return self.ready()
            began = time.monotonic()
            serving_priority()  # booted at Ray's worker niceness; serve (and set up) at 0 where permitted
            if self.config.metrics_dir:
                mark_dead_processes(self.config.metrics_dir)  # a sibling that just died leaves its gauges
            self.index = index
            self.app = self._build(index)
            self.listener = Listener(self.app, self.config)
            self._on_loop(self.listener.start(), 30)
            gc.freeze()
            self.promote_s = round(time.monotonic() - began, 3)
            self.serving_since = time.time()
        with self._changed:
            self._changed.notify_all()
        structlog.get_logger("raygate.gateway").info("gateway_serving", index=index, pid=os.getpid(),
                                                     port=self.config.port, promote_s=self.promote_s,
                                                     constructor_s=self.constructor_s)
        return self.ready()

    def guard(self, siblings: dict[int, int]) -> None:
        """(A spare) take over a serving sibling's index the moment its process exits. `siblings`: {pid: index}
        of the node's serving processes, replacing what it guarded before ({} disarms)."""
        async def on_loop() -> None:  # nested: an `async def` method would make Ray run this actor on asyncio
            self._arm_guards(siblings)

        self._on_loop(on_loop(), 10)

    def _arm_guards(self, siblings: dict[int, int]) -> None:
        """(Loop thread) a pidfd reader per sibling, replacing the ones before."""
        self._disarm()
        if self.app is not None or self._stopped.is_set():
            return
        for pid, index in siblings.items():
            try:
                fd = os.pidfd_open(int(pid))
            except (OSError, AttributeError):  # gone already, or no pidfd (not Linux): the fleet fills its
                continue  # index when Ray reports the death (about a second)
            self._guards[fd] = int(index)
            self.loop.add_reader(fd, self._sibling_exited, fd)

    def _disarm(self) -> None:
        for fd in self._guards:
            self.loop.remove_reader(fd)
            os.close(fd)
        self._guards = {}

    def _sibling_exited(self, fd: int) -> None:
        index = self._guards.get(fd)
        self._disarm()  # one take-over per spare
        if index is None or self.app is not None or self._stopped.is_set():
            return
        structlog.get_logger("raygate.gateway").warning("gateway_sibling_exited", index=index, pid=os.getpid())
        threading.Thread(target=self._take_over, args=(index,), name="raygate-take-over", daemon=True).start()

    def _take_over(self, index: int) -> None:
        try:
            self.promote(index)
        except Exception as exc:  # noqa: BLE001 - the fleet promoted it meanwhile, or the bind failed
            structlog.get_logger("raygate.gateway").warning("gateway_take_over_failed", index=index,
                                                            error=repr(exc))

    def _build(self, index: int):
        config, tag = self.config, f"gateway-{self.node_id[:8]}-{index}"  # stable per (node, index)
        return build_app(config, self.metrics, [
            access_log_context(config.log_dir),
            router_context(self.controller, MetricsObserver(self.metrics)),
            admin_context(ControllerAdmin(self.controller)),
            watcher_context(self.controller, f"{tag}/{os.getpid()}", on_update=self._table_updated),
            flusher_context(config.metrics_flush_s),
            events_context(config.redis_url, config.namespace, tag),  # the replacement takes over its entries
            load_report_context(config.scaler_name, config.namespace, f"{tag}-{os.getpid()}", ROUTER),
            platform_metrics_context(self.controller, self.metrics),
        ])

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
    def _identity(self) -> dict:
        return {"pid": os.getpid(), "index": self.index, "node_id": self.node_id, "node_ip": self.node_ip}

    def ready(self) -> dict:
        table_version = self.app[ROUTER].table.version if self.app is not None else 0
        return self._identity() | {
            "host": self.config.host, "port": self.config.port, "table_version": table_version,
            "constructor_s": self.constructor_s, "promote_s": self.promote_s, "serving_since": self.serving_since,
            "state": self._state(), "cores": self.cores}

    def _state(self) -> str:
        return SPARE if self.app is None else self.app[STATE].state

    def watch(self, known_pid: int, known_state: str, timeout_s: float) -> dict:
        """Long poll for the fleet: answers (`ready`) as soon as this process is not `known_pid` (a restarted
        one) or its state is not `known_state` (a spare that took over), else after `timeout_s`. The caller
        sees this process die as a failed call."""
        with self._changed:
            self._changed.wait_for(lambda: (known_pid, known_state) != (os.getpid(), self._state()), timeout_s)
        return self.ready()

    def loop_type(self) -> str:
        """The class of the loop that runs the HTTP handlers."""
        return self._loop_thread.loop_type

    def stats(self) -> dict:
        """This process as `raygate status` shows it (contract 7); a spare serves nothing yet."""
        if self.app is None:
            return self._identity() | {"state": SPARE, "served": 0, "in_flight": 0, "table_version": 0,
                                       "traffic": [], "ejections": [], "serving_since": 0.0}
        state = self.app[STATE]
        router = self.app[ROUTER]
        return self._identity() | {
            "state": state.state, "served": state.served, "in_flight": state.in_flight,
            "table_version": router.table.version, "traffic": state.traffic_rows(),
            "ejections": list(router.ejections), "serving_since": self.serving_since}

    def stop(self, drain_s: float | None = None) -> bool:
        """Drain: not ready at once, wait for in-flight requests (and a minimum time), then release every
        resource in reverse. Returns whether every in-flight request finished (a spare: nothing to drain)."""
        self._stopped.set()
        if self.listener is None:
            self.guard({})
            return True
        minimum = self.config.drain_s if drain_s is None else drain_s
        return self._on_loop(drain(self.listener, minimum, self.config.drain_timeout_s, time.monotonic),
                             self.config.drain_timeout_s + minimum + 30)


def _cores() -> int:
    """Cores this process may run on (the node's, unless the process is pinned to fewer)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
