"""The nearline loop as a Ray actor: one per scenario, restarted by Ray when its process dies, placed on a GPU
through a placement group when the cluster has one (then the solve runs the CuPy kernel).

    handle = start_planner(scenario_dict, redis_url)        # idempotent: returns the running actor if there is one
    ray.get(handle.status.remote())                         # the last cycle's report, as a dict

The actor builds its own Redis client from the URL it is given (it owns it) and runs `NearlineLoop.run` in a
thread, so method calls (status, stop) are answered between cycles. Nothing here imports the platform's code.
"""

from __future__ import annotations

import os
import threading

from planner.allocation.nearline import NearlineLoop
from planner.allocation.scenario import ScenarioSpec

__all__ = ["PLANNER_NICENESS", "NearlinePlanner", "planner_actor_name", "start_planner"]

# The planner's process runs at this OS niceness (added to what it inherited): the solve is batch work that must
# yield the cores to serving (gateways, allocator replicas) when a traffic peak needs them; on an idle core it
# runs at full speed all the same. 0 leaves the priority alone.
PLANNER_NICENESS = 10


class NearlinePlanner:
    """The actor's class (wrapped by `ray.remote` in `start_planner`; plain Python otherwise)."""

    def __init__(self, scenario: dict, redis_url: str, namespace: str = "raygate", backend: str | None = None):
        import redis

        spec = ScenarioSpec.model_validate(scenario)
        _lower_priority(PLANNER_NICENESS)
        if backend:
            spec = spec.model_copy(update={"solver_backend": backend})
        self.client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=2)
        self.loop = NearlineLoop(spec, self.client, namespace=namespace)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop.run, args=(self._stop,), name=f"nearline-{spec.name}",
                                        daemon=True)
        self._thread.start()

    def status(self) -> dict:
        """The last cycle's report (None before the first), whether the loop runs, the backend, and how many
        cycles ran, published, were refused and failed since this actor (re)started."""
        report = self.loop.last_report
        return {"scenario": self.loop.scenario.name, "running": self._thread.is_alive(),
                "backend": self.loop.scenario.solver_backend, **self.loop.counts,
                "last_cycle": None if report is None else report.as_dict()}

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(self.loop.scenario.solver_time_limit_s + 5)
        self.client.close()
        return True


def _lower_priority(increment: int) -> None:
    """Raise the niceness by `increment`, once per process (a restarted actor is a new process). Linux applies it
    to the calling thread and the threads it starts afterwards: called before the loop thread starts, so the
    solve (and any BLAS/Numba pool it creates) runs nice; Ray's own threads keep their priority."""
    if increment and hasattr(os, "nice"):
        try:
            os.nice(increment)
        except OSError:  # not permitted here: the loop runs at the inherited priority
            pass


def planner_actor_name(scenario: str, namespace: str = "raygate") -> str:
    return f"{namespace}-planner-{scenario}"


def start_planner(scenario: dict | ScenarioSpec, redis_url: str, namespace: str = "raygate", *,
                  use_gpu: bool | None = None, num_cpus: float = 1.0, gpu_wait_s: float = 60.0):
    """Start (or find) the scenario's planner actor on the connected Ray. `use_gpu=None` takes a GPU when the
    cluster has one; the actor is restarted by Ray without limit when its process dies."""
    import ray

    spec = scenario if isinstance(scenario, ScenarioSpec) else ScenarioSpec.model_validate(scenario)
    options = {"name": planner_actor_name(spec.name, namespace), "get_if_exists": True, "max_restarts": -1,
               "max_concurrency": 4, "num_cpus": num_cpus}
    backend = None
    gpus = ray.cluster_resources().get("GPU", 0) if use_gpu is None else (1 if use_gpu else 0)
    if gpus >= 1:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = placement_group([{"GPU": 1, "CPU": num_cpus}], strategy="PACK")
        ray.get(group.ready(), timeout=gpu_wait_s)
        options.update(num_gpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=0))
        backend = "cupy"
    actor = ray.remote(NearlinePlanner).options(**options)
    return actor.remote(spec.model_dump(mode="json"), redis_url, namespace, backend)
