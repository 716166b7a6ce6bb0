"""`--backend ray`: the bulk-synchronous mode for data larger than one process.

Worker actors each load one partition of users (a row range of the instance file, read without loading the rest)
and, for the prices of the current round, return their users' sums (`PassResult`: consumption, dual and primal
parts, smoothed values). The driver is the merger: it adds the parts, and the unchanged solver
(`planner.solver.solve`) updates the prices and starts the next round. A worker on a GPU node gets a placement
group bundle with {"GPU": 1} and runs the CuPy kernel; otherwise it runs Numba (or NumPy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.kernels import PassResult, combine_results

__all__ = ["RayConfig", "RayKernel", "PartitionWorker", "connect_ray", "partition_bounds"]


@dataclass(frozen=True)
class RayConfig:
    """How the ray backend spreads users over actors."""

    workers: int = 0  # number of partition actors; 0 picks the cluster's CPU count (at most 16)
    worker_backend: str = "auto"  # kernel inside each actor: auto (cupy on a GPU bundle, else numba), numba, numpy
    cpus_per_worker: float = 1.0  # CPU resource each actor reserves
    use_gpu: str = "auto"  # auto: GPU bundles when the cluster has GPUs; never: CPU only
    worker_env: tuple[tuple[str, str], ...] = ()  # environment for the actors (the CLI passes NUMBA_CACHE_DIR)


def partition_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal row ranges covering [0, n)."""
    parts = max(1, min(parts, n)) if n else 1
    return [(p * n // parts, (p + 1) * n // parts) for p in range(parts)]


class PartitionWorker:
    """Holds one partition of users and evaluates a price vector on it (wrapped by ray.remote at use)."""

    def __init__(self, path: str, start: int, stop: int, backend: str):
        from planner.backends import make_kernel
        from planner.instance import load_partition

        inst = load_partition(path, start, stop)
        if backend == "auto":
            from planner.backends import default_backend

            backend = default_backend()
        self.kernel = make_kernel(backend, inst, first_user=start)
        self.users = inst.n
        self.backend = backend

    def evaluate(self, lam: np.ndarray, tau: float) -> PassResult:
        return self.kernel.evaluate(lam, tau)

    def describe(self) -> dict:
        return {"users": self.users, "backend": self.backend, "pid": os.getpid()}


class RayKernel:
    """A kernel whose users live in Ray actors; evaluate() is one bulk-synchronous round."""

    name = "ray"

    def __init__(self, path: str | Path, K: int, n: int, cfg: RayConfig = RayConfig()):
        import ray

        self.K = K
        self.n = n
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if cfg.use_gpu == "auto" else 0
        workers = cfg.workers or max(1, min(16, int(resources.get("CPU", 1) // max(cfg.cpus_per_worker, 1e-9))))
        if gpus:
            workers = cfg.workers or gpus
        bounds = partition_bounds(n, workers)
        env = dict(cfg.worker_env)
        remote_cls = ray.remote(PartitionWorker)
        self.placement_group = None
        options: dict = {"num_cpus": cfg.cpus_per_worker}
        if env:
            options["runtime_env"] = {"env_vars": env}
        backend = cfg.worker_backend
        if gpus:
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            self.placement_group = placement_group([{"GPU": 1, "CPU": cfg.cpus_per_worker}] * len(bounds),
                                                   strategy="SPREAD")
            ray.get(self.placement_group.ready())
            backend = "cupy" if backend == "auto" else backend
        self.workers = []
        for idx, (start, stop) in enumerate(bounds):
            opts = dict(options)
            if self.placement_group is not None:
                opts["num_gpus"] = 1
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=self.placement_group, placement_group_bundle_index=idx)
            self.workers.append(remote_cls.options(**opts).remote(str(path), start, stop, backend))
        self.descriptions = ray.get([w.describe.remote() for w in self.workers])
        self.worker_backend = self.descriptions[0]["backend"] if self.descriptions else backend

    def evaluate(self, lam: np.ndarray, tau: float = 0.0) -> PassResult:
        import ray

        lam = np.asarray(lam, dtype=np.float64)
        return combine_results(ray.get([w.evaluate.remote(lam, tau) for w in self.workers]))

    def close(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self.placement_group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.placement_group)
            self.placement_group = None


def connect_ray(address: str | None = None, temp_dir: str | None = None, num_cpus: float | None = None) -> bool:
    """Join the Ray at `address` when given, else start a loopback-only local Ray. True when this call started Ray.

    The caller (the CLI, a benchmark) decides the address, e.g. from RAY_ADDRESS; this module reads no environment.
    A local Ray binds every socket to 127.0.0.1 and has no dashboard (its job API has been an attack path).
    """
    if address:
        import ray

        if ray.is_initialized():
            return False
        ray.init(address=address, namespace="raygate", log_to_driver=False)
        return False
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by Ray at import and by every process it starts
    import ray

    if ray.is_initialized():
        return False
    try:  # Ray was imported before this call: align the flag it already read, so it, too, picks loopback
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    except (ImportError, AttributeError):  # pragma: no cover - a Ray without the private flag
        pass
    kwargs: dict = dict(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, namespace="raygate",
                        configure_logging=False, log_to_driver=False)
    if temp_dir is not None:
        Path(temp_dir).mkdir(parents=True, exist_ok=True)  # Ray's socket paths must stay short: keep it so
        kwargs["_temp_dir"] = str(temp_dir)
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    return True
