"""One call from an instance file to the DUALS.json record: what the CLI and the benchmark use."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from planner.backends import BACKENDS, BackendUnavailable, default_backend, make_kernel
from planner.instance import Instance, count_users, load_instance, load_partition
from planner.sampling import sample_users
from planner.solver import SolverConfig, certify, solve

__all__ = ["solve_file", "solve_loaded"]


def _record(sol, backend: str, names: tuple[str, ...]) -> dict:
    cert = sol.certificate
    return {
        "lambda": [float(x) for x in sol.lam],
        "dual_objective": cert.dual_objective,
        "primal_objective": cert.primal_objective,
        "max_violation": cert.max_violation,
        "iterations": int(sol.iterations),
        "seconds": float(sol.seconds),
        "backend": backend,
        "gap": cert.gap,
        "converged": bool(sol.converged),
        "constraint_names": list(names),
    }


def solve_loaded(inst: Instance, backend: str | None = None, cfg: SolverConfig = SolverConfig(),
                 sample: float | None = None, sample_seed: int = 0) -> dict:
    """Solve an in-memory instance on one process; with `sample`, solve on a user sample and judge on all users."""
    backend = backend or default_backend()
    if backend == "ray":
        raise BackendUnavailable("the ray backend works from an instance file: use solve_file")
    t0 = time.perf_counter()
    if sample is None or sample >= 1.0:
        kernel = make_kernel(backend, inst)
        sol = solve(kernel, inst.b, cfg)
        return _record(sol, backend, inst.cname)
    sub = sample_users(inst, sample, sample_seed)
    sol = solve(make_kernel(backend, sub), sub.b, cfg)
    full_kernel = make_kernel(backend, inst)
    res = full_kernel.evaluate(sol.lam, 0.0)
    full = certify(sol.lam, inst.b, res)
    out = _record(sol, backend, inst.cname)
    out.update(dual_objective=full.dual_objective, primal_objective=full.primal_objective,
               max_violation=full.max_violation, gap=full.gap, seconds=time.perf_counter() - t0,
               iterations=sol.iterations + 1)
    out["sample"] = {"fraction": float(sample), "users": sub.n, "seed": int(sample_seed),
                     "solve_seconds": float(sol.seconds), "on_sample": asdict(sol.certificate)}
    return out


def solve_file(path: str | Path, backend: str | None = None, cfg: SolverConfig = SolverConfig(),
               sample: float | None = None, sample_seed: int = 0, ray_config=None) -> dict:
    """Solve an instance file with any backend (ray: partitions are loaded by the worker actors themselves)."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend != "ray":
        return solve_loaded(load_instance(path), backend, cfg, sample, sample_seed)
    if sample is not None and sample < 1.0:
        raise BackendUnavailable("--sample is for single-process backends; the ray backend solves all users")
    from planner.ray_backend import RayConfig, RayKernel

    header = load_partition(path, 0, 0)  # A, b and labels only
    n = count_users(path)
    kernel = RayKernel(path, header.K, n, ray_config or RayConfig())
    try:
        sol = solve(kernel, header.b, cfg)
    finally:
        kernel.close()
    out = _record(sol, "ray", header.cname)
    out["ray"] = {"workers": len(kernel.descriptions), "worker_backend": kernel.worker_backend}
    return out


def lambda_array(record: dict) -> np.ndarray:
    return np.asarray(record["lambda"], dtype=np.float64)
