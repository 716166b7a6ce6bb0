"""Platform features expressed as ordinary apps, added to a spec at apply time.

- A scenario (`scenarios:`) is served by the app `alloc-<name>`: one `allocator` deployment running
  `planner.allocation.service:Allocator` at the scenario's route prefix, so decisions scale, isolate and fail over
  like any model; the controller also starts the scenario's nearline planner actor.
- A pipeline (`pipelines:`) runs each stage as a deployment of the internal app `events-<name>` (no route prefix:
  reached through the router by the gateways' pipeline consumers).

`expand_spec` is idempotent: generated apps replace apps of the same name, so a saved (expanded) spec expands to
itself again after a controller restart.
"""

from __future__ import annotations

from typing import Iterable

from deploy.spec import AppSpec, DeploymentSpec, Resources, Spec
from gateway.events.stages import pipeline_app_name, stage_deployments

__all__ = ["ALLOCATOR_IMPORT_PATH", "expand_spec", "pipeline_apps", "scenario_app_name", "scenario_apps"]

ALLOCATOR_IMPORT_PATH = "planner.allocation.service:Allocator"


def scenario_app_name(scenario_name: str) -> str:
    """The app that serves a scenario's decisions (its name is reserved: `alloc-<scenario>`)."""
    return f"alloc-{scenario_name}"


def scenario_apps(scenarios: Iterable, redis_url: str | None, namespace: str) -> list[AppSpec]:
    """One app per scenario: route_prefix from the scenario, one `allocator` deployment (not idempotent: a
    decision consumes budget, so a request that may have run is never sent twice)."""
    apps = []
    for index, scenario in enumerate(scenarios):
        if not redis_url:
            raise ValueError(f"scenarios[{index}]: allocation needs Redis (start with `raygate up`, or set REDIS_URL)")
        deployment = DeploymentSpec(
            name="allocator", import_path=ALLOCATOR_IMPORT_PATH,
            init_kwargs={"scenario": scenario.model_dump(mode="json"), "redis_url": redis_url,
                         "namespace": namespace, "freeze_heap": True},
            num_replicas=scenario.num_replicas, resources=Resources(num_cpus=0.25), idempotent=False,
            max_ongoing_requests=64, request_timeout_s=5.0)
        apps.append(AppSpec(name=scenario_app_name(scenario.name), route_prefix=scenario.route_prefix,
                            ingress="allocator", deployments=(deployment,)))
    return apps


def pipeline_apps(pipelines: Iterable) -> list[AppSpec]:
    """One internal app per pipeline, a deployment per stage (idempotent: the consumers retry a batch)."""
    apps = []
    for pipeline in pipelines:
        stages = stage_deployments(pipeline)
        deployments = tuple(DeploymentSpec(
            name=stage.deployment, import_path=stage.import_path, init_kwargs=dict(stage.init_kwargs),
            num_replicas=stage.num_replicas, resources=Resources(num_cpus=0.1), idempotent=True,
            max_ongoing_requests=16, request_timeout_s=30.0) for stage in stages)
        apps.append(AppSpec(name=pipeline_app_name(pipeline.name), route_prefix=None,
                            ingress=deployments[0].name, deployments=deployments))
    return apps


def expand_spec(spec: Spec, redis_url: str | None, namespace: str) -> Spec:
    """`spec` with the apps its scenarios and pipelines need (replacing earlier generated copies)."""
    if not spec.scenarios and not spec.pipelines:
        return spec
    if spec.pipelines and not redis_url:
        raise ValueError("pipelines[0]: event pipelines need Redis (start with `raygate up`, or set REDIS_URL)")
    generated = scenario_apps(spec.scenarios, redis_url, namespace) + pipeline_apps(spec.pipelines)
    names = {app.name for app in generated}
    apps = tuple(app for app in spec.apps if app.name not in names) + tuple(generated)
    return spec.model_copy(update={"apps": apps})
