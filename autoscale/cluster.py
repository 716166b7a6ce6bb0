"""The cluster layer: replicas wanted plus a spare buffer, as one `ray.autoscaler.sdk.request_resources` request.

Ray's request is absolute, not additive ("scale so that these bundles fit, counting what already runs"), and each
call replaces the last. So the request lists one bundle per replica wanted by the autoscaled targets (running,
starting and not yet placed alike) plus the buffer: spare bundles of configured shapes, so a new small service or
the next scale-up finds room at once while KubeRay adds nodes. `resource_bundles` is pure; `ClusterResourceRequester`
applies it, only when the request changed (and every `refresh_s`, as the request is a hint that a restarted
autoscaler forgets).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import structlog

__all__ = ["ReplicaDemand", "ResourceBuffer", "resource_bundles", "ClusterResourceRequester"]

log = structlog.get_logger("raygate.autoscale.cluster")

_RESOURCE_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


@dataclass(frozen=True)
class ReplicaDemand:
    """Replicas of one shape: `count` replicas each needing `resources` (spec names or Ray names)."""

    resources: Mapping[str, float]  # e.g. {"num_cpus": 0.5, "num_gpus": 1} or {"CPU": 0.5}
    count: int  # replicas of this shape wanted (running + starting + pending)


@dataclass(frozen=True)
class ResourceBuffer:
    """Spare capacity kept requested beyond the replicas wanted."""

    bundles: tuple[Mapping[str, float], ...] = ()  # spare bundles, e.g. ({"CPU": 1},) * 2 for two spare CPUs
    headroom: float = 0.0  # extra fraction of every shape's replicas, rounded up (0.1: 10% more bundles)
    max_bundles: int = 10_000  # a cap on the request's length; the largest shapes are kept first

    def __post_init__(self) -> None:
        if not (math.isfinite(self.headroom) and 0 <= self.headroom <= 10):
            raise ValueError(f"headroom must be within 0..10, got {self.headroom}")
        if not 1 <= self.max_bundles <= 100_000:
            raise ValueError(f"max_bundles must be within 1..100000, got {self.max_bundles}")


def _ray_shape(resources: Mapping[str, float]) -> dict[str, float]:
    shape = {}
    for name, amount in resources.items():
        amount = float(amount)
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"resource {name!r} must be finite and >= 0, got {amount!r}")
        if amount > 0:
            shape[_RESOURCE_NAMES.get(name, name)] = amount
    return shape


def resource_bundles(demands: Iterable[ReplicaDemand], buffer: ResourceBuffer = ResourceBuffer()) -> list[dict]:
    """One bundle per replica wanted (with headroom), then the buffer's bundles; empty shapes are dropped."""
    bundles: list[dict] = []
    for demand in demands:
        if demand.count < 0:
            raise ValueError(f"count must be >= 0, got {demand.count}")
        shape = _ray_shape(demand.resources)
        if shape:
            bundles += [dict(shape) for _ in range(math.ceil(demand.count * (1 + buffer.headroom) - 1e-9))]
    bundles += [shape for shape in (_ray_shape(b) for b in buffer.bundles) if shape]
    if len(bundles) > buffer.max_bundles:
        bundles.sort(key=lambda b: sorted(b.items()), reverse=True)
        bundles = bundles[:buffer.max_bundles]
    return bundles


class ClusterResourceRequester:
    """Sends the bundles to Ray's autoscaler when they change. `request` is injected (tests pass a fake)."""

    def __init__(self, buffer: ResourceBuffer = ResourceBuffer(), request: Callable[..., None] | None = None,
                 clock: Callable[[], float] = time.monotonic, refresh_s: float = 60.0) -> None:
        self.buffer = buffer
        self._request = request
        self.clock = clock
        self.refresh_s = refresh_s
        self._last: tuple[list[dict], float] | None = None

    def apply(self, demands: Iterable[ReplicaDemand]) -> bool:
        """Compute the bundles and send them if they changed; returns whether a request was sent."""
        bundles = resource_bundles(demands, self.buffer)
        now = self.clock()
        canonical = sorted(bundles, key=lambda b: sorted(b.items()))
        if self._last is not None and self._last[0] == canonical and now - self._last[1] < self.refresh_s:
            return False
        request = self._request
        if request is None:
            from ray.autoscaler.sdk import request_resources as request
        try:
            request(bundles=bundles)
        except Exception as exc:  # a hint only: never fatal
            log.warning("autoscale_resource_request_failed", bundles=len(bundles), error=repr(exc))
            return False
        self._last = (canonical, now)
        log.info("autoscale_resource_request", bundles=len(bundles))
        return True
