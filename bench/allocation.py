"""Benchmark of online allocation end to end: a synthetic campaign replayed through the live path.

A generated instance is split into yesterday's users (the planner's prior sample and the arrival history) and the
campaign's users, who arrive over the horizon with a diurnal rate, noise and a surprise spike (3x for 4% of the
horizon), a day compressed into `--horizon` simulated seconds. Modes:
- `inproc` (default): the allocator's user code called directly (two replicas sharing the budget through leases),
  the nearline loop on the simulated clock, a real Redis this script starts and stops;
- `http`: the campaign in real time over HTTP against a raygate this script starts (bench/_allocation_http.py):
  the scenario's allocator app and nearline planner actor on a local Ray, the shipped gateway settings; decision
  latency is measured at the client; the price lag is, per prices version, the youngest age an answer showed
  (snapshot -> solve -> publish -> replica -> first answer). Default: 500 req/s for 60 s (30,000 users); `--users`
  with `--rate` sets the horizon (users / rate), `--horizon` with `--rate` the users.
Printed: realised value against the hindsight LP optimum (HiGHS on the whole campaign), first come first served,
greedy without prices and dual mirror descent alone (per-request dual steps from zero prices, no solver, step chosen
on yesterday's users) three ways: told the campaign's true request count (the strong anchor, `dmd_vs_hindsight`),
with yesterday's count (`dmd_yesterday_vs_hindsight`; the same as the true count unless `--history-level` says
otherwise), and re-paced every cycle on the loop's own forecast (`dmd_forecast_vs_hindsight`: DMD as a user would
run it); each constraint's final use against capacity; decision p50/p99 (wall time of the call);
the price refresh lag (wall seconds from a cycle's data snapshot to new prices in every replica); over http, the
CPU time of each process role over the campaign (bench/_cpu_share.py). `--shape flat` spaces the same users evenly
(a constant rate; the default keeps the diurnal day and its spike). Last line: JSON.

    .venv/bin/python bench/allocation.py                  # 40k campaign users, K = 12
    .venv/bin/python bench/allocation.py --quick          # 8k users
    .venv/bin/python bench/allocation.py --mode http                  # 500 req/s for 60 s
    .venv/bin/python bench/allocation.py --mode http --users 10000    # 500 req/s for 20 s
    .venv/bin/python bench/allocation.py --mode http --shape flat     # 500 req/s, evenly spaced
    .venv/bin/python bench/allocation.py --spike 1 --history-level 0.85   # no spike, today 18% busier
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# bench/planner.py would shadow the planner package: drop this script's folder from the path, put the repo first.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def build(args):
    from planner.generate import GeneratorConfig, generate_instance
    from planner.instance import subset_users

    full = generate_instance(GeneratorConfig(n=args.users + args.prior, J=args.J, K=args.K, seed=args.seed,
                                             tightness=(0.2, 0.5)))
    rows = np.random.default_rng(args.seed).permutation(full.n)
    prior = subset_users(full, np.sort(rows[:args.prior]))
    campaign = subset_users(full, np.sort(rows[args.prior:]))
    campaign = campaign.with_capacities(full.b * campaign.n / full.n)
    prior = prior.with_capacities(full.b * prior.n / full.n)
    return prior, campaign


def run_inproc(args, prior, campaign, scenario, times, start):
    import redis

    from deploy.embedded import EmbeddedRedis
    from planner.allocation.campaign import replay_live, seed_history

    server = EmbeddedRedis(data_dir=Path(tempfile.mkdtemp(prefix="alloc-bench-")), appendonly=False).start()
    client = redis.Redis(host=server.host, port=server.port)
    try:
        seed_history(client, scenario, prior, start, seasons=2, n_per_season=history_n(args, campaign),
                     shape=args.shape)
        return replay_live(campaign, times, scenario, client, start=start, replicas=args.replicas)
    finally:
        client.close()
        server.stop()


def history_n(args, campaign) -> int:
    """Requests per season of the arrival history ("yesterday's count")."""
    return int(round(campaign.n * args.history_level))


def _figure(x, digits: int = 4) -> float | None:
    """A JSON-safe figure: None where it could not be measured (NaN is not JSON)."""
    return round(float(x), digits) if np.isfinite(x) else None


def cycle_counts(reports) -> dict:
    """Cycles, published, refused and failed among the in-process replay's cycle reports."""
    return {"cycles": len(reports),
            "published": sum(1 for c in reports if c.published is not None and c.published.accepted),
            "refused": sum(1 for c in reports if c.published is not None and not c.published.accepted),
            "failed": sum(1 for c in reports if c.error)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=None, help="campaign users (requests); default 40,000 in-process, "
                   "rate x horizon over http")
    p.add_argument("--prior", type=int, default=20_000, help="yesterday's users (planner's prior sample)")
    p.add_argument("--J", type=int, default=8)
    p.add_argument("--K", type=int, default=12)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--horizon", type=float, default=None, help="campaign length (s): simulated in-process "
                   "(default 600), real over http (default 60, or users / rate)")
    p.add_argument("--cycle", type=float, default=10.0, help="nearline cycle (simulated s)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--sample-rate", type=float, default=0.5)
    p.add_argument("--sample-size", type=int, default=20_000)
    p.add_argument("--mode", choices=("inproc", "http"), default="inproc")
    p.add_argument("--quick", action="store_true", help="8k users, 4k prior")
    p.add_argument("--rate", type=float, default=500.0, help="http: mean requests/s")
    p.add_argument("--in-flight", type=int, default=256, help="http: most requests outstanding at the client")
    p.add_argument("--shape", choices=("diurnal", "flat"), default="diurnal", help="arrivals: the diurnal day "
                   "with noise and a 3x spike (default), or the same users evenly spaced (a constant rate)")
    p.add_argument("--spike", type=float, default=3.0, help="the surprise spike's rate factor, for 4%% of the "
                   "horizon from 55%% of it (1: none); the campaign's request count stays --users")
    p.add_argument("--history-level", type=float, default=1.0, help="yesterday's request count (the arrival "
                   "history) as a share of today's: 1 means the same count, 0.85 today 18%% busier")
    p.add_argument("--warmup", type=float, default=25.0, help="http: seconds for the platform before the campaign")
    p.add_argument("--trace", default=None, help="http: write every prices version's plan (JSON lines) here")
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.prior = 8_000, 4_000
    if args.mode == "http":
        if args.users is None:
            args.horizon = args.horizon or 60.0
            args.users = int(round(args.rate * args.horizon))
        else:
            args.horizon = args.users / args.rate
        args.cycle = min(args.cycle, max(1.0, args.horizon / 40))
    else:
        args.users, args.horizon = args.users or 40_000, args.horizon or 600.0
    load_before = os.getloadavg()[0]

    from planner.allocation.campaign import (
        arrival_times,
        choose_dmd_step,
        history_counts,
        replay_baseline,
        replay_dmd_forecast,
        scenario_from_instance,
    )
    from planner.highs import solve_exact

    prior, campaign = build(args)
    horizon = args.horizon
    scenario = scenario_from_instance(campaign, name="bench", horizon_s=horizon, cycle_s=args.cycle,
                                      sample_rate=args.sample_rate, season_s=horizon, season_buckets=48,
                                      starts_at=1_000_000.0, solver_sample_size=args.sample_size, refit_every=20)
    spike = (0.55, 0.04, args.spike) if args.spike != 1.0 else None
    times = arrival_times(campaign.n, horizon, seed=args.seed + 7, shape=args.shape, spike=spike)
    order = np.argsort(times, kind="stable")
    print(f"campaign: {campaign.n} users x J={campaign.J}, K={campaign.K} constraints, horizon {horizon:g} s "
          f"(simulated), cycle {args.cycle:g} s, {args.replicas} replicas, sample rate {args.sample_rate}")

    t0 = time.perf_counter()
    exact = solve_exact(campaign)
    print(f"hindsight LP (HiGHS): {exact.objective:.2f} ({exact.status}, {exact.seconds:.1f} s)")
    fcfs, _ = replay_baseline(campaign, order, "fcfs")
    greedy, _ = replay_baseline(campaign, order, "greedy")
    value_scale = float(np.mean(np.where(prior.mask, prior.c, 0).max(axis=1)))
    step = choose_dmd_step(prior, value_scale)
    dmd, dmd_use = replay_baseline(campaign, order, "dmd", step, value_scale, total_requests=campaign.n)
    dmd_yesterday, _ = replay_baseline(campaign, order, "dmd", step, value_scale,
                                       total_requests=history_n(args, campaign))
    history = history_counts(scenario, 1_000_000.0, history_n(args, campaign), shape=args.shape)
    dmd_forecast, _ = replay_dmd_forecast(campaign, times, scenario, step, value_scale, start=1_000_000.0,
                                          history=history)
    print(f"baselines in {time.perf_counter() - t0:.1f} s (DMD step {step:g}, chosen on yesterday's users)")

    t0 = time.perf_counter()
    if args.mode == "http":
        from bench._allocation_http import run_http

        knobs = scenario.model_dump(exclude={"name", "route_prefix", "constraints", "usage_types", "starts_at"})
        knobs.update(num_replicas=args.replicas)
        args.history_n = history_n(args, campaign)
        live, scenario = run_http(args, prior, campaign, knobs, times)
        print(f"http: {live.sent} sent at {live.sent / args.horizon:.0f} req/s mean, errors {live.errors or 'none'}")
        counts = live.planner
    else:
        live = run_inproc(args, prior, campaign, scenario, times, start=1_000_000.0)
        counts = cycle_counts(live.cycles)
    wall = time.perf_counter() - t0
    print(f"live replay: {wall:.1f} s wall, {counts['cycles']} cycles, {counts['published']} published, "
          f"{counts['refused']} refused, {counts['failed']} without a solve, {live.stale_answers} stale answers")
    for reason in sorted({c.published.reason for c in live.cycles if c.published is not None
                          and not c.published.accepted})[:3]:
        print(f"  refused: {reason}")

    ref = exact.objective
    rows = [("raygate (nearline + leases + DMD step)", live.value),
            ("DMD alone, told the true request count", dmd),
            ("DMD alone, count = yesterday's", dmd_yesterday),
            ("DMD alone, re-paced on the loop's forecast", dmd_forecast),
            ("greedy without prices", greedy), ("first come, first served", fcfs)]
    print(f"\n{'policy':44s} {'value':>12s} {'vs hindsight':>13s}")
    for name, value in rows:
        print(f"{name:44s} {value:12.2f} {value / ref:13.4f}")
    use = live.consumption / campaign.b
    print(f"\n{'constraint':22s} {'capacity':>12s} {'used':>12s} {'use':>8s} {'DMD use':>8s}")
    for k in range(campaign.K):
        print(f"{campaign.cname[k]:22s} {campaign.b[k]:12.2f} {live.consumption[k]:12.2f} {use[k]:8.4f} "
              f"{dmd_use[k] / campaign.b[k]:8.4f}")
    dec = np.asarray(live.decision_s or [np.nan]) * 1e3
    lag = np.asarray(live.price_lag_s) if live.price_lag_s else np.array([np.nan])
    cpu = np.asarray(live.decision_cpu_s or [np.nan]) * 1e3
    where = "each request at the client, over HTTP" if args.mode == "http" else "the in-process call"
    print(f"\ndecision ms: p50 {np.percentile(dec, 50):.3f}  p99 {np.percentile(dec, 99):.3f}  "
          f"max {dec.max():.2f} (wall time of {where}: parse, calibrate, decide, lease, dual step)")
    print(f"decision CPU ms: p50 {np.percentile(cpu, 50):.3f}  p99 {np.percentile(cpu, 99):.3f} (this thread's CPU "
          f"time: what the wall figures show without other processes' load; load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"price refresh lag s: median {np.median(lag):.3f}  max {np.max(lag):.3f} (solve + publish + reader refresh)")
    errors = sum(getattr(live, "errors", {}).values())
    figures = {
        "value_vs_hindsight": round(live.value / ref, 5), "fcfs_vs_hindsight": round(fcfs / ref, 5),
        "greedy_vs_hindsight": round(greedy / ref, 5), "dmd_vs_hindsight": round(dmd / ref, 5),
        "dmd_yesterday_vs_hindsight": round(dmd_yesterday / ref, 5),
        "dmd_forecast_vs_hindsight": round(dmd_forecast / ref, 5),
        "max_overspend": round(float(max(0.0, np.max(use - 1.0))), 6),
        "decision_p50_ms": _figure(np.percentile(dec, 50)),
        "decision_p99_ms": _figure(np.percentile(dec, 99)), "price_lag_s": _figure(np.median(lag)),
        "decision_cpu_p99_ms": None if np.isnan(cpu).all() else round(float(np.nanpercentile(cpu, 99)), 4),
        "price_lag_max_s": _figure(np.max(lag)), "hindsight": round(ref, 3), "users": campaign.n,
        "K": campaign.K, "replicas": args.replicas, "horizon_s": args.horizon, "cycle_s": args.cycle,
        "rate": round(campaign.n / args.horizon, 1), "cycles": counts["cycles"], "published": counts["published"],
        "errors": errors, "stale_answers": live.stale_answers, "mode": args.mode, "spike": args.spike,
        "history_level": args.history_level, "seed": args.seed,
        "load_average_before": round(load_before, 1), "load_average": round(os.getloadavg()[0], 1),
    }
    if args.mode == "http":
        from bench._allocation_http import steady_p99_ms

        figures["price_age_median_s"] = _figure(np.median(live.price_age_s or [np.nan]))
        figures["decision_p99_steady_ms"] = _figure(steady_p99_ms(live, args.rate))
        figures["peak_rate"] = int(np.bincount(np.floor(live.sent_s).astype(int) - int(np.floor(min(live.sent_s))))
                                   .max()) if live.sent_s else None
        print(f"decision p99 in seconds at <= 1.25 x the mean rate: {figures['decision_p99_steady_ms']} ms "
              f"(busiest second: {figures['peak_rate']} requests)")
        from bench._cpu_share import format_attribution

        print(format_attribution(live.cpu, live.wall_s))
        figures["shape"] = args.shape
        figures["cpu_cores"] = {role: share for role, _, share in live.cpu[:8]}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
