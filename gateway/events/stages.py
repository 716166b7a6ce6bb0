"""Stage templates as user-code classes: each pipeline stage runs as a deployment like any model.

Every stage is called with one batch and answers one batch:

    payload  {"events": [{"id": "web:1700000000000-0", "source": "web", "ts": 1700000000.0, "data": {...}}, ...]}
    answer   {"events": [...], "dead": [{"id", "source", "stage", "reason", "data"}, ...],
              "held": [ids kept for later], "released": [earlier-held ids now resolved]}

`held` and `released` come only from stages that keep events across calls (Join); the consumer acknowledges an
entry only when no stage holds it. An event's `id` stays the same through filter and convert, so a replayed entry
yields the same output id and the sink's deduplication absorbs it.

`stage_deployments(pipeline)` says which deployment runs each stage: its import path here and its init kwargs.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from gateway.events.expression import EvaluationError, compile_expression
from gateway.events.join import JoinSettings, JoinWindow
from gateway.events.spec import (
    ConvertStage,
    CustomStage,
    FilterStage,
    JoinStage,
    PipelineSpec,
    StageSpec,
    is_import_path,
)

__all__ = ["Filter", "Convert", "Join", "Custom", "AsyncCustom", "StageDeployment", "stage_deployments", "pipeline_app_name",
           "resolve_import_path", "StageOutputError"]


class StageOutputError(ValueError):
    """A custom stage answered something that is not a batch."""


def resolve_import_path(path: str) -> Any:
    """The object named by 'package.module:attr.attr'."""
    module_name, _, attr_path = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def _dead(event: dict, stage: str, reason: str) -> dict:
    return {"id": event.get("id"), "source": event.get("source"), "stage": stage, "reason": reason,
            "data": event.get("data")}


def _events(payload) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise ValueError('a stage expects {"events": [...]}')
    return payload["events"]


class _PerEventStage:
    """Applies `_one(event) -> event | None` to the events of `sources` (others pass through)."""

    name = "stage"
    sources: frozenset[str] | None = None

    def _one(self, event: dict) -> dict | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, payload) -> dict:
        kept, dead = [], []
        for event in _events(payload):
            if self.sources is not None and event.get("source") not in self.sources:
                kept.append(event)
                continue
            try:
                result = self._one(event)
            except EvaluationError as exc:
                dead.append(_dead(event, self.name, f"{self.name}: {exc}"))
                continue
            except Exception as exc:  # user code: one bad event must not fail the batch
                dead.append(_dead(event, self.name, f"{self.name}: {type(exc).__name__}: {exc}"))
                continue
            if result is not None:
                kept.append(result)
        return {"events": kept, "dead": dead}


class Filter(_PerEventStage):
    """Keeps events for which the expression (or the predicate at an import path, called with the data) holds."""

    def __init__(self, filter: str, name: str = "filter", sources: list[str] | None = None) -> None:
        self.name = name
        self.sources = frozenset(sources) if sources else None
        if is_import_path(filter):
            predicate = resolve_import_path(filter)
            self._holds: Callable[[dict], bool] = lambda event: bool(predicate(event.get("data")))
        else:
            expression = compile_expression(filter)
            self._holds = lambda event: expression.holds(event.get("data"), event.get("source", ""))

    def _one(self, event: dict) -> dict | None:
        return event if self._holds(event) else None


class Convert(_PerEventStage):
    """Replaces each event's data: by a function at an import path (data -> dict), or a field mapping
    {output field: expression}. The event's id, source and ts are kept."""

    def __init__(self, convert: str | dict[str, str], name: str = "convert", sources: list[str] | None = None) -> None:
        self.name = name
        self.sources = frozenset(sources) if sources else None
        if isinstance(convert, str):
            self._convert: Callable[[dict], Any] = self._by_function(resolve_import_path(convert))
        else:
            fields = [(out, compile_expression(text)) for out, text in convert.items()]
            self._convert = lambda event: {out: e.evaluate(event.get("data"), event.get("source", ""))
                                           for out, e in fields}

    @staticmethod
    def _by_function(function: Callable[[Any], Any]) -> Callable[[dict], Any]:
        return lambda event: function(event.get("data"))

    def _one(self, event: dict) -> dict | None:
        data = self._convert(event)
        if data is None:
            return None  # a convert function may drop an event by returning None
        if not isinstance(data, dict):
            raise EvaluationError(f"convert must produce a mapping, got {type(data).__name__}")
        return {**event, "data": data}


class Join:
    """Joins events of two or more sources by key within a time window (see gateway/events/join.py).

    State lives in this replica's memory, so a join deployment runs one replica. Events of other sources pass
    through. Time is the payload's "watermark" {source: event time read up to}, or the clock without one. Call with
    an empty batch to expire due groups (the consumer does when idle)."""

    def __init__(self, sources: list[str], key: str, window_s: float, unmatched: str = "drop",
                 max_pending: int = 100_000, remember_s: float = 300.0, name: str = "join",
                 clock: Callable[[], float] = time.time) -> None:
        self.window = JoinWindow(JoinSettings(sources=tuple(sources), key=key, window_s=float(window_s),
                                              unmatched=unmatched, max_pending=max_pending, stage=name,
                                              remember_s=float(remember_s)))
        self.clock = clock
        self._last_now = float("-inf")
        self._lock = threading.Lock()  # sync user code runs on worker threads

    def __call__(self, payload) -> dict:
        joined = set(self.window.settings.sources)
        events = _events(payload)
        mine = [e for e in events if e.get("source") in joined]
        passing = [e for e in events if e.get("source") not in joined]
        with self._lock:
            step = self.window.step(mine, self._now(payload.get("watermark")))
        return {"events": passing + step.events, "dead": step.dead, "held": step.held, "released": step.released}

    def _now(self, watermark) -> float:
        """The consumer's watermark (min over the joined sources), else the clock; never moves backwards."""
        sources = self.window.settings.sources
        if isinstance(watermark, dict) and all(isinstance(watermark.get(s), (int, float)) for s in sources):
            now = min(float(watermark[s]) for s in sources)
        else:
            now = self.clock()
        self._last_now = max(self._last_now, now)
        return self._last_now

    def check_health(self) -> None:
        return None


class Custom:
    """Runs a user class or function at an import path on the whole batch and checks the answer's shape.

    Constructing `Custom` with an async target gives an `AsyncCustom` (whose __call__ is async), so the replica
    awaits it on its loop; a sync target stays sync and runs on the replica's worker threads."""

    def __new__(cls, custom: str, *args, **kwargs):
        if cls is Custom:
            target = resolve_import_path(custom)
            call = getattr(target, "__call__", None) if inspect.isclass(target) else target  # noqa: B004
            if inspect.iscoroutinefunction(call):
                cls = AsyncCustom
        return super().__new__(cls)

    def __init__(self, custom: str, init_kwargs: dict | None = None, name: str = "custom",
                 sources: list[str] | None = None) -> None:
        target = resolve_import_path(custom)
        self.target = target(**(init_kwargs or {})) if inspect.isclass(target) else target
        self.name = name
        self.sources = frozenset(sources) if sources else None

    def _split(self, payload) -> tuple[list[dict], list[dict]]:
        events = _events(payload)
        if self.sources is None:
            return events, []
        return [e for e in events if e.get("source") in self.sources], \
            [e for e in events if e.get("source") not in self.sources]

    def _answer(self, result, passing: list[dict]) -> dict:
        if not isinstance(result, dict) or not isinstance(result.get("events", []), list):
            raise StageOutputError(f"custom stage {self.name!r} must answer {{'events': [...], 'dead': [...]}}")
        return {**result, "events": passing + list(result.get("events", [])), "dead": list(result.get("dead", []))}

    def __call__(self, payload) -> dict:
        mine, passing = self._split(payload)
        return self._answer(self.target({"events": mine}), passing)


class AsyncCustom(Custom):
    """`Custom` over an async target."""

    async def __call__(self, payload) -> dict:
        mine, passing = self._split(payload)
        return self._answer(await self.target({"events": mine}), passing)


@dataclass(frozen=True)
class StageDeployment:
    """One stage as a deployment: what the platform puts in a DeploymentSpec."""

    app: str  # app the stage deployments live in (pipeline_app_name)
    deployment: str  # deployment name (the stage name)
    import_path: str  # the stage template class here
    init_kwargs: dict  # its keyword arguments (JSON-serialisable)
    num_replicas: int  # replicas (a join runs exactly one)


def pipeline_app_name(pipeline: str) -> str:
    """The app that holds a pipeline's stage deployments."""
    return f"events-{pipeline}"


def _stage_kwargs(stage: StageSpec) -> tuple[str, dict]:
    sources = list(stage.sources) if stage.sources else None
    if isinstance(stage, FilterStage):
        return "gateway.events.stages:Filter", {"filter": stage.filter, "name": stage.name, "sources": sources}
    if isinstance(stage, ConvertStage):
        convert = stage.convert if isinstance(stage.convert, str) else dict(stage.convert)
        return "gateway.events.stages:Convert", {"convert": convert, "name": stage.name, "sources": sources}
    if isinstance(stage, JoinStage):
        j = stage.join
        return "gateway.events.stages:Join", {"sources": list(j.sources), "key": j.key, "window_s": j.window_s,
                                              "unmatched": j.unmatched, "max_pending": j.max_pending,
                                              "remember_s": j.remember_s, "name": stage.name}
    assert isinstance(stage, CustomStage)
    return "gateway.events.stages:Custom", {"custom": stage.custom, "init_kwargs": dict(stage.init_kwargs),
                                            "name": stage.name, "sources": sources}


def stage_deployments(pipeline: PipelineSpec) -> tuple[StageDeployment, ...]:
    """The deployments that run `pipeline`'s stages, in stage order."""
    out = []
    for stage in pipeline.stages:
        import_path, kwargs = _stage_kwargs(stage)
        out.append(StageDeployment(app=pipeline_app_name(pipeline.name), deployment=stage.name,
                                   import_path=import_path, init_kwargs=kwargs, num_replicas=stage.num_replicas))
    return tuple(out)
