"""Stages run in this process: a `call(app, deployment, payload)` over stage instances, for tests, benchmarks and
single-process use. The platform passes its router-backed handle call instead."""

from __future__ import annotations

import inspect
from typing import Callable

import orjson

from gateway.events.spec import PipelineSpec
from gateway.events.stages import resolve_import_path, stage_deployments

__all__ = ["LocalStages"]


class LocalStages:
    """Instances of a pipeline's stage classes, called directly. With `wire=True` payloads and answers go through
    JSON as they would between processes (so tests catch anything that does not serialise)."""

    def __init__(self, instances: dict[tuple[str, str], Callable], wire: bool = True) -> None:
        self.instances = instances  # (app, deployment) -> stage instance
        self.wire = wire
        self.calls = 0

    @classmethod
    def for_pipeline(cls, pipeline: PipelineSpec, wire: bool = True, **extra_kwargs) -> "LocalStages":
        """One instance per stage; `extra_kwargs` (e.g. clock=...) go to the stages whose __init__ takes them."""
        instances = {}
        for d in stage_deployments(pipeline):
            target = resolve_import_path(d.import_path)
            accepted = inspect.signature(target).parameters
            kwargs = {**d.init_kwargs, **{k: v for k, v in extra_kwargs.items() if k in accepted}}
            instances[(d.app, d.deployment)] = target(**kwargs)
        return cls(instances, wire)

    def stage(self, deployment: str):
        return next(v for (app, name), v in self.instances.items() if name == deployment)

    async def call(self, app: str, deployment: str, payload: dict) -> dict:
        self.calls += 1
        instance = self.instances[(app, deployment)]
        if self.wire:
            payload = orjson.loads(orjson.dumps(payload))
        answer = instance(payload)
        if inspect.isawaitable(answer):
            answer = await answer
        return orjson.loads(orjson.dumps(answer)) if self.wire else answer
