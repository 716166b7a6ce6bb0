"""The nearline loop of one scenario: each cycle, plan the prices for the traffic still to come and publish them.

One cycle (`NearlineLoop.cycle`, driven by an injected clock; no Ray, the solve is a plain function):
1. read the sampled decisions added to the stream since the last cycle (the newest `solver_sample_size` are kept),
   the real consumption per constraint and the arrivals per bucket (both written by the replicas' lease syncs);
2. update the arrival forecast (refit now and then, cheap update otherwise) and get N(t), the requests expected
   before the horizon ends (without a forecast: the rate seen so far, extrapolated);
3. correct each constraint by how its real consumption compared with what the published prices planned for the
   requests served since (ratio of the totals, once enough requests were served);
4. pace: capacities b_k(t) * |S| / N(t) * correction_k on the sample S;
5. solve the dual on the sample, warm-started from the last prices;
6. publish through the price store only if the certificate passes the scenario's tolerances, with the plan the
   replicas need for their per-request correction (per-request budget rates, a value scale).
A cycle never raises: a failing stage is logged and reported, and the loop goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from planner.allocation.budget import BudgetStore
from planner.allocation.decide import ConstraintMatrix
from planner.allocation.forecast import ArrivalForecast
from planner.allocation.pacing import (
    paced_capacities,
    per_request_rates,
    remaining_requests,
    update_correction,
)
from planner.allocation.samples import SampleStore, SampleWindow
from planner.allocation.scenario import ScenarioSpec
from planner.instance import Instance
from planner.solver import Solution, SolverConfig
from planner.store import DualPriceStore, Published, price_certificate, scenario_tag

__all__ = ["CycleReport", "NearlineLoop", "default_solve"]

log = logging.getLogger("planner.allocation.nearline")

SolveFn = Callable[[Instance, np.ndarray, "np.ndarray | None"], Solution]


def default_solve(backend: str = "numpy", gap_tol: float = 1e-3, violation_tol: float = 1e-3,
                  time_limit_s: float = 30.0) -> SolveFn:
    """The solver through its public API: a kernel for the sample instance, warm-started from the last prices."""

    def run(inst: Instance, b: np.ndarray, initial: np.ndarray | None) -> Solution:
        from planner.backends import make_kernel
        from planner.solver import WarmStart, solve

        cfg = SolverConfig(gap_tol=gap_tol, violation_tol=violation_tol, time_limit_s=time_limit_s)
        kernel = make_kernel(backend, inst)
        start = None
        if initial is not None:  # consecutive cycles differ little: begin at the last prices, one stage cooler
            zero = kernel.evaluate(np.zeros(inst.K), 0.0)
            start = WarmStart(lam=np.maximum(np.asarray(initial, dtype=np.float64), 0.0),
                              greedy_value=zero.hard_value, value_per_user=zero.hard_value / max(zero.chosen, 1),
                              tau=cfg.tau_start * cfg.tau_factor)
        try:
            return solve(kernel, b, cfg, start=start)
        finally:
            kernel.close()

    return run


@dataclass
class CycleReport:
    """What one cycle saw and did."""

    at: float  # clock() when the cycle started (the data's time)
    samples: int = 0  # requests in the solve's sample
    remaining_requests: float | None = None  # N(t)
    forecast_model: str = "none"
    used: list = field(default_factory=list)  # consumption per constraint
    plan_use: list = field(default_factory=list)  # capacity x share of the campaign's traffic seen so far
    correction: list = field(default_factory=list)
    certificate: dict | None = None
    published: Published | None = None
    solve_s: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "published"}
        if self.published is not None:
            out["published"] = dict(self.published.__dict__)
        return out


class NearlineLoop:
    """Plans one scenario (see the module docstring); given its Redis client, clock and solve function."""

    def __init__(self, scenario: ScenarioSpec, client, *, namespace: str = "raygate",
                 clock: Callable[[], float] = time.time, solve_fn: SolveFn | None = None):
        self.scenario = scenario
        self.client = client
        self.clock = clock
        self.matrix = ConstraintMatrix(scenario)
        self.names = scenario.constraint_names
        self.capacity = np.asarray(scenario.capacities, dtype=np.float64)
        self.prices = DualPriceStore(client, namespace)
        self.budget = BudgetStore(client, scenario.name, namespace)
        self.samples = SampleStore(client, scenario.name, namespace)
        self.forecast = ArrivalForecast(scenario.bucket_s, scenario.season_buckets, scenario.refit_every)
        self.solve_fn = solve_fn or default_solve(scenario.solver_backend, scenario.gap_tol / 4,
                                                  scenario.overshoot_tol / 4, scenario.solver_time_limit_s)
        self.window = SampleWindow(scenario.solver_sample_size, self.matrix)  # parsed once per record
        self._stream_id = "-"
        self._start_key = f"{scenario_tag(namespace, scenario.name)}:campaign:start"
        self.start_at: float | None = scenario.starts_at
        self.last_lam: np.ndarray | None = None
        self.correction = np.ones(len(self.names))
        self._planned_per_request: np.ndarray | None = None  # consumption per request the last prices planned
        self._last_used: np.ndarray | None = None
        self._last_arrivals: float | None = None
        self._planned_cum = np.zeros(len(self.names))  # consumption the published prices planned, summed
        self._actual_cum = np.zeros(len(self.names))  # consumption reported over the same cycles
        self._served_cum = 0.0  # requests served over those cycles
        self.correction_min_requests = 1000  # requests before the correction acts
        self.last_report: CycleReport | None = None
        self.counts = {"cycles": 0, "published": 0, "refused": 0, "failed": 0}  # since this loop started

    @property
    def end_at(self) -> float:
        return (self.start_at or 0.0) + self.scenario.horizon_s

    def _ensure_started(self, now: float) -> None:
        if self.start_at is None:
            self.client.set(self._start_key, repr(now), nx=True)
            self.start_at = float(self.client.get(self._start_key))
        self.budget.ensure(self.names, self.capacity)

    def _remaining_requests(self, now: float, arrivals: dict[int, int]) -> float:
        """N(t): the forecast (or the rate seen so far, extrapolated) times 1 + forecast_margin."""
        forecast = self.forecast.remaining(now, self.end_at)
        rate = 0.0
        if forecast is None:
            seen = sum(c for b, c in arrivals.items() if b * self.scenario.bucket_s >= (self.start_at or now))
            elapsed = max(now - (self.start_at or now), 1e-9)
            rate = seen / elapsed if seen else len(self.window) / max(self.scenario.cycle_s, 1e-9)
        return remaining_requests(forecast, rate, self.end_at - now, self.scenario.forecast_margin)

    def _correct(self, used: np.ndarray, arrivals_total: float, report: CycleReport) -> None:
        """Accumulate what the published prices planned (per request, times the requests served) and what was
        really consumed since; once enough requests were served, each constraint's factor is
        (planned / actual) ** gain over those totals (a ratio of sums, so noise averages out, not integrated)."""
        if self._last_used is not None and self._planned_per_request is not None:
            served = max(arrivals_total - (self._last_arrivals or 0.0), 0.0)
            self._planned_cum += self._planned_per_request * served
            self._actual_cum += np.maximum(used - self._last_used, 0.0)
            self._served_cum += served
        self._last_used, self._last_arrivals = used, arrivals_total
        if self.scenario.correction_gain and self._served_cum >= self.correction_min_requests:
            self.correction = update_correction(np.ones_like(self.correction), self._planned_cum, self._actual_cum,
                                                self.scenario.correction_gain, step_bounds=(0.5, 2.0))
        report.correction = self.correction.tolist()

    def cycle(self) -> CycleReport:
        """One planning cycle; never raises (the report carries the error)."""
        now = self.clock()
        report = CycleReport(at=now)
        try:
            self._cycle(now, report)
        except Exception as exc:  # a control loop never dies: report, log, go on next cycle
            report.error = f"{type(exc).__name__}: {exc}"
            log.warning("nearline_cycle_failed", exc_info=True, extra={"scenario": self.scenario.name})
        self.last_report = report
        published = report.published
        self.counts["cycles"] += 1
        self.counts["published"] += bool(published is not None and published.accepted)
        self.counts["refused"] += bool(published is not None and not published.accepted)
        self.counts["failed"] += bool(report.error)
        return report

    def _cycle(self, now: float, report: CycleReport) -> None:
        self._ensure_started(now)
        self._stream_id, fresh = self.samples.read_since(self._stream_id)
        self.window.extend(fresh)
        used = self.budget.used(self.names)
        arrivals = self.budget.arrivals()
        # Before the campaign starts (a future `starts_at`) the traffic to plan for begins at the start: the
        # buckets before it are history, not a campaign running at zero rate.
        planned_from = max(now, self.start_at or now)
        self.forecast.update(arrivals, planned_from)
        N = self._remaining_requests(planned_from, arrivals)
        report.samples, report.remaining_requests, report.forecast_model = len(self.window), N, \
            self.forecast.model_name
        report.used = used.tolist()
        seen = sum(c for b, c in arrivals.items() if (b + 1) * self.scenario.bucket_s > (self.start_at or now))
        report.plan_use = (self.capacity * seen / max(seen + N, 1.0)).tolist()  # paced share of the traffic so far
        self._correct(used, float(sum(arrivals.values())), report)
        if not self.window:
            report.error = "no sampled requests yet"
            return
        weight = self.window.total_weight()  # the requests the sample stands for (stratified records weigh less)
        b = paced_capacities(self.capacity, used, weight, N, self.correction)
        inst = self.window.instance(b)
        initial = self.last_lam if self.last_lam is not None and len(self.last_lam) == len(b) else None
        t0 = time.perf_counter()
        sol = self.solve_fn(inst, b, initial)
        report.solve_s = time.perf_counter() - t0
        cert = sol.certificate
        report.certificate = price_certificate(cert.dual_objective, cert.primal_objective, cert.max_violation)
        best = np.where(inst.mask, inst.c, 0.0).max(axis=1)
        plan = {"rate": per_request_rates(self.capacity, used, N).tolist(), "remaining_requests": N,
                "value_scale": float(np.sum(np.maximum(best, 0.0)) / weight), "correction": self.correction.tolist(),
                "forecast_model": self.forecast.model_name, "samples": len(self.window), "plan_use": report.plan_use,
                "used": report.used, "solve_s": report.solve_s}
        report.published = self.prices.publish_certified(
            self.scenario.name, sol.lam, self.names, report.certificate, computed_at=now,
            expected_names=self.names, gap_tol=self.scenario.gap_tol, overshoot_tol=self.scenario.overshoot_tol,
            plan=plan, now=self.clock)
        self.last_lam = np.asarray(sol.lam, dtype=np.float64)  # the next warm start either way
        if report.published.accepted:
            self._planned_per_request = np.asarray(sol.consumption) / weight
        else:
            log.info("nearline_not_published", extra={"scenario": self.scenario.name,
                                                      "reason": report.published.reason})

    def run(self, stop) -> None:
        """Cycle every `cycle_s` until `stop.is_set()` (a threading.Event)."""
        while not stop.is_set():
            started = self.clock()
            self.cycle()
            wait = self.scenario.cycle_s - (self.clock() - started)
            if wait > 0:
                stop.wait(wait)
