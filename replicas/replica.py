"""The replica actor: one user callable per process, served over the direct channel.

Ray owns the replica's lifecycle: the controller creates it, probes `check_health`, asks it to `drain`,
and kills it. Requests arrive over the direct channel (see replicas/channel/frames.py) on the replica's own uvloop
loop, which runs in a thread of its own so that Ray's control calls never wait behind user code.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from dataclasses import dataclass, field

import structlog

from replicas.callable import load_callable
from replicas.channel.server import ChannelLimits, ChannelServerProtocol, ReplicaCore
from replicas.context import ReplicaContext, set_replica_context
from replicas.handle import handle_rows
from replicas.load_report import ProcessCpu, replica_row, report_loop
from replicas.runtime import LoopThread, serving_priority

__all__ = ["ReplicaConfig", "Replica"]


@dataclass(frozen=True)
class ReplicaConfig:
    replica_id: str  # unique id, "<app>.<deployment>.<version>#<n>"
    app: str  # owning app
    deployment: str  # deployment name
    version: str  # version name
    import_path: str  # "module:Class" or "module:function"
    init_args: tuple = ()  # positional arguments for the class
    init_kwargs: dict = field(default_factory=dict)  # keyword arguments for the class
    max_ongoing_requests: int = 32  # requests run at once; more are answered BUSY and go elsewhere
    channel_token: bytes = b""  # shared secret routers prove (HMAC over a nonce) on connect
    max_request_bytes: int = 1 << 20  # largest request body over the channel (the spec's gateway max_body_bytes)
    channel_handshake_timeout_s: float = 2.0  # a channel connection not authenticated by then is closed
    max_channel_connections: int = 256  # open channel connections (gateways and handles) per replica
    bind_host: str | None = None  # address of the direct channel; None: this node's Ray address
    controller_name: str = "raygate-controller"  # named controller actor, for handles
    namespace: str = "raygate"  # Ray namespace
    scaler_name: str = ""  # the cluster's scaler actor: handles' and this replica's load rows go there ("": none)
    report_load: bool = False  # this replica reports its in-flight count and CPU each second (autoscaled version)
    num_cpus: float = 1.0  # CPUs reserved for the replica: its CPU share is measured against them


class Replica:
    """Ray actor class (wrapped with ray.remote by the controller)."""

    def __init__(self, config: ReplicaConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self._loop_thread = LoopThread("raygate-replica-loop")
        self.loop = self._loop_thread.loop
        self.context = ReplicaContext(
            app=config.app, deployment=config.deployment, version=config.version, replica_id=config.replica_id,
            loop=self.loop, controller_name=config.controller_name, namespace=config.namespace,
            scaler_name=config.scaler_name)
        set_replica_context(self.context)
        user = load_callable(config.import_path, tuple(config.init_args), dict(config.init_kwargs))
        self.user = user
        limits = ChannelLimits(max_request_bytes=config.max_request_bytes,
                               handshake_timeout_s=config.channel_handshake_timeout_s,
                               max_connections=config.max_channel_connections)
        self.core = ReplicaCore(self.loop, user, config.max_ongoing_requests, config.channel_token, limits=limits)
        import ray

        self.host = config.bind_host or ray.util.get_node_ip_address()
        self.server = self._on_loop(self.loop.create_server(
            lambda: ChannelServerProtocol(self.core), self.host, 0, backlog=1024))
        self.port = self.server.sockets[0].getsockname()[1]
        self.cpu = ProcessCpu(config.num_cpus)
        self.report_task = None
        if config.scaler_name:
            async def start_reports():
                return asyncio.get_running_loop().create_task(
                    report_loop([self.load_rows], config.scaler_name, config.namespace))

            self.report_task = self._on_loop(start_reports(), 5.0)
        gc.collect()
        gc.freeze()  # the user's model and the libraries are permanent: full collections skip them
        serving_priority()  # booted (imports, model load) at Ray's worker niceness; serve at 0 where permitted

    def _on_loop(self, coro, timeout: float | None = None):
        return self._loop_thread.run(coro, timeout)

    def load_rows(self, second: int) -> list[dict]:
        """This second's load rows (on the replica's loop): its own in-flight and CPU when it is autoscaled, and
        what its deployment handles sent (replicas/load_report.py, the format every reporter uses)."""
        config = self.config
        rows = handle_rows(self.context, second)
        if config.report_load:
            key = (config.app, config.deployment, config.version)
            rows.append(replica_row(key, config.replica_id, second, self.core.in_flight, self.cpu.read()))
        return rows

    # -- control path (Ray calls) -----------------------------------------------------------------
    def ready(self) -> dict:
        import ray

        runtime = ray.get_runtime_context()
        return {"host": self.host, "port": self.port, "pid": os.getpid(),
                "node_id": runtime.get_node_id(), "actor_id": runtime.get_actor_id(),
                "loop": self._loop_thread.loop_type}

    def check_health(self, loop_timeout_s: float = 0.5) -> dict:
        """Healthy when the event loop answers within `loop_timeout_s` and the user's check passes."""

        async def probe():
            return None

        self._on_loop(probe(), loop_timeout_s)
        if self.user.health_check is not None:
            self.user.health_check()
        return self.stats()

    def stats(self) -> dict:
        core = self.core
        return {"in_flight": core.in_flight, "processed": core.processed, "errors": core.errors,
                "rejected": core.rejected, "connections": len(core.connections),
                "refused_connections": core.refused_connections, "draining": core.draining, "pid": os.getpid(),
                "uptime_s": time.time() - self.started_at}

    def rotate_channel_token(self, new: bytes, old_valid_s: float) -> None:
        """Accept hellos proving `new` from now on, and ones proving the current token for `old_valid_s` more."""

        async def rotate():
            self.core.tokens.rotate(new, old_valid_s)

        self._on_loop(rotate(), 5.0)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Stop taking requests and wait for the running ones, then let the user's code release what it holds
        (its `close`, if it has one: an allocator returns its budget lease); True when everything finished."""
        finished = self._on_loop(self.core.drain(timeout_s), timeout_s + 5)
        if self.user.close is not None:
            try:
                self.user.close()
            except Exception as exc:  # the replica stops anyway; say why its resources may linger
                structlog.get_logger("raygate.replica").warning("user_close_failed", error=repr(exc))
        return finished
