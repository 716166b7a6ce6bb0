"""Deployment handles: how one deployment's code calls another (ensembles, pipelines).

A handle routes through the same Router as the gateway: the same version split, replica choice, queueing,
deadline, retries on a live replica (idempotent deployments), ejection and fallback. The router follows the
controller's table as a watcher named by the replica id (see replicas/routing/watcher.py).
"""

from __future__ import annotations

import asyncio
import os

import orjson

from replicas.context import ReplicaContext, get_replica_context
from replicas.load_report import LoadReporter
from replicas.routing.failures import RaygateError

__all__ = ["DeploymentHandle", "DeploymentCallError", "get_handle", "handle_rows"]


class DeploymentCallError(RuntimeError):
    """The called deployment answered with an error, or could not be reached."""

    def __init__(self, status: int, body: bytes | str) -> None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        super().__init__(f"deployment call failed with status {status}: {text}")
        self.status = status


def _controller(context: ReplicaContext):
    import ray

    return ray.get_actor(context.controller_name, namespace=context.namespace)


def _router_for(context: ReplicaContext, find_controller=_controller):
    """The replica's router, started on first use (on the replica's loop, following the controller's table)."""
    with context._lock:
        if context._router is not None:
            return context._router

        async def start():
            from replicas.routing.router import Router
            from replicas.routing.watcher import follow_routing_table

            router = Router(asyncio.get_running_loop())
            controller = find_controller(context)
            router.update_table(await controller.get_table.remote())
            router.watch_task = asyncio.get_running_loop().create_task(
                follow_routing_table(controller, router, watcher_id=context.replica_id))
            return router

        context._router = asyncio.run_coroutine_threadsafe(start(), context.loop)
        return context._router


class _HandleLoad:
    """What this replica's handles sent, per version and second, for the scaler (the gateway's row format)."""

    __slots__ = ("reporter", "called")

    def __init__(self, replica_id: str) -> None:
        self.reporter = LoadReporter(f"handle@{replica_id}")
        self.called: set[tuple[str, str]] = set()  # (app, deployment) called at least once: reported from then on


def _load_for(context: ReplicaContext) -> _HandleLoad:
    load = context._load
    if load is None:
        load = context._load = _HandleLoad(context.replica_id)
    return load


def handle_rows(context: ReplicaContext, second: int) -> list[dict]:
    """The handles' rows for `second` (edge rows, as a gateway sends): every version of the deployments they
    called, with the router's in-flight and queued load now; none before the first call. On the replica's loop."""
    load, router_future = context._load, context._router
    if load is None or not load.called or router_future is None or not router_future.done():
        return []
    if router_future.exception() is not None:
        return []
    by_version = {key: value for key, value in router_future.result().load_by_version().items()
                  if key[:2] in load.called}
    return load.reporter.rows(second, by_version)


class DeploymentHandle:
    """Calls one deployment of the current app (or another app) with JSON-serialisable payloads."""

    def __init__(self, deployment: str, app: str | None = None, context: ReplicaContext | None = None,
                 find_controller=_controller) -> None:
        self.context = context or get_replica_context()
        self.deployment = deployment
        self.app = app or self.context.app
        self._router_future = _router_for(self.context, find_controller)

    async def _router(self):
        return await asyncio.wrap_future(self._router_future)

    async def call(self, payload, *, version: str | None = None, split_key: str | None = None,
                   method: str = "POST"):
        """Await the deployment's answer to `payload` (run on the replica's loop, from async user code)."""
        router = await self._router()
        request_id = os.urandom(8).hex().encode()
        load = _load_for(self.context) if self.context.scaler_name else None
        if load is not None:
            load.called.add((self.app, self.deployment))
        started = router.clock()
        try:
            result = await router.call(self.app, self.deployment, orjson.dumps(payload), request_id,
                                       method=method, pinned=version, split_key=split_key)
        except RaygateError as exc:
            if load is not None:
                load.reporter.observe(self.app, self.deployment, version or "-", exc.status,
                                      router.clock() - started)
            raise DeploymentCallError(exc.status, exc.message) from None
        if load is not None:
            load.reporter.observe(self.app, self.deployment, result.version, result.status,
                                  router.clock() - started)
        if not 200 <= result.status <= 299:  # a Reply may choose another success status
            raise DeploymentCallError(result.status, result.body)
        return orjson.loads(result.body)

    def call_sync(self, payload, **kwargs):
        """Blocking call, for sync user code (which runs on worker threads, never on the loop)."""
        try:
            on_loop = asyncio.get_running_loop() is self.context.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            raise RuntimeError("call_sync would block the replica's event loop: use `await handle.call(...)`")
        return asyncio.run_coroutine_threadsafe(self.call(payload, **kwargs), self.context.loop).result()


def get_handle(deployment: str, app: str | None = None) -> DeploymentHandle:
    """A handle to `deployment` in the current app (or `app`). Call it from deployment code only."""
    return DeploymentHandle(deployment, app)
