"""The scaler as a Ray actor over the controller, and the one contract the controller implements for it.

The controller actor provides two methods (plain values only, so they cross Ray as they are):

    autoscaled_versions() -> list[dict]     one row per live version, autoscaled or not:
        {"app": str, "deployment": str, "version": str,
         "autoscaling": dict | None,         # the version's `autoscaling:` block (AutoscalingConfig fields) or None
         "replicas": int,                    # the count the controller is holding the version at now
         "ready": int, "starting": int,      # replicas serving / created and not yet ready
         "startup_samples_s": [float, ...],  # create -> ready durations observed since the last call (may be [])
         "resources": {"num_cpus": float, "num_gpus": float, ...}}   # per replica, as in the spec
    set_autoscale_target(app, deployment, version, target: int, reason: str) -> None   (idempotent)

Gateways, handles and replicas push `MetricReport.to_dict()` rows to `ScalerActor.report(rows)` once a second;
`raygate status` reads `ScalerActor.last_decisions()`. After each tick the actor also asks Ray's autoscaler for
room for every replica wanted (fixed versions included: Ray's request is absolute) plus the configured buffer.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import structlog

from autoscale.cluster import ClusterResourceRequester, ReplicaDemand, ResourceBuffer
from autoscale.config import parse_autoscaling
from autoscale.history import ArrivalHistoryStore
from autoscale.scaler import AutoscaledVersion, Scaler, ScalerLoop
from autoscale.window import MetricReport, ReplicaCounts, VersionKey

__all__ = ["ControllerLink", "versions_from_rows", "demands_from_rows", "ScalerActor"]

log = structlog.get_logger("raygate.autoscale")


def versions_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[VersionKey, AutoscaledVersion]:
    """The autoscaled versions among the controller's rows (rows without `autoscaling` are fixed-size)."""
    versions = {}
    for row in rows:
        if not row.get("autoscaling"):
            continue
        key = (row["app"], row["deployment"], row["version"])
        config = parse_autoscaling(row["autoscaling"], source=f"{'/'.join(key)}.autoscaling")
        counts = ReplicaCounts(ready=int(row.get("ready", 0)), starting=int(row.get("starting", 0)),
                               startup_samples_s=tuple(float(x) for x in row.get("startup_samples_s", ())))
        versions[key] = AutoscaledVersion(config, counts)
    return versions


def demands_from_rows(rows: Iterable[Mapping[str, Any]], targets: Mapping[VersionKey, int]) -> list[ReplicaDemand]:
    """Replicas wanted per version: the scaler's target where it has one, else the controller's count; never
    fewer than exist (running and starting replicas keep their room until they are gone)."""
    demands = []
    for row in rows:
        key = (row["app"], row["deployment"], row["version"])
        existing = int(row.get("ready", 0)) + int(row.get("starting", 0))
        wanted = max(existing, targets.get(key, int(row.get("replicas", 0))))
        demands.append(ReplicaDemand(dict(row.get("resources") or {}), wanted))
    return demands


class ControllerLink:
    """MetricSource and CountSink over the controller actor's handle. `resolve` is `ray.get` (tests pass fakes)."""

    def __init__(self, controller, resolve: Callable[..., Any] | None = None, timeout_s: float = 5.0) -> None:
        self.controller = controller
        self.timeout_s = timeout_s
        if resolve is None:
            import ray

            resolve = ray.get
        self._resolve = resolve
        self.rows: list[dict] = []  # the last rows read, for the cluster request

    def autoscaled_versions(self) -> dict[VersionKey, AutoscaledVersion]:
        self.rows = list(self._resolve(self.controller.autoscaled_versions.remote(), timeout=self.timeout_s))
        return versions_from_rows(self.rows)

    def poll_reports(self) -> list[MetricReport]:
        return []  # reports are pushed to ScalerActor.report

    def set_autoscale_target(self, app: str, deployment: str, version: str, target: int, reason: str) -> None:
        self.controller.set_autoscale_target.remote(app, deployment, version, int(target), reason)


class ScalerActor:
    """Body of the cluster's scaler actor: `ray.remote(num_cpus=0, max_restarts=-1)(ScalerActor)`.

    Restartable: everything it needs on start comes from the controller and from Redis (arrival history and lead
    times); it holds no state that is lost for good when it dies.
    """

    def __init__(self, controller, redis_url: str | None = None, namespace: str = "raygate", period_s: float = 1.0,
                 buffer: ResourceBuffer | None = None, request_resources: Callable[..., None] | None = None,
                 resolve: Callable[..., Any] | None = None, start: bool = True) -> None:
        self.link = ControllerLink(controller, resolve)
        history = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url)
            history = ArrivalHistoryStore(self._redis, namespace)
        self.scaler = Scaler(self.link, self.link, history)
        self.cluster = ClusterResourceRequester(buffer or ResourceBuffer(), request=request_resources)
        self.loop = ScalerLoop(self.tick, period_s)
        if start:
            self.loop.start()

    def tick(self, now: float | None = None):
        """One scaler tick, then the cluster request sized from its targets."""
        decisions = self.scaler.tick(now)
        try:
            targets = {key: decision.target for key, decision in decisions.items()}
            self.cluster.apply(demands_from_rows(self.link.rows, targets))
        except Exception as exc:  # the resource request is a hint; never stops the loop
            log.warning("autoscale_resource_request_failed", error=repr(exc))
        return decisions

    def report(self, rows: list[dict]) -> int:
        count = self.scaler.report(rows)
        if self.scaler.wakes_from_zero(rows):
            self.loop.nudge()  # held requests wait for a replica: decide now
        return count

    def last_decisions(self) -> list[dict]:
        return self.scaler.last_decisions()

    def window(self, app: str, deployment: str, version: str, span_s: float = 10.0) -> list[dict]:
        """The window's merged samples of one version over the last `span_s` seconds (what the policy reads)."""
        return self.scaler.recent_samples((app, deployment, version), span_s)

    def stop(self) -> None:
        self.loop.stop()
        if getattr(self, "_redis", None) is not None:
            self._redis.close()
