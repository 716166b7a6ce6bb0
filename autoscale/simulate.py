"""Replay traffic traces through the real scaler and policy, against a Ray Serve-like reactive baseline, same run.

    python -m autoscale.simulate [--short] [--plot bench/out/autoscaling-sim.png] [--seed 1]

Queueing model of a replica (`ReplicaModel`): `slots` requests at once (threads or batch slots), each taking
`service_s`; at utilisation rho requests also wait in the replica, by Sakasegawa's M/M/c approximation, and the p99
latency is twice the service time plus ln(100) times the mean wait. Utilisation follows the arrival rate smoothed
over a few seconds and is capped at `max_utilisation`; arrivals beyond that capacity wait in an edge backlog (a
version at zero replicas queues everything), drained first-come first-served. Replicas take `startup_s` (+- jitter) to be ready;
a lower target removes starting replicas first, then running ones. A second violates the SLO when its p99 latency
is over `slo_p99_s`; replica-seconds count starting replicas too (they hold resources).

raygate runs through the real `Scaler` (window, forecaster, `decide`), with the earlier days of the diurnal trace
loaded as its Redis history would be. The baseline copies Ray Serve's default autoscaling: replicas push their
in-flight counts every 10 s, the controller averages the last 30 s and wants ceil(total / target); a higher
count is applied after 30 s of wanting it, a lower one after 600 s.

Prints a table, saves a PNG (traffic, replicas, p99 latency) and ends with one JSON line keyed by trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from autoscale import traces
from autoscale.config import AutoscalingConfig
from autoscale.scaler import AutoscaledVersion, Scaler
from autoscale.window import MetricReport, ReplicaCounts

__all__ = ["ReplicaModel", "SimulatedReplicas", "ServeBaseline", "RunResult", "simulate_trace", "run_all", "main"]

KEY = ("sim", "model", "v1")
_LN100, _LN10, _LN2 = math.log(100), math.log(10), math.log(2)


@dataclass(frozen=True)
class ReplicaModel:
    service_s: float = 0.2  # time one request takes on a replica, without waiting
    slots: int = 4  # requests one replica serves at once (threads, batch slots)
    startup_s: float = 20.0  # replica start-up (process, imports, model load)
    startup_jitter_s: float = 5.0  # start-ups are uniform within startup_s +- this
    max_utilisation: float = 0.97  # beyond this the arrivals queue at the edge
    smoothing_s: float = 3.0  # time constant of the utilisation's response to the arrival rate
    slo_p99_s: float = 1.0  # latency target of the SLO (p99)

    @property
    def capacity(self) -> float:
        """Requests per second one replica completes at full utilisation."""
        return self.slots / self.service_s

    def wait_s(self, rho: float) -> float:
        """Mean queueing delay in a replica at utilisation rho (Sakasegawa's M/M/c approximation)."""
        c = self.slots
        return self.service_s * rho ** (math.sqrt(2 * (c + 1)) - 1) / (c * (1 - rho))

    def replicas_for(self, rate: float, in_flight_per_replica: float) -> int:
        """Replicas that hold `in_flight_per_replica` at `rate` arrivals per second (for the initial count)."""
        return max(1, math.ceil(rate * self.service_s / in_flight_per_replica))


class SimulatedReplicas:
    """Replicas (ready times) and the edge backlog of one version, stepped one second at a time."""

    def __init__(self, model: ReplicaModel, initial: int, rng: np.random.Generator) -> None:
        self.model = model
        self.rng = rng
        self.ready_at: list[float] = [-1.0] * initial
        self.backlog = 0.0
        self.rate = 0.0

    def counts(self, now: float) -> tuple[int, int]:
        ready = sum(1 for t in self.ready_at if t <= now)
        return ready, len(self.ready_at) - ready

    def set_target(self, target: int, now: float) -> None:
        while len(self.ready_at) < target:
            jitter = self.rng.uniform(-self.model.startup_jitter_s, self.model.startup_jitter_s)
            self.ready_at.append(now + max(0.0, self.model.startup_s + jitter))
        if len(self.ready_at) > target:
            self.ready_at.sort()  # running first, latest starters last: those go first
            del self.ready_at[target:]

    def step(self, now: float, arrivals: float) -> dict:
        m = self.model
        ready, starting = self.counts(now)
        self.rate += (1 - math.exp(-1 / m.smoothing_s)) * (arrivals - self.rate)
        capacity = ready * m.capacity
        usable = capacity * m.max_utilisation
        if self.rate > usable:
            self.backlog += self.rate - usable
            served, rho = usable, m.max_utilisation
        else:
            drained = min(self.backlog, usable - self.rate)
            self.backlog -= drained
            served = self.rate + drained
            rho = served / capacity if capacity > 0 else 0.0
        wait_q = m.wait_s(rho)
        backlog_wait = self.backlog / usable if usable > 0 else (math.inf if self.backlog > 0 else 0.0)
        in_flight = served * (m.service_s + wait_q) + self.backlog  # Little's law, plus the edge backlog
        base = m.service_s + backlog_wait
        return {"arrivals": arrivals, "completions": served, "in_flight": in_flight, "queued": self.backlog,
                "p50": base + wait_q * _LN2, "p90": base * 1.5 + wait_q * _LN10,
                "p99": base * 2 + wait_q * _LN100, "ready": ready, "starting": starting}


class ServeBaseline:
    """Ray Serve's default policy: 10 s push, 30 s look-back, 30 s upscale and 600 s downscale delays."""

    def __init__(self, target_ongoing: float, min_replicas: int, max_replicas: int, initial: int,
                 metrics_interval_s: float = 10.0, look_back_s: float = 30.0, upscale_delay_s: float = 30.0,
                 downscale_delay_s: float = 600.0) -> None:
        self.target_ongoing, self.min, self.max = target_ongoing, min_replicas, max_replicas
        self.interval, self.look_back = metrics_interval_s, look_back_s
        self.up_delay, self.down_delay = upscale_delay_s, downscale_delay_s
        self.current = initial
        self.buffer: list[tuple[float, float]] = []  # recorded on the replicas, not yet pushed
        self.pushed: list[tuple[float, float]] = []  # what the controller has
        self.last_push = 0.0
        self.counter = 0.0  # seconds wanting up (> 0) or down (< 0)

    def tick(self, now: float, in_flight: float) -> int:
        self.buffer.append((now, in_flight))
        if now - self.last_push >= self.interval:
            self.pushed += self.buffer
            self.buffer, self.last_push = [], now
            self.pushed = [(t, v) for t, v in self.pushed if t >= now - self.look_back]
        recent = [v for t, v in self.pushed if t >= now - self.look_back]
        if not recent:
            return self.current
        desired = min(self.max, max(self.min, math.ceil(sum(recent) / len(recent) / self.target_ongoing)))
        if desired > self.current:
            self.counter = max(self.counter, 0) + 1
            if self.counter >= self.up_delay:
                self.current, self.counter = desired, 0
        elif desired < self.current:
            self.counter = min(self.counter, 0) - 1
            if -self.counter >= self.down_delay:
                self.current, self.counter = desired, 0
        else:
            self.counter = 0
        return self.current


class _Source:
    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self.counts = ReplicaCounts()
        self.reports: list[MetricReport] = []

    def autoscaled_versions(self):
        return {KEY: AutoscaledVersion(self.config, self.counts)}

    def poll_reports(self):
        reports, self.reports = self.reports, []
        return reports


class _Sink:
    def __init__(self, replicas: SimulatedReplicas) -> None:
        self.replicas, self.now = replicas, 0.0

    def set_autoscale_target(self, app, deployment, version, target, reason) -> None:
        self.replicas.set_target(target, self.now)


class _MemoryHistory:
    """Stands for the Redis history: earlier periods' buckets."""

    def __init__(self, buckets: list[tuple[int, float]]) -> None:
        self.buckets, self.max_buckets = buckets, 10_000

    def load(self, key, bucket_s):
        return self.buckets

    def append(self, key, buckets, bucket_s):
        return 0

    def load_lead_time(self, key):
        return None

    def save_lead_time(self, key, seconds):
        pass


@dataclass
class RunResult:
    slo_violation_s: int
    replica_s: float
    reversals_per_hour: float
    series: dict = field(default_factory=dict, repr=False)  # per second: replicas, p99

    def figures(self) -> dict:
        return {"slo_violation_s": self.slo_violation_s, "replica_s": round(self.replica_s, 1),
                "reversals_per_hour": round(self.reversals_per_hour, 2)}


def _reversals(targets: list[int]) -> int:
    count, direction, last = 0, 0, targets[0] if targets else 0
    for value in targets[1:]:
        step = (value > last) - (value < last)
        if step and direction and step != direction:
            count += 1
        direction, last = step or direction, value
    return count


def simulate_trace(rates: np.ndarray, config: AutoscalingConfig, model: ReplicaModel, policy: str, seed: int = 0,
                   history: np.ndarray | None = None, t0: float = 0.0) -> RunResult:
    """Run one trace (arrival rate per second) through `policy` ("raygate" or "baseline")."""
    rng = np.random.default_rng(seed)
    arrivals = rng.poisson(rates).astype(float)
    initial = max(config.min_replicas, model.replicas_for(rates[0], config.target_ongoing_requests))
    replicas = SimulatedReplicas(model, initial, np.random.default_rng(seed + 1))
    if policy == "raygate":
        source, sink = _Source(config), _Sink(replicas)
        buckets = []
        if history is not None:
            b = config.forecast_bucket_s
            start = t0 - len(history)
            n = int(len(history) // b)
            buckets = [(math.floor((start + i * b) / b), float(history[int(i * b):int((i + 1) * b)].mean()))
                       for i in range(n)]
        scaler = Scaler(source, sink, _MemoryHistory(buckets), clock=lambda: t0, retention_s=120)
        source.counts = ReplicaCounts(ready=initial)  # the policy starts from the replicas that run
    else:
        baseline = ServeBaseline(config.target_ongoing_requests, config.min_replicas, config.max_replicas, initial)
    targets, p99s, counts = [], [], []
    violations, replica_s = 0, 0.0
    for i, a in enumerate(arrivals):
        now = t0 + i
        out = replicas.step(now, a)
        violations += out["p99"] > model.slo_p99_s
        replica_s += out["ready"] + out["starting"]
        p99s.append(min(out["p99"], 60.0))
        counts.append(out["ready"])
        if policy == "raygate":
            source.counts = ReplicaCounts(out["ready"], out["starting"])
            source.reports.append(MetricReport(*KEY, reporter="edge", role="edge", second=int(now),
                                               arrivals=int(a), completions=int(round(out["completions"])),
                                               in_flight=out["in_flight"], queued=out["queued"],
                                               latency_p50_s=out["p50"], latency_p90_s=out["p90"],
                                               latency_p99_s=out["p99"]))
            sink.now = now + 1
            scaler.tick(now + 1.01)
            target = len(replicas.ready_at)
        else:
            target = baseline.tick(now + 1, out["in_flight"])
            replicas.set_target(target, now + 1)
        targets.append(target)
    hours = len(arrivals) / 3600
    return RunResult(int(violations), replica_s, _reversals(targets) / hours,
                     {"target": targets, "ready": counts, "p99": p99s})


def _config(period_s: float) -> AutoscalingConfig:
    return AutoscalingConfig(min_replicas=1, max_replicas=200, target_ongoing_requests=2.5,
                             season_length_s=period_s, refit_interval_s=3600.0)


def run_all(short: bool = False, seed: int = 1) -> tuple[dict, dict]:
    """Every trace through both policies; returns (figures by trace, per-second series for the plot)."""
    model = ReplicaModel()
    period = 3 * 3600.0 if short else 86_400.0
    cases = {
        "diurnal": (traces.diurnal(seed, period), traces.diurnal_history(2, seed + 100, period), period),
        "flash_crowd": (traces.flash_crowd(1800 if short else 3600, start_s=600), None, 86_400.0),
        "ramp": (traces.ramp(1800 if short else 7200, ramp_s=1200 if short else 5400), None, 86_400.0),
        "oscillation": (traces.oscillation(3600), None, 86_400.0),  # an hour: reversals are per hour
    }
    figures, series = {}, {}
    for name, (rates, history, season) in cases.items():
        t0 = 10 * season  # a whole number of seasons: the phase of the history lines up
        runs = {policy: simulate_trace(rates, _config(season), model, policy, seed, history, t0)
                for policy in ("raygate", "baseline")}
        figures[name] = {policy: run.figures() for policy, run in runs.items()}
        series[name] = {"rates": rates, **{policy: run.series for policy, run in runs.items()}}
    return figures, series


def _plot(series: dict, path: str, slo: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(series), figsize=(5 * len(series), 9), sharex="col")
    for col, (name, data) in enumerate(series.items()):
        hours = np.arange(len(data["rates"])) / 3600
        axes[0, col].plot(hours, data["rates"], color="grey", lw=0.6)
        axes[0, col].set_title(name)
        for policy, colour in (("baseline", "tab:orange"), ("raygate", "tab:blue")):
            axes[1, col].plot(hours, data[policy]["ready"], color=colour, lw=0.8, label=policy)
            axes[2, col].plot(hours, data[policy]["p99"], color=colour, lw=0.6, label=policy)
        axes[2, col].axhline(slo, color="red", lw=0.6, ls="--")
        axes[2, col].set_yscale("log")
        axes[2, col].set_xlabel("hours")
    axes[0, 0].set_ylabel("arrivals / s")
    axes[1, 0].set_ylabel("ready replicas")
    axes[2, 0].set_ylabel("p99 latency (s), SLO dashed")
    axes[1, 0].legend(loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="shorter traces (a 3 h day), for tests and a quick look")
    parser.add_argument("--plot", default="bench/out/autoscaling-sim.png",
                        help="where to save the PNG ('' for none); bench/out/ is git-ignored")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    figures, series = run_all(args.short, args.seed)
    print(f"{'trace':<12} {'policy':<9} {'SLO viol. s':>11} {'replica-s':>11} {'reversals/h':>11}")
    for name, runs in figures.items():
        for policy, f in runs.items():
            print(f"{name:<12} {policy:<9} {f['slo_violation_s']:>11} {f['replica_s']:>11.0f} "
                  f"{f['reversals_per_hour']:>11.2f}")
        r, b = runs["raygate"], runs["baseline"]
        fewer = 1 - r["slo_violation_s"] / b["slo_violation_s"] if b["slo_violation_s"] else 0.0
        print(f"{'':<12} {'ratio':<9} {fewer:>10.0%}- {r['replica_s'] / b['replica_s']:>10.2f}x")
    if args.plot:
        _plot(series, args.plot, ReplicaModel().slo_p99_s)
        print(f"plot: {args.plot}")
    print(f"took {time.perf_counter() - started:.1f} s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
