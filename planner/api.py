"""One call from an instance file to the DUALS.json record: what the CLI and the benchmark use."""

from __future__ import annotations

import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

from planner.backends import BACKENDS, BackendUnavailable, default_backend, make_kernel
from planner.instance import Instance, count_users, load_instance, load_partition
from planner.sampling import sample_users
from planner.solver import SolverConfig, certify, solve
from planner.ties import DEFAULT_TIE_BREAK
from planner.warmstart import WarmStartConfig, solve_warm

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
        "tie_break": DEFAULT_TIE_BREAK,  # the online rule must raise values the same way (planner.ties.break_ties)
    }


def _full_record(sol, inst: Instance, backend: str, cfg: SolverConfig, seconds: float, on_sample) -> dict:
    """The record of prices found on a sample, judged on every user (converged refers to all users, too)."""
    kernel = make_kernel(backend, inst)
    try:
        full = certify(sol.lam, inst.b, kernel.evaluate(sol.lam, 0.0))
    finally:
        kernel.close()
    out = _record(sol, backend, inst.cname)
    out.update(dual_objective=full.dual_objective, primal_objective=full.primal_objective,
               max_violation=full.max_violation, gap=full.gap, seconds=seconds, iterations=sol.iterations + 1,
               converged=bool(full.gap <= cfg.gap_tol and full.max_violation <= cfg.violation_tol))
    out["sample"] = on_sample
    return out


def solve_loaded(inst: Instance, backend: str | None = None, cfg: SolverConfig = SolverConfig(),
                 sample: float | None = None, sample_seed: int = 0,
                 warm: WarmStartConfig | None = WarmStartConfig()) -> dict:
    """Solve an in-memory instance on one process.

    By default large instances are warm-started from a solve on a user sample (`planner.warmstart`; `warm=None`
    starts cold); `"warm_start"` in the record gives the samples' passes (and their cost in full passes). With `sample`, the answer is the
    sample's prices, judged on all users: every figure (and `converged`) is of the whole instance.
    """
    backend = backend or default_backend()
    if backend == "ray":
        raise BackendUnavailable("the ray backend works from an instance file: use solve_file")
    t0 = time.perf_counter()
    make = partial(make_kernel, backend)
    if sample is None or sample >= 1.0:
        if warm is None:
            sol, on_sample = solve(make(inst), inst.b, cfg), None
        else:
            sol, on_sample = solve_warm(inst, make, cfg, warm)
        out = _record(sol, backend, inst.cname)
        out["seconds"] = time.perf_counter() - t0
        if on_sample is not None:
            out["warm_start"] = {"passes": int(on_sample.iterations), "seconds": float(on_sample.seconds),
                                 "full_passes": round(on_sample.full_passes(inst.n), 2),
                                 "levels": [{"users": u, "passes": p} for u, p, _, _ in on_sample.levels]}
        return out
    sub = sample_users(inst, sample, sample_seed)
    sol = solve(make(sub), sub.b, cfg)
    info = {"fraction": float(sample), "users": sub.n, "seed": int(sample_seed),
            "solve_seconds": float(sol.seconds), "on_sample": asdict(sol.certificate),
            "converged_on_sample": bool(sol.converged)}
    return _full_record(sol, inst, backend, cfg, time.perf_counter() - t0, info)


def solve_file(path: str | Path, backend: str | None = None, cfg: SolverConfig = SolverConfig(),
               sample: float | None = None, sample_seed: int = 0, ray_config=None,
               warm: WarmStartConfig | None = WarmStartConfig(), budget_bytes: int | None = None) -> dict:
    """Solve an instance file with any backend (ray: partitions are loaded by the worker actors themselves).

    `budget_bytes`: refuse files whose arrays would need more memory (default: `npz_reader.memory_budget_bytes`).
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend != "ray":
        return solve_loaded(load_instance(path, budget_bytes), backend, cfg, sample, sample_seed, warm)
    if sample is not None and sample < 1.0:
        raise BackendUnavailable("--sample is for single-process backends; the ray backend solves all users")
    from planner.ray_backend import RayConfig, RayKernel

    header = load_partition(path, 0, 0, budget_bytes)  # A, b and labels only
    n = count_users(path)
    kernel = RayKernel(path, header.K, n, ray_config or RayConfig())
    try:
        sol = solve(kernel, header.b, cfg)
    finally:
        kernel.close()
    out = _record(sol, "ray", header.cname)
    out["ray"] = {"workers": len(kernel.descriptions), "worker_backend": kernel.worker_backend}
    return out
