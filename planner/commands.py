"""`python -m planner generate | solve | evaluate`: the planner's command line, the only place the planner reads
the environment (NUMBA_CACHE_DIR's default, RAY_ADDRESS for `--backend ray`); named `commands` so that it does not
clash with `deploy/cli.py`, which runs it as `raygate plan`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


def _edge_environment() -> None:
    """Settings read once here, before anything imports numba."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "raygate-numba-cache"))


def _parser() -> argparse.ArgumentParser:
    from planner.generate import FAMILIES  # plain Python and NumPy: nothing here compiles or reads env
    from planner.solver import SolverConfig

    p = argparse.ArgumentParser(prog="python -m planner", description="Nearline LP planner: dual prices.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a seeded, realistic instance file")
    g.add_argument("--n", type=int, default=10_000, help="users")
    g.add_argument("--J", type=int, default=10, help="candidate slots per user")
    g.add_argument("--K", type=int, default=10, help="constraints")
    g.add_argument("--P", type=int, default=0, help="catalog items (0: max(2K, 50))")
    g.add_argument("--R", type=int, default=2, help="usage types (0 spend, 1 count, ...)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--kind", choices=("factored", "dense"), default="factored")
    g.add_argument("--family", choices=tuple(FAMILIES), default="baseline", help="instance family (see generate.py)")
    g.add_argument("--out", required=True, help="instance file to write (.npz)")
    s = sub.add_parser("solve", help="compute dual prices and their certificate")
    s.add_argument("instance")
    s.add_argument("--out", required=True, help="DUALS.json to write")
    s.add_argument("--backend", choices=("numpy", "numba", "cupy", "ray"), default=None,
                   help="default: the fastest available single-process backend")
    s.add_argument("--sample", type=float, default=None, help="solve on this fraction of users, judge on all")
    s.add_argument("--sample-seed", type=int, default=0)
    s.add_argument("--gap-tol", type=float, default=SolverConfig.gap_tol,
                   help="certified relative gap to reach (default %(default)s)")
    s.add_argument("--violation-tol", type=float, default=SolverConfig.violation_tol,
                   help="largest relative overshoot of any constraint (default %(default)s)")
    s.add_argument("--cold", action="store_true", help="no warm start from a user sample")

    s.add_argument("--time-limit", type=float, default=600.0)
    s.add_argument("--workers", type=int, default=0, help="ray backend: partition actors (0: one per CPU)")
    e = sub.add_parser("evaluate", help="judge a DUALS.json on an instance (incl. random-order hard stop)")
    e.add_argument("instance")
    e.add_argument("duals")
    e.add_argument("--seed", type=int, default=0, help="order of the hard-stop replay")
    for sp in (s, e):
        sp.add_argument("--memory-budget-gb", type=float, default=None,
                        help="refuse files needing more (default: half the available memory, at most 16 GiB)")
    return p


def _budget(args) -> int | None:
    return None if args.memory_budget_gb is None else int(args.memory_budget_gb * (1 << 30))


def _generate(args) -> int:
    from planner.generate import family_config, generate_instance
    from planner.instance import save_instance

    inst = generate_instance(family_config(args.family, args.n, args.J, args.K, args.seed, P=args.P, R=args.R))
    save_instance(args.out, inst, dense=args.kind == "dense")
    print(json.dumps({"out": args.out, "kind": args.kind, "family": args.family, "n": inst.n, "J": inst.J,
                      "K": inst.K, "P": inst.P,
                      "R": inst.R, "seed": args.seed}))
    return 0


def _solve(args) -> int:
    from planner.api import solve_file
    from planner.warmstart import WarmStartConfig

    from planner.solver import SolverConfig

    cfg = SolverConfig(gap_tol=args.gap_tol, violation_tol=args.violation_tol, time_limit_s=args.time_limit)
    started_ray = False
    ray_config = None
    if args.backend == "ray":
        from planner.ray_backend import RayConfig, connect_ray

        started_ray = connect_ray(os.environ.get("RAY_ADDRESS") or None)
        worker_env = (("NUMBA_CACHE_DIR", os.environ["NUMBA_CACHE_DIR"]),)
        ray_config = RayConfig(workers=args.workers, worker_env=worker_env)
    try:
        record = solve_file(args.instance, args.backend, cfg, args.sample, args.sample_seed, ray_config,
                            warm=None if args.cold else WarmStartConfig(), budget_bytes=_budget(args))
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    Path(args.out).write_text(json.dumps(record))
    summary = {k: record[k] for k in ("dual_objective", "primal_objective", "gap", "max_violation", "converged",
                                      "iterations", "seconds", "backend")}
    print(json.dumps(summary))
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from planner.evaluate import judge_prices
    from planner.instance import load_instance

    inst = load_instance(args.instance, _budget(args))
    try:
        lam = np.asarray(json.loads(Path(args.duals).read_text())["lambda"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.duals}: not a DUALS.json with a 'lambda' list ({exc})", file=sys.stderr)
        return 2
    j = judge_prices(inst, lam, seed=args.seed)
    print(json.dumps({"dual_objective": j.dual_objective, "primal_objective": j.primal_objective,
                      "gap": j.gap, "max_violation": j.max_violation,
                      "hard_stop_objective": j.hard_stop_objective}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _edge_environment()
    from planner.backends import BackendUnavailable
    from planner.instance import InstanceError

    try:
        return {"generate": _generate, "solve": _solve, "evaluate": _evaluate}[args.command](args)
    except (InstanceError, BackendUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
