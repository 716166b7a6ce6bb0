"""Runtime changes as values: admin documents validated with the spec's own types, and the override rule.

Bad input raises ValueError (a bad value) or KeyError (an unknown name) with a message naming the field;
the gateway's admin API turns both into 400s. Nothing here touches Ray or Redis.

The override rule: `raygate split` and `raygate scale` set runtime overrides (a version's weight, a
version's replica count). An override survives later deploys until a deploy changes that same field in
the spec (the version's `weight`, or its resolved `num_replicas`), or removes the version; then the spec's
new value wins. If the surviving weights of a deployment would leave no version with a positive weight,
that deployment's weight overrides are all dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from deploy.spec import (
    ReplicaCount,
    ResolvedVersion,
    Spec,
    SpecError,
    Weight,
    parse_spec,
)

__all__ = [
    "REMOVE_ALL_FIELD",
    "carry_overrides",
    "merged_weights",
    "parse_apply_document",
    "parse_scale",
    "parse_weights",
]

REMOVE_ALL_FIELD = "remove_all"  # top-level field of a deploy document that confirms removing every app

_WEIGHTS = TypeAdapter(dict[str, Weight])
_COUNT = TypeAdapter(ReplicaCount)

VersionKey = tuple[str, str, str]
DeploymentKey = tuple[str, str]


def _first_error(field: str, error: ValidationError) -> str:
    item = error.errors()[0]
    location = ".".join(str(part) for part in (field, *item["loc"]))
    return f"{location}: {item['msg'].removeprefix('Value error, ')} (got {item['input']!r})"


def parse_apply_document(doc: Any, source: str = "<submitted spec>") -> Spec:
    """A deploy document -> a validated Spec. Removing every app must be asked for explicitly:
    `{"apps": [], "remove_all": true}`; an empty body, `{}` or `{"apps": []}` alone are refused."""
    if doc is None or doc == "" or doc == {}:
        raise ValueError(f"{source}: the spec is empty; to remove every app send "
                         f'{{"apps": [], "{REMOVE_ALL_FIELD}": true}}')
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: <root>: a spec must be a mapping with 'apps', got {type(doc).__name__}")
    doc = dict(doc)
    remove_all = doc.pop(REMOVE_ALL_FIELD, False)
    if not isinstance(remove_all, bool):
        raise ValueError(f"{source}: {REMOVE_ALL_FIELD}: must be true or false (got {remove_all!r})")
    spec = parse_spec(doc, source)
    if not (spec.apps or spec.scenarios or spec.pipelines) and not remove_all:
        raise ValueError(f"{source}: apps: the spec has no apps, which would remove every running app; "
                         f'send {{"apps": [], "{REMOVE_ALL_FIELD}": true}} to do that')
    if (spec.apps or spec.scenarios or spec.pipelines) and remove_all:
        raise ValueError(f"{source}: {REMOVE_ALL_FIELD}: true only goes with an empty 'apps'")
    return spec


def parse_weights(raw: Any, versions: Mapping[str, float], deployment: str) -> dict[str, float]:
    """`{"v1": 90, "v2": 10}` checked against the deployment's versions (name -> spec weight)."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"weights: must be a non-empty mapping of version name to weight (got {raw!r})")
    try:
        weights = _WEIGHTS.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(_first_error("weights", exc)) from None
    unknown = sorted(set(weights) - set(versions))
    if unknown:
        raise KeyError(f"deployment {deployment!r} has no version(s) {', '.join(unknown)} "
                       f"(versions: {', '.join(sorted(versions))})")
    return weights


def merged_weights(spec_weights: Mapping[str, float], overrides: Mapping[str, float]) -> dict[str, float]:
    """The weights a deployment runs with: the spec's, overridden per version; refuse all-zero."""
    merged = {name: float(overrides.get(name, weight)) for name, weight in spec_weights.items()}
    if not any(w > 0 for w in merged.values()):
        raise ValueError("weights: at least one version needs a positive weight")
    return merged


def parse_scale(raw: Any, cap: int) -> int:
    """A replica count: an int (not a bool, float or string), 0 to the version's `max_replicas`."""
    try:
        count = _COUNT.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(_first_error("num_replicas", exc)) from None
    if count > cap:
        raise ValueError(f"num_replicas: {count} is above this deployment's max_replicas ({cap})")
    return count


def carry_overrides(old: Mapping[VersionKey, ResolvedVersion], new: Mapping[VersionKey, ResolvedVersion],
                    weights: Mapping[DeploymentKey, Mapping[str, float]],
                    scales: Mapping[VersionKey, int]) -> tuple[dict, dict]:
    """The overrides that survive a deploy from `old` to `new` (see the module docstring)."""
    kept_weights: dict[DeploymentKey, dict[str, float]] = {}
    for (app, dep), by_version in weights.items():
        kept = {name: w for name, w in by_version.items()
                if (app, dep, name) in old and (app, dep, name) in new
                and old[(app, dep, name)].weight == new[(app, dep, name)].weight}
        spec_weights = {k[2]: v.weight for k, v in new.items() if k[:2] == (app, dep)}
        if kept and any(w > 0 for w in (spec_weights | kept).values()):
            kept_weights[(app, dep)] = kept
    kept_scales = {key: n for key, n in scales.items()
                   if key in old and key in new and old[key].num_replicas == new[key].num_replicas
                   and n <= new[key].max_replicas}
    return kept_weights, kept_scales
