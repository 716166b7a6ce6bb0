"""The scaling policy: a pure function `decide(config, window, forecast, state, now) -> Decision`.

Each tick, for one version:
1. **Load.** From the stable window (`stable_window_s`) and the panic window (`panic_window_s`): the concurrency
   the version needs is `max(running, arrival_rate * service_s) + queued * service_s / backlog_drain_s`, where
   running = in_flight - queued and service_s = running / completion rate (Little's law, measured while replicas
   are not saturated). Queued requests count as work to clear within `backlog_drain_s`, not as concurrency, so a
   queue built while replicas start does not ask for the maximum; the queue counted is the one expected when a
   replica started now is ready (it grows at arrivals - completions over the lead time). Wanted replicas =
   load / `target_ongoing_requests`.
2. **Panic.** When the panic window wants `panic_threshold` x the ready replicas, the version panics for one stable
   window: the panic window's figure is used and the target never goes down. Outside panic the panic window's
   figure still counts when it is more than max(upscale_tolerance, hysteresis) above the current count, so a
   burst below the panic threshold is met within seconds too (upwards only).
3. **Forecast.** The arrival rate seen now, times the forecast's growth from now to one measured start-up lead
   time ahead (at most `max_forecast_ratio`), gives the load when a replica started now would be ready.
   The lead time is measured: from each scale-up until the ready count reaches it, and from start-up durations the
   controller reports; `startup_prior_s` is used until the first measurement. Forecasts only raise the target.
4. **Optional signals.** p-latency over `target_latency_s` raises the target in proportion (at most 1.5x per tick,
   only while replicas are loaded, so a slow idle model is not scaled to the maximum); mean CPU over
   `target_cpu_utilization` raises it as Kubernetes' HPA does (only while requests arrive).
5. **Pacing.** Outside panic, scale-up needs wanted > current * (1 + upscale_tolerance); scale-down goes to
   ceil(wanted * (1 + hysteresis)), a margin (the two make a band in which the count holds); a higher target must be wanted for
   `upscale_delay_s`, a lower one for `downscale_delay_s` (the highest wanted in that look-back is used); growth is
   at most `max_scale_up_rate` per second (one replica always allowed), shrinking at most `max_scale_down_rate` per
   minute; the result is clamped to [min_replicas, max_replicas]. Scale to zero (opt-in) after
   `scale_to_zero_delay_s` with no traffic; any request wakes a version at zero at once.

No data in the stable window is a value: the target holds, reason `no_data`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autoscale.config import AutoscalingConfig
from autoscale.forecast import Forecast
from autoscale.window import Sample, WindowSnapshot

__all__ = ["PolicyState", "Decision", "Load", "decide", "REASONS"]

REASONS = (
    "no_data", "hold", "scale_up", "predictive_scale_up", "panic_scale_up", "panic_hold", "scale_down",
    "downscale_delay", "upscale_delay", "scale_to_zero", "wake_from_zero",
)
_EPS = 1e-9
_SATURATED = 1.5  # in-flight per ready replica above this many times the target: the replicas are saturated
_LEAD_EWMA = 0.3  # weight of a new start-up observation in the measured lead time


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks of one version. Start with `PolicyState()`."""

    target: int | None = None  # the last target decided
    decided_at: float | None = None  # when it was decided
    first_decision_at: float | None = None  # the downscale delay needs this much history before any scale-down
    wanted: tuple[tuple[float, int], ...] = ()  # (time, count wanted after hysteresis), for the delays
    panic_until: float | None = None  # panic mode lasts until then
    down_bound: float | None = None  # decaying lower bound while scaling down (the down rate limit)
    lead_time_s: float | None = None  # measured replica start-up lead time (EWMA); None until observed
    pending: tuple[tuple[float, int], ...] = ()  # (since, count) scale-ups waiting to be ready
    service_s: float | None = None  # last measured time a request spends at a replica
    last_traffic_at: float | None = None  # last second with an arrival, a request in flight or queued
    direction: int = 0  # sign of the last change of target
    reversals: int = 0  # changes of direction so far


@dataclass(frozen=True)
class Load:
    """Measured load of one window."""

    arrival_rate: float  # arrivals per second
    in_flight: float  # mean in flight (queued included)
    queued: float  # mean queued at the edge
    concurrency: float  # what the version needs (step 1 of the docstring)


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one version at one tick."""

    target: int  # replicas wanted now
    reason: str  # one of REASONS
    new_state: PolicyState
    wanted: float = 0.0  # replicas the signals want, before pacing and bounds
    signals: tuple[tuple[str, float], ...] = ()  # (signal name, replicas it wants)
    detail: str = ""  # one human line

    def to_dict(self) -> dict:
        return {"target": self.target, "reason": self.reason, "wanted": round(self.wanted, 3),
                "signals": {name: round(value, 3) for name, value in self.signals}, "detail": self.detail,
                "lead_time_s": self.new_state.lead_time_s, "panic": self.reason.startswith("panic")}


def _measure(samples: tuple[Sample, ...], service_s: float | None, config: AutoscalingConfig,
             ready: int, lead_s: float) -> tuple[Load, float | None]:
    n = len(samples)
    arrivals = sum(s.arrivals for s in samples) / n
    completions = sum(s.completions for s in samples) / n
    in_flight = sum(s.in_flight for s in samples) / n
    queued = sum(s.queued for s in samples) / n
    running = max(0.0, in_flight - queued)
    # Little's law near the operating point only: on saturated replicas the time in the replica is mostly
    # queueing, and arrivals times that time would ask for far more replicas than the load needs.
    unsaturated = running <= _SATURATED * config.target_ongoing_requests * max(ready, 1)
    if completions > 0 and running > 0 and (unsaturated or service_s is None):
        service_s = running / completions
    if service_s is None:
        return Load(arrivals, in_flight, queued, running + queued), None
    offered = arrivals * service_s
    # the queue when replicas started now are ready: it grows at arrivals - completions while one exists
    growth = max(0.0, arrivals - completions) * lead_s if queued > 0 else 0.0
    backlog = (queued + growth) * service_s / config.backlog_drain_s
    return Load(arrivals, in_flight, queued, (max(running, offered) if unsaturated else offered) + backlog), service_s


def _lead_time(config: AutoscalingConfig, window: WindowSnapshot, state: PolicyState, now: float):
    """Update the measured lead time from reported start-ups and from pending scale-ups now ready."""
    lead = state.lead_time_s
    observed = list(window.replicas.startup_samples_s)
    pending = []
    for since, count in state.pending:
        if window.replicas.ready >= count:
            observed.append(now - since)
        else:
            pending.append((since, count))
    for sample in observed:
        if math.isfinite(sample) and 0 <= sample <= 3600:
            lead = sample if lead is None else (1 - _LEAD_EWMA) * lead + _LEAD_EWMA * sample
    return lead, tuple(pending)


def _forecast_signal(config, forecast: Forecast | None, load: Load, service_s, lead_s: float, now: float):
    if not config.forecast or forecast is None or service_s is None:
        return None
    # the bucket a lead time ahead against the bucket now (not the highest on the way: a max of noisy buckets
    # is biased upwards)
    base, ahead = forecast.rate_at(now), forecast.rate_at(now + lead_s)
    if base is None or ahead is None:
        return None
    if base > _EPS:
        ratio = min(config.max_forecast_ratio, ahead / base)
    else:
        ratio = 1.0 if ahead <= _EPS else config.max_forecast_ratio
    return load.arrival_rate * max(ratio, 0.0) * service_s / config.target_ongoing_requests


def _extra_signals(config, stable: tuple[Sample, ...], load: Load, current: int, ready: int) -> list:
    signals = []
    if config.target_latency_s is not None and load.arrival_rate > 0:
        observed = WindowSnapshot.mean(stable, f"latency_{config.latency_quantile}_s")
        loaded = load.in_flight >= 0.5 * config.target_ongoing_requests * max(current, 1)
        if observed is not None and observed > config.target_latency_s and loaded:
            signals.append(("latency", max(current, 1) * min(1.5, observed / config.target_latency_s)))
    if config.target_cpu_utilization is not None and load.arrival_rate > 0:
        cpu = WindowSnapshot.mean(stable, "cpu")
        if cpu is not None:
            signals.append(("cpu", max(ready, 1) * cpu / config.target_cpu_utilization))
    return signals


def _paced(config, state: PolicyState, candidate: int, current: int, panic: bool, now: float):
    """Delays and rate limits (step 5). Returns (target, why-held or None, down_bound, wanted history)."""
    horizon = max(config.upscale_delay_s, config.downscale_delay_s)
    history = tuple((t, c) for t, c in state.wanted if t > now - horizon - _EPS) + ((now, candidate),)
    target, held = candidate, None
    if candidate > current and config.upscale_delay_s > 0:
        target = max(current, min(c for t, c in history if t >= now - config.upscale_delay_s - _EPS))
        held = "upscale_delay" if target < candidate else None
    elif candidate < current:
        recent = [c for t, c in history if t >= now - config.downscale_delay_s - _EPS]
        first = state.first_decision_at if state.first_decision_at is not None else now
        target = current if now - first < config.downscale_delay_s else min(current, max(recent))
        if panic:
            target = current
        held = "downscale_delay" if target > candidate else None
    dt = min(60.0, max(0.0, now - state.decided_at)) if state.decided_at is not None else 1.0
    down_bound = state.down_bound
    if target > current:
        target = min(target, max(current + 1, math.floor(current * config.max_scale_up_rate ** dt + _EPS)))
        down_bound = None
    elif target < current:
        bound = (down_bound if down_bound is not None else current) / config.max_scale_down_rate ** (dt / 60)
        target = max(target, math.ceil(bound - _EPS))
        down_bound = bound
    else:
        down_bound = None
    return target, held, down_bound, history


def decide(config: AutoscalingConfig, window: WindowSnapshot, forecast: Forecast | None, state: PolicyState,
           now: float) -> Decision:
    """One tick of the policy for one version (see the module docstring). Pure: no clock, no I/O."""
    counts = window.replicas
    current = state.target if state.target is not None else (
        counts.ready + counts.starting if counts.ready + counts.starting > 0 else config.start_replicas)
    lead, pending = _lead_time(config, window, state, now)
    lead_s = lead if lead is not None else config.startup_prior_s
    state = replace(state, lead_time_s=lead, pending=pending,
                    first_decision_at=state.first_decision_at if state.first_decision_at is not None else now)
    # Windows are whole reported seconds: the last `stable_window_s` of them before the current, incomplete one
    # (second S is reported during S + 1, so a window that began at `now - stable_window_s` held one second
    # fewer, and a 2 s window could miss its only row on every tick when the reporter's phase trailed the tick's).
    newest = math.floor(now)
    stable = window.since(newest - config.stable_window_s)
    if not stable:
        held = replace(state, target=current, decided_at=now)
        return Decision(current, "no_data", held, detail="no metrics in the stable window; holding")
    load, service_s = _measure(stable, state.service_s, config, counts.ready, lead_s)
    latest = stable[-1]
    last_traffic = state.last_traffic_at
    if latest.arrivals > 0 or latest.in_flight > 0 or latest.queued > 0 or last_traffic is None:
        last_traffic = now
    state = replace(state, service_s=service_s, last_traffic_at=last_traffic)

    target_load = config.target_ongoing_requests
    signals = [("stable", load.concurrency / target_load)]
    panic_samples = window.since(newest - config.panic_window_s)
    panic_until = state.panic_until
    if panic_samples:
        panic_load, _ = _measure(panic_samples, service_s, config, counts.ready, lead_s)
        panic_wanted = panic_load.concurrency / target_load
        signals.append(("panic", panic_wanted))
        if panic_wanted >= config.panic_threshold * max(counts.ready, 1) and panic_wanted > current:
            panic_until = now + config.stable_window_s
    panic = panic_until is not None and now < panic_until
    predicted = _forecast_signal(config, forecast, load, service_s, lead_s, now)
    if predicted is not None:
        signals.append(("forecast", predicted))
    signals += _extra_signals(config, stable, load, current, counts.ready)
    # the panic window also counts, outside panic, when it wants clearly more: a burst below the panic threshold
    # is met within seconds too (only upwards: going down always waits for the stable window and the delay)
    fast = max(config.upscale_tolerance, config.hysteresis)  # above the noise of a few seconds' sample
    used = [(value, name) for name, value in signals if name != "panic" or panic or value > current * (1 + fast)]
    wanted, winner = max(used)

    state = replace(state, panic_until=panic_until if panic else None)
    return _finish(config, state, wanted, winner, signals, current, counts.ready, panic, lead_s, now)


def _finish(config, state: PolicyState, wanted: float, winner: str, signals, current: int, ready: int,
            panic: bool, lead_s: float, now: float) -> Decision:
    idle_for = now - state.last_traffic_at
    if config.scale_to_zero and config.min_replicas == 0 and idle_for >= config.scale_to_zero_delay_s and (
            wanted <= _EPS):
        return _decided(state, 0, current, "scale_to_zero", wanted, signals, now,
                        f"no traffic for {idle_for:.0f} s", pending=())
    if current == 0:
        if idle_for > 0:
            return _decided(state, 0, current, "hold", wanted, signals, now, "at zero replicas, no traffic")
        target = min(config.max_replicas, max(1, config.min_replicas, math.ceil(wanted - _EPS)))
        return _decided(state, target, current, "wake_from_zero", wanted, signals, now,
                        "traffic reached a version at zero replicas")
    candidate = math.ceil(wanted - _EPS)
    if candidate > current and not panic and wanted <= current * (1 + config.upscale_tolerance):
        candidate = current
    if candidate < current:
        candidate = min(current, math.ceil(wanted * (1 + config.hysteresis) - _EPS))
    candidate = min(config.max_replicas, max(config.min_replicas, 1, candidate))
    if panic:
        candidate = max(candidate, current)
    target, held, down_bound, history = _paced(config, state, candidate, current, panic, now)
    target = min(config.max_replicas, max(config.min_replicas, 1, target))
    state = replace(state, down_bound=down_bound, wanted=history)
    if target > current:
        reason = "panic_scale_up" if panic else ("predictive_scale_up" if winner == "forecast" else "scale_up")
    elif target < current:
        reason = "scale_down"
    else:
        reason = held or ("panic_hold" if panic else "hold")
    detail = (f"wants {wanted:.2f} replicas ({winner}), current {current}, ready {ready}, "
              f"lead {lead_s:.0f} s" + (", panic" if panic else ""))
    return _decided(state, target, current, reason, wanted, signals, now, detail)


def _decided(state: PolicyState, target: int, current: int, reason: str, wanted: float, signals, now: float,
             detail: str, pending: tuple | None = None) -> Decision:
    direction = (target > current) - (target < current)
    reversals = state.reversals + (1 if direction and state.direction and direction != state.direction else 0)
    pend = state.pending if pending is None else pending
    if target > current:
        pend = pend + ((now, target),)
    pend = tuple((since, count) for since, count in pend if count <= target)[-8:]
    new_state = replace(state, target=target, decided_at=now, pending=pend, reversals=reversals,
                        direction=direction or state.direction)
    return Decision(target, reason, new_state, wanted, tuple(signals), detail)
