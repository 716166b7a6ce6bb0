"""Platform features expressed as ordinary apps: a spec's `scenarios:` become allocator apps.

An allocation scenario is served by a deployment like any user code (`planner.allocation.service:Allocator`), so it
scales, isolates and fails over like any model; the controller adds these apps to the user's at apply time, when
it knows the Redis URL, and starts one nearline planner actor per scenario beside them.
"""

from __future__ import annotations

from typing import Iterable

from deploy.spec import AppSpec, DeploymentSpec, Resources

__all__ = ["ALLOCATOR_IMPORT_PATH", "scenario_app_name", "scenario_apps"]

ALLOCATOR_IMPORT_PATH = "planner.allocation.service:Allocator"


def scenario_app_name(scenario_name: str) -> str:
    """The app that serves a scenario's decisions (its name is reserved: `alloc-<scenario>`)."""
    return f"alloc-{scenario_name}"


def scenario_apps(scenarios: Iterable, redis_url: str | None, namespace: str) -> list[AppSpec]:
    """One app per scenario: route_prefix from the scenario, one `allocator` deployment (not idempotent: a
    decision consumes budget, so a request that may have run is never sent twice)."""
    apps = []
    for scenario in scenarios:
        if not redis_url:
            raise ValueError(f"scenarios[{scenario.name}]: allocation needs Redis (start with `raygate up`, or set "
                             "REDIS_URL)")
        deployment = DeploymentSpec(
            name="allocator", import_path=ALLOCATOR_IMPORT_PATH,
            init_kwargs={"scenario": scenario.model_dump(mode="json"), "redis_url": redis_url,
                         "namespace": namespace},
            num_replicas=scenario.num_replicas,
            resources=Resources(num_cpus=0.25), idempotent=False, max_ongoing_requests=64,
            request_timeout_s=5.0)
        apps.append(AppSpec(name=scenario_app_name(scenario.name), route_prefix=scenario.route_prefix,
                            ingress="allocator", deployments=(deployment,)))
    return apps
