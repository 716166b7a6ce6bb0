"""A synthetic campaign from a generated instance, the baselines, and an in-process replay of the live path.

Used by `bench/allocation.py` and the nearline tests. The live replay drives the real pieces (the allocator's user
code, budget leases, the sample stream, the nearline loop, the price store, all on a real Redis) on a simulated
clock, so a day compressed into minutes runs as fast as the decisions and solves allow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from planner.allocation.decide import consumption_unit, decide, dmd_step
from planner.allocation.forecast import ArrivalForecast
from planner.allocation.nearline import NearlineLoop
from planner.allocation.pacing import per_request_rates, remaining_requests
from planner.allocation.samples import SampleStore
from planner.allocation.scenario import ScenarioSpec
from planner.allocation.service import Allocator
from planner.instance import Instance

__all__ = [
    "LiveResult",
    "SimClock",
    "arrival_rate",
    "arrival_times",
    "choose_dmd_step",
    "history_counts",
    "replay_baseline",
    "replay_dmd_forecast",
    "replay_live",
    "request_of",
    "sample_of",
    "scenario_from_instance",
    "seed_history",
]

USAGE_NAMES = ("spend", "count")


def _usage_names(R: int) -> tuple[str, ...]:
    return USAGE_NAMES[:R] + tuple(f"usage{r}" for r in range(2, R))


def scenario_from_instance(inst: Instance, name: str = "campaign", **knobs) -> ScenarioSpec:
    """The scenario whose constraints are the instance's A (each constraint one usage type, 0/1 weights)."""
    usage = _usage_names(inst.R)
    constraints = []
    for k in range(inst.K):
        rows = [r for r in range(inst.R) if inst.A[r, :, k].any()]
        if len(rows) != 1 or not np.isin(inst.A[rows[0], :, k], (0.0, 1.0)).all():
            raise ValueError(f"constraint {inst.cname[k]} is not one usage type with 0/1 weights")
        members = np.flatnonzero(inst.A[rows[0], :, k])
        items = None if members.size == inst.P else [f"item_{p}" for p in members]
        constraints.append({"name": inst.cname[k], "capacity": float(inst.b[k]), "usage": usage[rows[0]],
                            "items": items})
    return ScenarioSpec.model_validate({"name": name, "route_prefix": f"/allocate/{name}",
                                        "usage_types": usage, "constraints": constraints, **knobs})


def arrival_rate(t: np.ndarray, horizon_s: float, spike: tuple[float, float, float] | None = None) -> np.ndarray:
    """Relative arrival rate: one diurnal cycle over the horizon (trough at the start), times a spike
    (start share, width share, factor) if given."""
    rate = 1.0 + 0.7 * np.sin(2 * np.pi * t / horizon_s - np.pi / 2)
    if spike is not None:
        at, width, factor = spike
        rate = rate * np.where((t >= at * horizon_s) & (t < (at + width) * horizon_s), factor, 1.0)
    return rate


def arrival_times(n: int, horizon_s: float, seed: int = 0, spike=(0.55, 0.04, 3.0), noise: float = 0.15,
                  grid: int = 2000, shape: str = "diurnal") -> np.ndarray:
    """n sorted arrival times in [0, horizon_s): the diurnal rate with lognormal noise per grid cell and a spike;
    `shape="flat"` spaces them evenly instead (a constant rate: the latency "at the mean rate")."""
    if shape == "flat":
        return (np.arange(n) + 0.5) * horizon_s / n
    rng = np.random.default_rng(seed)
    cells = (np.arange(grid) + 0.5) * horizon_s / grid
    weight = arrival_rate(cells, horizon_s, spike) * rng.lognormal(0.0, noise, grid)
    counts = rng.multinomial(n, weight / weight.sum())
    starts = np.repeat(np.arange(grid) * horizon_s / grid, counts)
    return np.sort(starts + rng.random(n) * horizon_s / grid)


def request_of(inst: Instance, i: int, usage_names) -> dict:
    """User i's request body, as a client would send it."""
    js = np.flatnonzero(inst.mask[i])
    return {"user": f"u{i}", "candidates": [
        {"item": f"item_{int(inst.item[i, j])}", "value": float(inst.c[i, j]),
         "usage": {name: float(inst.w[i, j, r]) for r, name in enumerate(usage_names)}} for j in js]}


def sample_of(inst: Instance, i: int, t: float) -> dict:
    """User i as a sampled-decision record (what the allocator writes to the stream)."""
    js = np.flatnonzero(inst.mask[i])
    return {"t": t, "items": [f"item_{int(inst.item[i, j])}" for j in js], "value": inst.c[i, js].tolist(),
            "usage": inst.w[i, js].tolist()}


def _consumption(inst: Instance, i: int) -> np.ndarray:
    js = np.flatnonzero(inst.mask[i])
    return js, np.einsum("jr,jrk->jk", inst.w[i, js], inst.A[:, inst.item[i, js], :].transpose(1, 0, 2))


def replay_baseline(inst: Instance, order, rule: str, step: float = 0.0, value_scale: float = 1.0,
                    total_requests: int | None = None, repace=None) -> tuple[float, np.ndarray]:
    """Serve users in `order` with a hard stop; rule: "fcfs" (best value that still fits), "greedy" (best value per
    share of the budgets it uses, if it fits; no prices) or "dmd" (dual mirror descent from zero prices with the
    per-request budget rate b / total_requests and relative step `step`; `repace(n, remaining)`, if given, is asked
    before the n-th request and may return a new rate). Returns (value, consumption)."""
    remaining = inst.b.astype(np.float64).copy()
    lam = np.zeros(inst.K)
    unit = np.zeros(inst.K)
    rate = inst.b / float(total_requests or len(order))
    value = 0.0
    for n, i in enumerate(order):
        if repace is not None and (fresh := repace(n, remaining)) is not None:
            rate = fresh
        js, m = _consumption(inst, i)
        c = inst.c[i, js]
        if rule == "fcfs":
            d = decide(c, m, np.zeros(inst.K), remaining)
        elif rule == "greedy":
            density = c / np.maximum((m / inst.b).sum(axis=1), 1e-12)
            fits = np.all(m <= remaining + 1e-12, axis=1)
            j = int(np.argmax(np.where(fits & (c > 0), density, -np.inf)))
            d = decide(np.where(np.arange(len(c)) == j, c, 0.0), m, np.zeros(inst.K), remaining) if fits[j] else None
        else:
            d = decide(c, m, lam, remaining)
            unit = consumption_unit(unit, d.consumption)
            lam = dmd_step(lam, d.consumption, rate, step, value_scale, unit)
        if d is not None and d.index >= 0:
            remaining -= d.consumption
            value += float(c[d.index])
    return value, inst.b - remaining


def replay_dmd_forecast(inst: Instance, times: np.ndarray, scenario: ScenarioSpec, step: float, value_scale: float,
                        *, start: float, history: dict[int, int]) -> tuple[float, np.ndarray]:
    """DMD as a user would run it, without the true request count: every `cycle_s` its per-request rate is re-paced
    to b(t) / N(t), N(t) from the loop's own forecast (the same ArrivalForecast and forecast_margin on the same
    history and the arrivals so far). Users arrive at start + times; returns (value, consumption)."""
    order = np.argsort(times, kind="stable")
    at = start + np.asarray(times, dtype=np.float64)[order]
    end = start + scenario.horizon_s
    forecast = ArrivalForecast(scenario.bucket_s, scenario.season_buckets, scenario.refit_every)
    counts = dict(history)
    state = {"next": start, "seen": 0}

    def repace(n: int, remaining: np.ndarray):
        now = float(at[n])
        if now < state["next"]:
            return None
        for b, c in zip(*np.unique((at[state["seen"]:n] // scenario.bucket_s).astype(int), return_counts=True)):
            counts[int(b)] = counts.get(int(b), 0) + int(c)
        state["next"], state["seen"] = now + scenario.cycle_s, n
        forecast.update(counts, now)
        N = remaining_requests(forecast.remaining(now, end), n / max(now - start, 1e-9), end - now,
                               scenario.forecast_margin)
        return per_request_rates(inst.b, inst.b - remaining, N)

    return replay_baseline(inst, order, "dmd", step, value_scale, repace=repace)


def choose_dmd_step(pilot: Instance, value_scale: float, steps=(0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)) -> float:
    """The best DMD step on a pilot population (not the campaign's users): a well-chosen step, fairly."""
    order = np.arange(pilot.n)
    return max(steps, key=lambda s: replay_baseline(pilot, order, "dmd", s, value_scale)[0])


class SimClock:
    """A settable clock (simulated unix seconds)."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class LiveResult:
    """What the live path achieved on a campaign."""

    value: float = 0.0
    consumption: np.ndarray | None = None  # (K,) reported in Redis
    decision_s: list = field(default_factory=list)  # wall seconds of each decision
    decision_cpu_s: list = field(default_factory=list)  # CPU seconds of each decision (this thread)
    price_lag_s: list = field(default_factory=list)  # wall seconds from a cycle's data to prices in the replicas
    cycles: list = field(default_factory=list)  # CycleReport of every cycle
    stale_answers: int = 0


def replay_live(inst: Instance, times: np.ndarray, scenario: ScenarioSpec, client, *, start: float,
                replicas: int = 2, namespace: str = "raygate", sync_every_s: float | None = None) -> LiveResult:
    """Serve user i at start + times[i] through `replicas` allocators in turn; cycle the nearline loop every
    `cycle_s` and the replicas' syncs every `sync_interval_s` of simulated time."""
    clock = SimClock(start)
    allocs = [Allocator(scenario, client=client, namespace=namespace, replica_id=f"replica-{r}", clock=clock,
                        background=False, seed=r) for r in range(replicas)]
    loop = NearlineLoop(scenario, client, namespace=namespace, clock=clock)
    usage = scenario.usage_types
    out = LiveResult()
    sync_every = sync_every_s or scenario.sync_interval_s
    next_sync, next_cycle = start, start

    def run_cycle():
        t0 = time.perf_counter()
        report = loop.cycle()
        out.cycles.append(report)
        if report.published is not None and report.published.accepted:
            for a in allocs:
                a.reader.refresh()
            out.price_lag_s.append(time.perf_counter() - t0)

    for a in allocs:
        a.sync()
    for n, i in enumerate(np.argsort(times, kind="stable")):
        clock.t = start + float(times[i])
        if clock.t >= next_sync:
            for a in allocs:
                a.sync()
            next_sync = clock.t + sync_every
        if clock.t >= next_cycle:
            run_cycle()
            next_cycle = clock.t + scenario.cycle_s
        body = request_of(inst, int(i), usage)
        t0, c0 = time.perf_counter(), time.thread_time()
        alloc = allocs[n % replicas]
        answer = alloc(body)
        out.decision_s.append(time.perf_counter() - t0)
        out.decision_cpu_s.append(time.thread_time() - c0)
        if alloc.wants_sync:  # a lease ran short: the sync thread wakes at once (ms, not a simulated tick)
            alloc.sync()
        out.stale_answers += answer["stale"]
        if answer["item"] is not None:
            j = next(k for k, cand in enumerate(body["candidates"]) if cand["item"] == answer["item"])
            out.value += body["candidates"][j]["value"]
    for a in allocs:
        a.close()
    out.consumption = loop.budget.used(scenario.constraint_names)
    return out


def history_counts(scenario: ScenarioSpec, start: float, n_per_season: int, seasons: int = 2, seed: int = 1,
                   shape: str = "diurnal") -> dict[int, int]:
    """Arrival counts per bucket of the `seasons` seasons before `start` (no spike; evenly spaced for
    `shape="flat"`, so the forecast expects the campaign's constant rate)."""
    counts: dict[int, int] = {}
    for s in range(seasons, 0, -1):
        t = arrival_times(n_per_season, scenario.season_s, seed=seed + s, spike=None, shape=shape)
        buckets = ((start - s * scenario.season_s + t) // scenario.bucket_s).astype(int)
        for b, c in zip(*np.unique(buckets, return_counts=True)):
            counts[int(b)] = counts.get(int(b), 0) + int(c)
    return counts


def seed_history(client, scenario: ScenarioSpec, prior: Instance, start: float, seasons: int = 2,
                 namespace: str = "raygate", n_per_season: int | None = None, seed: int = 1,
                 shape: str = "diurnal") -> None:
    """Earlier seasons' traffic: arrival counts per bucket (`history_counts`) and the prior users as sampled
    requests."""
    from planner.allocation.budget import BudgetStore

    rng = np.random.default_rng(seed)
    counts = history_counts(scenario, start, n_per_season or prior.n, seasons, seed, shape)
    BudgetStore(client, scenario.name, namespace).add_arrivals(counts)
    order = rng.permutation(prior.n)
    SampleStore(client, scenario.name, namespace).append(
        [sample_of(prior, int(i), start - 1.0) for i in order])
