"""Benchmark of the nearline LP planner against HiGHS, in one run.

For each size it generates a seeded instance, then runs every backend's solve and HiGHS (interior point) each in
its own subprocess (so peak RSS is that solve's own ru_maxrss), and prints a table: time to a certified gap of
0.5% and 0.1% (gap = (dual - primal) / dual of the online rule, counted only where the rule also overshoots no
constraint by more than the same fraction), final gap and overshoot, passes, peak memory, HiGHS's time and
objective, and the ratio of HiGHS's time to ours. The last output line is one JSON object with the figures.

    .venv/bin/python bench/planner.py                 # small, medium, large (1M x 10 x 100); HiGHS up to medium
    .venv/bin/python bench/planner.py --quick         # small only, numpy + numba
    .venv/bin/python bench/planner.py --sizes large --backends numba --highs-max-n 2000000

    .venv/bin/python bench/planner.py --suite         # every generator family x 3 seeds x (20k, 200k, 1M users)
    .venv/bin/python bench/planner.py --suite --suite-sizes large --families mixed,bind10 --backends numba,cupy
    .venv/bin/python bench/planner.py --suite --suite-sizes large --cache-dir /tmp/planner-suite-cache

The suite runs `python -m planner solve` at its defaults in a fresh process per instance and times it from the
outside (process start, import, load, warm start and solve: what a user waits for), against the targets of issue 11
(200k x 12 x 60 under 3 s, 1M x 10 x 100 under 10 s, both to 0.5% gap and 0.5% overshoot), with HiGHS on every
instance of at most --highs-max-n users (default: the 20k size only). The load average before each run is printed
beside it: on a shared machine the wall time is the thing other processes move.

HiGHS on 1M x 10 x 100 takes about 22 minutes on a 2-core machine, so by default it runs only on sizes with at
most --highs-max-n users (and always under --highs-time-limit); the output says when it was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# This file would shadow the `planner` package: drop bench/ from sys.path and put the repository first.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]

SIZES = {  # name: (n users, J slots, K constraints)
    "small": (10_000, 10, 10),
    "medium": (100_000, 20, 50),
    "large": (1_000_000, 10, 100),
}


SUITE_SIZES = {  # name: (n, J, K, wall-clock target in seconds or None)
    "tiny": (20_000, 12, 60, None),
    "medium": (200_000, 12, 60, 3.0),
    "large": (1_000_000, 10, 100, 10.0),
    "huge": (10_000_000, 10, 1_000, None),
}


def _peak_rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child
    would report the parent's peak (the parent holds each generated instance)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _first_time(trace, tol: float):
    for tp in trace:
        if tp.gap <= tol and tp.max_violation <= tol:
            return tp.seconds
    return None


def child_solve(args) -> dict:
    """Runs in a subprocess: load, (warm the compiled kernel), solve with a 0.1% target, report."""
    import numpy as np

    from planner.backends import make_kernel
    from planner.instance import count_users, load_instance, load_partition
    from planner.solver import SolverConfig, solve

    cfg = SolverConfig(gap_tol=1e-3, violation_tol=1e-3, time_limit_s=args.time_limit)
    t_load = time.perf_counter()
    extra = {}
    if args.backend == "ray":
        import ray

        from planner.ray_backend import RayConfig, RayKernel, connect_ray

        connect_ray(temp_dir=tempfile.mkdtemp(prefix="rgb-", dir="/tmp"))
        header = load_partition(args.instance, 0, 0)
        kernel = RayKernel(args.instance, header.K, count_users(args.instance),
                           RayConfig(worker_env=(("NUMBA_CACHE_DIR", os.environ["NUMBA_CACHE_DIR"]),)))
        b = header.b
        extra["workers"] = len(kernel.descriptions)
        extra["worker_backend"] = kernel.worker_backend
    else:
        inst = load_instance(args.instance)
        kernel = make_kernel(args.backend, inst)
        b = inst.b
    kernel.evaluate(np.zeros(len(b)), 0.01)  # compile / load the Numba cache outside the timed solve
    setup_s = time.perf_counter() - t_load
    sol = solve(kernel, b, cfg)
    if args.backend == "ray":
        kernel.close()
        ray.shutdown()
    cert = sol.certificate
    return {
        "seconds_to_gap_0_5pct": _first_time(sol.trace, 5e-3),
        "seconds_to_gap_0_1pct": _first_time(sol.trace, 1e-3),
        "seconds": sol.seconds, "gap": cert.gap, "max_violation": cert.max_violation,
        "dual_objective": cert.dual_objective, "primal_objective": cert.primal_objective,
        "passes": sol.iterations, "setup_seconds": setup_s, "peak_rss_mb": _peak_rss_mb(), **extra,
    }


def child_highs(args) -> dict:
    from planner.highs import solve_exact
    from planner.instance import load_instance

    inst = load_instance(args.instance)
    res = solve_exact(inst, time_limit_s=args.time_limit)
    return {"highs_seconds": res.seconds, "highs_status": res.status, "highs_objective": res.objective,
            "highs_peak_rss_mb": _peak_rss_mb()}


def _run_child(kind: str, instance: Path, backend: str, time_limit: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--instance", str(instance),
           "--backend", backend, "--time-limit", str(time_limit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit + 600, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def _cli_solve(instance: Path, backend: str | None, out: Path, timeout: float) -> dict:
    """`python -m planner solve` at its defaults in a fresh process, timed from the outside: wall, and the CPU the
    process used (user + system, all its threads; process start included)."""
    cmd = [sys.executable, "-m", "planner", "solve", str(instance), "--out", str(out)]
    if backend:
        cmd += ["--backend", backend]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300], "wall_s": wall}
    rec = json.loads(out.read_text())
    warm = rec.get("warm_start", {})
    return {"wall_s": wall, "cpu_s": cpu, "load_avg": load, "passes": rec["iterations"],
            "sample_passes": warm.get("passes", 0), "sample_full_passes": warm.get("full_passes", 0.0),
            "gap": rec["gap"], "max_violation": rec["max_violation"], "converged": rec["converged"],
            "primal_objective": rec["primal_objective"], "dual_objective": rec["dual_objective"],
            "solve_s": rec["seconds"], "backend": rec["backend"]}


def _instance_file(workdir: Path, family: str, size: str, seed: int) -> tuple[Path, float | None]:
    """The suite's instance file in `workdir`, generated unless it is already there (a --cache-dir run reuses it);
    returns (path, seconds spent generating or None when reused)."""
    from planner.generate import family_config, generate_instance
    from planner.instance import save_instance

    n, J, K, _ = SUITE_SIZES[size]
    path = workdir / f"{family}-{size}-{seed}.npz"
    if path.exists():
        return path, None
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp.npz")
    save_instance(tmp, generate_instance(family_config(family, n, J, K, seed)))
    tmp.rename(path)  # a run stopped while writing leaves no half file under the real name
    return path, time.perf_counter() - t0


def _warm_up(workdir: Path, backends: list) -> None:
    """One untimed CLI solve of a small instance per backend, so the first timed run does not compile the Numba
    kernel (a cold NUMBA_CACHE_DIR costs several seconds once)."""
    from planner.generate import family_config, generate_instance
    from planner.instance import save_instance

    small = workdir / "warm-up.npz"
    save_instance(small, generate_instance(family_config("baseline", 2_000, 6, 8, 0)))
    for backend in backends:
        _cli_solve(small, backend, workdir / "warm-up.json", 600)
    small.unlink()
    (workdir / "warm-up.json").unlink(missing_ok=True)


def run_suite(args) -> list[dict]:
    """Every family x seed x size: generate (or reuse from --cache-dir), solve through the CLI (each backend), HiGHS
    where small enough."""
    from planner.generate import FAMILIES

    families = [f for f in args.families.split(",") if f] if args.families else list(FAMILIES)
    sizes = [s for s in args.suite_sizes.split(",") if s]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    backends = [b for b in args.backends.split(",") if b] if args.backends_given else [None]
    cached = args.cache_dir is not None
    workdir = Path(args.cache_dir) if cached else Path(tempfile.mkdtemp(prefix="planner-suite-"))
    workdir.mkdir(parents=True, exist_ok=True)
    duals = Path(tempfile.mkdtemp(prefix="planner-duals-")) / "duals.json"
    rows = []
    try:
        _warm_up(duals.parent, backends)
        for size in sizes:
            n, J, K, target = SUITE_SIZES[size]
            for family in families:
                for seed in seeds:
                    path, gen_s = _instance_file(workdir, family, size, seed)
                    highs = _run_child("highs", path, "highs", args.highs_time_limit) if n <= args.highs_max_n \
                        else {}
                    if "error" in highs:
                        highs = {"highs_status": f"error: {highs['error']}"}
                    for backend in backends:
                        row = {"size": size, "n": n, "J": J, "K": K, "family": family, "seed": seed,
                               "target_s": target, "generate_s": gen_s}
                        row.update(_cli_solve(path, backend, duals, args.time_limit + 600))
                        row.update(highs)
                        if highs.get("highs_status") == "Optimal" and "wall_s" in row and "error" not in row:
                            row["highs_over_ours"] = highs["highs_seconds"] / row["wall_s"]
                            row["primal_vs_optimum"] = row["primal_objective"] / highs["highs_objective"] - 1
                        row["met"] = bool(row.get("converged") and row.get("gap", 1) <= 5e-3
                                          and row.get("max_violation", 1) <= 5e-3
                                          and (target is None or row.get("wall_s", 1e9) < target))
                        rows.append(row)
                        print(f"#   {json.dumps(row)}", flush=True)
                    if not cached:
                        path.unlink()
    finally:
        duals.unlink(missing_ok=True)
        duals.parent.rmdir()
        if not cached:
            for f in workdir.glob("*"):
                f.unlink()
            workdir.rmdir()
    return rows


def print_suite(rows: list[dict]) -> dict:
    """The table, the worst case per size and family, and the summary object."""
    header = ["size", "family", "seed", "backend", "wall(s)", "cpu(s)", "load", "passes", "sample", "gap", "viol",
              "met", "highs(s)", "highs/ours", "primal-vs-opt"]
    print()
    print(" | ".join(f"{h:>11}" for h in header))
    for r in rows:
        cells = [r["size"], r["family"], r["seed"], r.get("backend", "-"), _fmt(r.get("wall_s")),
                 _fmt(r.get("cpu_s")), _fmt(r.get("load_avg"), ".1f"), _fmt(r.get("passes"), "d"),
                 f"{_fmt(r.get('sample_passes'), 'd')} ({_fmt(r.get('sample_full_passes'), '.1f')})",
                 _fmt(r.get("gap"), ".2e"), _fmt(r.get("max_violation"), ".2e"), "yes" if r["met"] else "NO",
                 _fmt(r.get("highs_seconds")), _fmt(r.get("highs_over_ours"), ".1f"),
                 _fmt(r.get("primal_vs_optimum"), ".1e")]
        if "error" in r:
            cells[4] = "error: " + r["error"][:40]
        print(" | ".join(f"{str(c):>11}" for c in cells))
    worst = {}
    for r in rows:
        key = f"{r['size']}/{r['family']}/{r.get('backend')}"
        w = worst.setdefault(key, {"wall_s": 0.0, "cpu_s": 0.0, "passes": 0, "gap": 0.0, "max_violation": 0.0,
                                   "met": True})
        w["wall_s"] = max(w["wall_s"], r.get("wall_s") or 0.0)
        w["cpu_s"] = max(w["cpu_s"], r.get("cpu_s") or 0.0)
        w["passes"] = max(w["passes"], r.get("passes") or 0)
        w["gap"] = max(w["gap"], r.get("gap") or 0.0)
        w["max_violation"] = max(w["max_violation"], r.get("max_violation") or 0.0)
        w["met"] = w["met"] and r["met"]
        if r.get("highs_over_ours") is not None:
            w["highs_over_ours_min"] = min(w.get("highs_over_ours_min", 1e9), r["highs_over_ours"])
    print("# wall: `python -m planner solve` from process start to exit (import, load, warm start, solve, write); "
          "cpu: that process's user + system CPU; passes: full passes (+ sample: passes over the warm-start "
          "samples, in brackets their cost in full passes); load: 1-min load average before")
    for size in dict.fromkeys(r["size"] for r in rows):
        done = [r for r in rows if r["size"] == size and "error" not in r]
        if done:
            print(f"# {size}: worst wall {max(r['wall_s'] for r in done):.2f} s, worst cpu "
                  f"{max(r['cpu_s'] for r in done):.2f} s, most passes {max(r['passes'] for r in done)}, worst gap "
                  f"{max(r['gap'] for r in done):.2e}, worst overshoot {max(r['max_violation'] for r in done):.2e}, "
                  f"converged {sum(bool(r['converged']) for r in done)}/{len(done)}, load "
                  f"{min(r['load_avg'] for r in done):.1f}-{max(r['load_avg'] for r in done):.1f}")
    print(f"# all targets met: {all(r['met'] for r in rows)} ({sum(r['met'] for r in rows)}/{len(rows)})")
    return {"benchmark": "planner-suite", "cpus": os.cpu_count(), "all_met": all(r["met"] for r in rows),
            "worst": worst, "runs": [{k: r.get(k) for k in (
                "size", "family", "seed", "backend", "wall_s", "cpu_s", "load_avg", "passes", "sample_passes",
                "sample_full_passes", "gap",
                "max_violation", "converged", "met", "highs_seconds", "highs_over_ours", "primal_vs_optimum",
                "error")} for r in rows]}


def _fmt(x, spec=".2f"):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="small,medium,large", help=f"comma list of {', '.join(SIZES)}")
    p.add_argument("--backends", default=None, help="comma list of numpy, numba, cupy, ray (default numpy,numba,ray; "
                                                    "suite: the CLI's default backend)")
    p.add_argument("--suite", action="store_true", help="every family x seed through the CLI at its defaults")
    p.add_argument("--suite-sizes", default="tiny,medium,large", help=f"comma list of {', '.join(SUITE_SIZES)}")
    p.add_argument("--families", default="", help="comma list of generator families (default: all)")
    p.add_argument("--seeds", default="1,2,3", help="suite seeds")
    p.add_argument("--cache-dir", default=None,
                   help="suite: keep instance files here and reuse them on later runs (generation is never timed)")
    p.add_argument("--quick", action="store_true", help="small size, numpy and numba only")
    p.add_argument("--highs-max-n", type=int, default=None,
                   help="run HiGHS only up to this many users (default 200000; suite: 20000)")
    p.add_argument("--highs-time-limit", type=float, default=600.0, help="HiGHS time limit per instance (s)")
    p.add_argument("--time-limit", type=float, default=300.0, help="our solver's time limit per run (s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--child", choices=("solve", "highs"), help=argparse.SUPPRESS)
    p.add_argument("--instance", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "raygate-numba-cache"))
    if args.child:
        out = child_solve(args) if args.child == "solve" else child_highs(args)
        print(json.dumps(out))
        return 0

    args.backends_given = args.backends is not None
    if args.highs_max_n is None:
        args.highs_max_n = 20_000 if args.suite else 200_000
    if args.suite:
        print(f"# planner suite: cpus={os.cpu_count()} sizes={args.suite_sizes} seeds={args.seeds} "
              f"highs up to n={args.highs_max_n}", flush=True)
        print(json.dumps(print_suite(run_suite(args))))
        return 0
    args.backends = args.backends or "numpy,numba,ray"
    if args.quick:
        args.sizes, args.backends = "small", "numpy,numba"
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    from planner.backends import cupy_status
    from planner.generate import GeneratorConfig, generate_instance
    from planner.instance import save_instance

    if "cupy" in backends and not cupy_status()[0]:
        print(f"# cupy skipped: {cupy_status()[1]}")
        backends.remove("cupy")
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="planner-bench-"))
    print(f"# planner benchmark: cpus={os.cpu_count()} sizes={sizes} backends={backends} "
          f"highs up to n={args.highs_max_n} (limit {args.highs_time_limit:.0f}s)")
    try:
        for size in sizes:
            n, J, K = SIZES[size]
            t0 = time.perf_counter()
            inst = generate_instance(GeneratorConfig(n=n, J=J, K=K, seed=args.seed))
            path = workdir / f"{size}.npz"
            save_instance(path, inst)
            gen_s = time.perf_counter() - t0
            del inst
            print(f"# {size}: n={n} J={J} K={K} generated in {gen_s:.1f}s")
            if n <= args.highs_max_n:
                highs = _run_child("highs", path, "highs", args.highs_time_limit)
            else:
                highs = {"highs_status": f"skipped (n > {args.highs_max_n}; ~22 min at 1M x 10 x 100)"}
            for backend in backends:
                row = {"size": size, "n": n, "J": J, "K": K, "backend": backend}
                row.update(_run_child("solve", path, backend, args.time_limit))
                row.update({k: v for k, v in highs.items()})
                if row.get("highs_objective") == row.get("highs_objective") and "highs_objective" in row \
                        and "primal_objective" in row:
                    opt = row["highs_objective"]
                    row["primal_vs_optimum"] = (row["primal_objective"] - opt) / opt
                    row["dual_vs_optimum"] = (row["dual_objective"] - opt) / opt
                if row.get("seconds_to_gap_0_5pct") and row.get("highs_seconds") and \
                        row.get("highs_status") == "Optimal":
                    row["highs_over_ours_0_5pct"] = row["highs_seconds"] / row["seconds_to_gap_0_5pct"]
                results.append(row)
                print(f"#   {backend}: {json.dumps(row)}", flush=True)
    finally:
        for f in workdir.glob("*"):
            f.unlink()
        workdir.rmdir()

    header = ["size", "backend", "t0.5%(s)", "t0.1%(s)", "gap", "viol", "passes", "rss(MB)", "highs(s)",
              "highs/ours", "primal-vs-opt"]
    print()
    print(" | ".join(f"{h:>13}" for h in header))
    for r in results:
        cells = [r["size"], r["backend"], _fmt(r.get("seconds_to_gap_0_5pct")),
                 _fmt(r.get("seconds_to_gap_0_1pct")), _fmt(r.get("gap"), ".2e"), _fmt(r.get("max_violation"), ".2e"),
                 _fmt(r.get("passes"), "d"), _fmt(r.get("peak_rss_mb"), ".0f"),
                 _fmt(r.get("highs_seconds")) if r.get("highs_seconds") is not None else "skipped",
                 _fmt(r.get("highs_over_ours_0_5pct"), ".1f"), _fmt(r.get("primal_vs_optimum"), ".2e")]
        if "error" in r:
            cells[2] = "error: " + r["error"][:60]
        print(" | ".join(f"{c:>13}" for c in cells))
    print("# gap: (dual - primal) / dual of the online rule at the returned prices; viol: largest overshoot "
          "max_k(consumption/b - 1); rss: peak RSS of the solving process (ray: driver only)")
    summary = {"benchmark": "planner", "cpus": os.cpu_count(), "results": [
        {k: r.get(k) for k in ("size", "n", "J", "K", "backend", "seconds_to_gap_0_5pct", "seconds_to_gap_0_1pct",
                               "gap", "max_violation", "peak_rss_mb", "passes", "highs_seconds", "highs_status",
                               "highs_over_ours_0_5pct", "primal_vs_optimum", "dual_vs_optimum", "error")
         if k in r} for r in results]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
