"""Mirroring: a share of a deployment's primary traffic is copied to versions with `mirror_percent`; their
answers are counted and dropped and never delay the primary. A copy finds no free replica: it is dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicas.channel.client import ReplicaConnectionLost, ReplicaUnreachable
from replicas.routing.choice import ReplicaSlot, choose_replica
from replicas.routing.views import DeploymentView, VersionView

if TYPE_CHECKING:
    from replicas.routing.router import Router

__all__ = ["mirror", "mirror_wanted", "DROPPED", "FAILED"]

DROPPED = 0  # status reported for a copy that found no free replica
FAILED = 502  # status reported for a copy whose replica failed or timed out


def mirror_wanted(draw: float, mirror_percent: float) -> bool:
    """Copy this request? `draw` is uniform in [0, 1)."""
    return draw * 100 < mirror_percent


def mirror(router: "Router", view: DeploymentView, primary: VersionView, body: bytes, request_id: bytes,
           path: bytes) -> None:
    """Start the copies of one request (background tasks on the router's loop)."""
    route = view.route
    for version in view.mirrors:
        if version is primary or not mirror_wanted(router.rng.random(), version.mirror_percent):
            continue
        slot = choose_replica(version.slots, route.max_ongoing_requests, router.clock(), router.rng)
        if slot is None:
            router.observer.mirrored(route.app, route.name, version.name, DROPPED, 0.0)
            continue
        slot.in_flight += 1
        task = router.loop.create_task(_send_copy(router, view, version, slot, body, request_id, path))
        router.background.add(task)
        task.add_done_callback(router.background.discard)


async def _send_copy(router: "Router", view: DeploymentView, version: VersionView, slot: ReplicaSlot, body: bytes,
                     request_id: bytes, path: bytes) -> None:
    started = router.clock()
    timeout_s = view.route.request_timeout_s
    status = FAILED
    try:
        status, _ = await router.connection(slot).request(request_id + b"-mirror", path, body, int(timeout_s * 1000),
                                                          started + timeout_s)
    except (ReplicaUnreachable, ReplicaConnectionLost, TimeoutError):
        status = FAILED
    finally:
        router.release(version, slot)
        router.observer.mirrored(view.route.app, view.route.name, version.name, status, router.clock() - started)
