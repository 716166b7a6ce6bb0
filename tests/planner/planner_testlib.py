"""Small shared builders for planner tests (no Ray, no Redis)."""

from __future__ import annotations

from planner.generate import GeneratorConfig, generate_instance
from planner.instance import Instance


def small_instance(n: int = 2000, J: int = 6, K: int = 8, seed: int = 7) -> Instance:
    return generate_instance(GeneratorConfig(n=n, J=J, K=K, seed=seed))
