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
from replicas.routing.failures import RaygateError

__all__ = ["DeploymentHandle", "DeploymentCallError", "get_handle"]


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
        try:
            result = await router.call(self.app, self.deployment, orjson.dumps(payload), request_id,
                                       method=method, pinned=version, split_key=split_key)
        except RaygateError as exc:
            raise DeploymentCallError(exc.status, exc.message) from None
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
