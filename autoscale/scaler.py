"""The scaler: one per cluster, restartable, ticking each second. It gathers, decides (pure policy) and asks.

Each `tick(now)`:
1. asks the `MetricSource` which versions are autoscaled (their `AutoscalingConfig` and replica counts) and for
   new metric reports; reports pushed with `report()` (gateways, handles, replicas) join them in the window;
2. per version: feeds each completed second's arrivals to its `ArrivalForecaster` (completed buckets go to the
   `ArrivalHistoryStore` in Redis when one is given, and are loaded from it when the version is first seen),
   refits at most one forecast per tick when due, and forecasts over the measured start-up lead time;
3. calls `decide()` and, when the target changes (or every `resend_s`, in case the controller restarted), calls
   `CountSink.set_autoscale_target(app, deployment, version, target, reason)`.

Every stage is wrapped: a failing source, sink, store or fit is logged and the loop goes on. Decisions are kept
for status (`last_decisions()`, JSON-able) and logged (`autoscale_decision`) when the target changes.
`ScalerLoop` runs ticks on a thread; `autoscale/actor.py` wraps both in the Ray actor over the controller.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Protocol

import structlog

from autoscale.config import AutoscalingConfig
from autoscale.forecast import ArrivalForecaster
from autoscale.history import ArrivalHistoryStore
from autoscale.policy import Decision, PolicyState, decide
from autoscale.window import MetricReport, MetricWindow, ReplicaCounts, VersionKey

__all__ = ["CountSink", "MetricSource", "AutoscaledVersion", "Scaler", "ScalerLoop"]

log = structlog.get_logger("raygate.autoscale")


@dataclass(frozen=True)
class AutoscaledVersion:
    """One version under autoscaling, as the controller describes it."""

    config: AutoscalingConfig
    replicas: ReplicaCounts = field(default_factory=ReplicaCounts)


class CountSink(Protocol):
    """Implemented by the controller: apply a replica count decided by the scaler (idempotent)."""

    def set_autoscale_target(self, app: str, deployment: str, version: str, target: int, reason: str) -> None: ...


class MetricSource(Protocol):
    """Where the scaler reads what it scales and what it measures."""

    def autoscaled_versions(self) -> Mapping[VersionKey, AutoscaledVersion]: ...

    def poll_reports(self) -> Iterable[MetricReport]: ...


@dataclass
class _Version:
    config: AutoscalingConfig
    forecaster: ArrivalForecaster
    state: PolicyState = field(default_factory=PolicyState)
    fed_until: int | None = None  # last second fed to the forecaster
    sent: tuple[int, float] | None = None  # (target, when) last sent to the sink
    saved_lead: float | None = None


class Scaler:
    """Window metrics -> forecasts -> policy -> counts, for every autoscaled version of the cluster."""

    def __init__(self, source: MetricSource, sink: CountSink, history: ArrivalHistoryStore | None = None,
                 clock: Callable[[], float] = time.time, retention_s: float = 900.0, settle_s: float = 2.0,
                 resend_s: float = 30.0) -> None:
        self.source = source
        self.sink = sink
        self.history = history
        self.clock = clock
        self.window = MetricWindow(retention_s)
        self.settle_s = settle_s  # a second is complete for the forecast once this much later (late reports)
        self.resend_s = resend_s
        self._versions: dict[VersionKey, _Version] = {}
        self._decisions: dict[VersionKey, dict] = {}
        self._pushed: list[MetricReport] = []
        self._lock = threading.Lock()
        self._known: Mapping[VersionKey, AutoscaledVersion] = {}

    # --- inputs --------------------------------------------------------------------------------------------------
    def report(self, reports: Iterable[dict | MetricReport]) -> int:
        """Push path for gateways, handles and replicas (a Ray method call with a list of dicts)."""
        parsed = [r if isinstance(r, MetricReport) else MetricReport.from_dict(r) for r in reports]
        with self._lock:
            self._pushed.extend(parsed)
        return len(parsed)

    def wakes_from_zero(self, reports: Iterable[dict | MetricReport]) -> bool:
        """True when a report shows requests queued for a version the scaler holds at zero replicas: worth a
        tick now rather than at the next period (the routers hold those requests until a replica is ready)."""
        for report in reports:
            data = report if isinstance(report, dict) else report.to_dict()
            entry = self._versions.get((data.get("app"), data.get("deployment"), data.get("version")))
            if entry is not None and entry.state.target == 0 and (data.get("queued") or 0) > 0:
                return True
        return False

    def _gather(self) -> None:
        try:
            self._known = dict(self.source.autoscaled_versions())
        except Exception as exc:  # keep the last known set; the loop goes on
            log.warning("autoscale_source_failed", stage="versions", error=repr(exc))
        try:
            polled = list(self.source.poll_reports())
        except Exception as exc:
            log.warning("autoscale_source_failed", stage="reports", error=repr(exc))
            polled = []
        with self._lock:
            pushed, self._pushed = self._pushed, []
        self.window.add_many(polled + pushed)

    # --- per version ---------------------------------------------------------------------------------------------
    def _version(self, key: VersionKey, config: AutoscalingConfig) -> _Version:
        entry = self._versions.get(key)
        if entry is not None and entry.config == config:
            return entry
        forecaster = ArrivalForecaster(config.forecast_bucket_s, config.season_length_s, config.history_s,
                                       config.refit_interval_s)
        state = entry.state if entry is not None else PolicyState()
        if entry is not None and entry.config.forecast_bucket_s == config.forecast_bucket_s:
            forecaster.load(entry.forecaster.history.items())  # a changed config keeps the buckets it can use
        elif entry is None and self.history is not None:
            try:
                forecaster.load(self.history.load(key, config.forecast_bucket_s))
                lead = self.history.load_lead_time(key)
                state = PolicyState(lead_time_s=lead)
            except Exception as exc:
                log.warning("autoscale_history_failed", stage="load", version="/".join(key), error=repr(exc))
        entry = self._versions[key] = _Version(config, forecaster, state)
        entry.saved_lead = state.lead_time_s
        if self.history is not None:
            self.history.max_buckets = max(self.history.max_buckets, forecaster.max_buckets)
        return entry

    def _feed(self, key: VersionKey, entry: _Version, now: float) -> None:
        last = math.floor(now - self.settle_s)
        first = entry.fed_until + 1 if entry.fed_until is not None else last - int(entry.config.stable_window_s)
        done = []
        for second in range(max(first, last - int(self.window.retention_s)), last + 1):
            sample = self.window.sample(key, second)
            if sample is not None:
                done += entry.forecaster.observe(second, sample.arrivals)
        entry.fed_until = max(last, entry.fed_until or last)
        if done and self.history is not None:
            try:
                self.history.append(key, done, entry.config.forecast_bucket_s)
            except Exception as exc:
                log.warning("autoscale_history_failed", stage="append", version="/".join(key), error=repr(exc))

    def _decide(self, key: VersionKey, entry: _Version, counts: ReplicaCounts, now: float) -> Decision:
        config = entry.config
        lead = entry.state.lead_time_s if entry.state.lead_time_s is not None else config.startup_prior_s
        forecast = entry.forecaster.forecast(now, lead + config.forecast_bucket_s) if config.forecast else None
        snapshot = self.window.snapshot(key, now, config.stable_window_s + 1, counts)
        decision = decide(config, snapshot, forecast, entry.state, now)
        entry.state = decision.new_state
        return decision

    def _apply(self, key: VersionKey, entry: _Version, decision: Decision, counts: ReplicaCounts, now: float) -> None:
        changed = entry.sent is None or entry.sent[0] != decision.target
        if changed or now - entry.sent[1] >= self.resend_s:
            try:
                self.sink.set_autoscale_target(*key, decision.target, decision.reason)
                entry.sent = (decision.target, now)
            except Exception as exc:
                log.warning("autoscale_sink_failed", version="/".join(key), error=repr(exc))
        if changed:
            log.info("autoscale_decision", app=key[0], deployment=key[1], version=key[2], target=decision.target,
                     reason=decision.reason, detail=decision.detail, ready=counts.ready, starting=counts.starting)
        lead = entry.state.lead_time_s
        if self.history is not None and lead is not None and lead != entry.saved_lead:
            try:
                self.history.save_lead_time(key, lead)
                entry.saved_lead = lead
            except Exception as exc:
                log.warning("autoscale_history_failed", stage="lead", version="/".join(key), error=repr(exc))
        record = decision.to_dict()
        record.update(app=key[0], deployment=key[1], version=key[2], at=now, ready=counts.ready,
                      starting=counts.starting, forecast_model=entry.forecaster.model)
        self._decisions[key] = record

    # --- the tick ------------------------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> dict[VersionKey, Decision]:
        """One round over every autoscaled version; returns the decisions made."""
        now = self.clock() if now is None else now
        self._gather()
        decisions = {}
        refitted = False
        for key, version in self._known.items():
            try:
                entry = self._version(key, version.config)
                self._feed(key, entry, now)
                if version.config.forecast and not refitted and entry.forecaster.due(now):
                    started = time.perf_counter()
                    model = entry.forecaster.refit(now)
                    refitted = True
                    log.debug("autoscale_forecast_refit", version="/".join(key), model=model,
                              seconds=round(time.perf_counter() - started, 3))
                decision = self._decide(key, entry, version.replicas, now)
                self._apply(key, entry, decision, version.replicas, now)
                decisions[key] = decision
            except Exception as exc:  # one bad version never stops the others
                log.error("autoscale_tick_failed", version="/".join(key), error=repr(exc))
        for key in set(self._versions) - set(self._known):
            self._versions.pop(key, None)
            self._decisions.pop(key, None)
            self.window.forget(key)
        return decisions

    def recent_samples(self, key: VersionKey, span_s: float, now: float | None = None) -> list[dict]:
        """The merged per-second samples of the last `span_s` seconds of one version (JSON-able), to inspect
        what the window holds (tests, debugging)."""
        now = self.clock() if now is None else now
        return [asdict(sample) for sample in self.window.samples(key, now - span_s, now + 1)]

    def last_decisions(self) -> list[dict]:
        """The last decision per version, JSON-able, for `raygate status` and metrics."""
        items = list(self._decisions.items())  # one C-level copy: safe against the ticking thread
        return [dict(record) for _, record in sorted(items)]


class ScalerLoop:
    """Calls `tick()` (e.g. `Scaler.tick`) every `period_s` on a daemon thread until `stop()`; a failing tick is
    logged, never fatal."""

    def __init__(self, tick: Callable[[], object], period_s: float = 1.0) -> None:
        if not 0.05 <= period_s <= 60:
            raise ValueError(f"period_s must be within 0.05..60, got {period_s}")
        self.tick = tick
        self.period_s = period_s
        self._stop = threading.Event()
        self._nudged = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ScalerLoop":
        self._thread = threading.Thread(target=self._run, name="raygate-scaler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception as exc:
                log.error("autoscale_tick_failed", version="*", error=repr(exc))
            self._nudged.wait(max(0.0, self.period_s - (time.monotonic() - started)))
            self._nudged.clear()

    def nudge(self) -> None:
        """Tick now instead of at the end of the period (demand for a version at zero replicas)."""
        self._nudged.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._nudged.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
