"""The controller's side of allocation scenarios and event pipelines: planner actors and status.

Serving is ordinary apps (deploy/expand.py); what is left here is what apps cannot express: one nearline planner
actor per scenario (started on apply and on controller start, stopped when its scenario goes), and the per-scenario
and per-pipeline figures `raygate status` shows (read from Redis, bounded in time, never failing the status call).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import structlog

from deploy.spec import Spec

__all__ = ["FeatureActors", "feature_status", "redacted_url"]

log = structlog.get_logger("raygate.features")


def redacted_url(url: str | None) -> str | None:
    """A Redis URL without its password (status and logs never show it)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class FeatureActors:
    """The nearline planner actors of a spec's scenarios (one each, named, restarted by Ray when they die)."""

    def __init__(self, redis_url: str | None, namespace: str) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.planners: dict[str, object] = {}  # scenario name -> actor handle

    def _ensure(self, spec: Spec) -> None:
        import ray

        from planner.allocation.actor import start_planner

        wanted = {scenario.name: scenario for scenario in spec.scenarios}
        for name in [n for n in self.planners if n not in wanted]:
            try:
                ray.kill(self.planners.pop(name), no_restart=True)
            except Exception:  # already gone
                pass
        for name, scenario in wanted.items():
            self.planners[name] = start_planner(scenario, self.redis_url, self.namespace, num_cpus=0.25)

    async def ensure(self, spec: Spec) -> None:
        """Start the planners `spec` needs and stop the others (Ray calls run off the controller's loop)."""
        if not spec.scenarios and not self.planners:
            return
        try:
            await asyncio.to_thread(self._ensure, spec)
        except Exception as exc:  # decisions go on with the last prices; the next apply or start tries again
            log.warning("planner_actors_not_started", error=repr(exc))

    def stop(self) -> None:
        import ray

        for handle in self.planners.values():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:
                pass
        self.planners.clear()


def _unknown(scenario: str, error: str) -> dict:
    """A scenario whose figures cannot be read: the keys platform metrics read are there, unknown and stale."""
    return {"scenario": scenario, "error": error, "prices_version": None, "price_age_s": None, "stale": True}


async def feature_status(spec: Spec, redis_url: str | None, namespace: str, timeout_s: float = 2.0) -> dict:
    """{"scenarios": [...], "pipelines": [...]} for `raygate status`; an entry says why when it cannot be read.
    Each scenario carries `prices_version`, `price_age_s` and `stale` (what `metrics_snapshot` renders)."""
    if not spec.scenarios and not spec.pipelines:
        return {"scenarios": [], "pipelines": []}
    if not redis_url:
        return {"scenarios": [_unknown(s.name, "no Redis") for s in spec.scenarios],
                "pipelines": [{"pipeline": p.name, "error": "no Redis"} for p in spec.pipelines]}
    import redis
    import redis.asyncio as aioredis

    from gateway.events.status import pipeline_status
    from planner.allocation.status import scenario_status

    def scenarios() -> list[dict]:
        client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            return [scenario_status(client, s, namespace) for s in spec.scenarios]
        finally:
            client.close()

    async def pipelines() -> list[dict]:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            return [await pipeline_status(client, p, namespace, redacted_url(redis_url)) for p in spec.pipelines]
        finally:
            await client.aclose()

    out: dict = {}
    try:
        out["scenarios"] = await asyncio.wait_for(asyncio.to_thread(scenarios), 2 * timeout_s)
    except Exception as exc:
        out["scenarios"] = [_unknown(s.name, repr(exc)) for s in spec.scenarios]
    try:
        out["pipelines"] = await asyncio.wait_for(pipelines(), 2 * timeout_s)
    except Exception as exc:
        out["pipelines"] = [{"pipeline": p.name, "error": repr(exc)} for p in spec.pipelines]
    return out
