"""The pure policy on a fake clock: bursts, steady load, drops, oscillation, bounds, forecasts, no data."""

from __future__ import annotations

import math

from autoscale.config import AutoscalingConfig
from autoscale.forecast import Forecast
from autoscale.policy import REASONS, PolicyState, decide
from autoscale.window import ReplicaCounts, Sample, WindowSnapshot

SERVICE_S = 0.1  # every request spends this long at a replica


class Clock:
    """Drives `decide` once per fake second with one sample per second; replicas are ready at once by default."""

    def __init__(self, config: AutoscalingConfig, start: float = 10_000.0, replicas: int | None = None) -> None:
        self.config = config
        self.now = start
        self.state = PolicyState(target=replicas) if replicas is not None else PolicyState()
        self.samples: list[Sample] = []
        self.decisions = []

    def step(self, in_flight: float, forecast: Forecast | None = None, ready: int | None = None, queued: float = 0.0,
             startups: tuple[float, ...] = (), **extra):
        rate = in_flight / SERVICE_S
        self.samples.append(Sample(second=int(self.now), arrivals=rate, completions=rate, in_flight=in_flight + queued,
                                   queued=queued, reporters=1, **extra))
        self.now += 1
        keep = self.now - self.config.stable_window_s - 1
        self.samples = [s for s in self.samples if s.second >= keep]
        target = self.state.target if self.state.target is not None else 1
        counts = ReplicaCounts(ready=target if ready is None else ready, startup_samples_s=startups)
        decision = decide(self.config, WindowSnapshot(tuple(self.samples), counts), forecast, self.state, self.now)
        assert decision.reason in REASONS
        self.state = decision.new_state
        self.decisions.append(decision)
        return decision

    def run(self, seconds: int, in_flight, **kw):
        for _ in range(seconds):
            decision = self.step(in_flight(self.now) if callable(in_flight) else in_flight, **kw)
        return decision


CONFIG = AutoscalingConfig(min_replicas=1, max_replicas=50, target_ongoing_requests=8, forecast=False)


def test_no_data_holds_and_says_so():
    """Without samples the target holds at the current count and the reason is no_data, not an exception."""
    state = PolicyState(target=3)
    decision = decide(CONFIG, WindowSnapshot(), None, state, now=100.0)
    assert (decision.target, decision.reason) == (3, "no_data")
    first = decide(CONFIG, WindowSnapshot(replicas=ReplicaCounts(ready=2, starting=1)), None, PolicyState(), 100.0)
    assert (first.target, first.reason) == (3, "no_data")  # the replicas that exist


def test_steady_load_holds():
    """Load equal to the target per replica holds the count, tick after tick."""
    clock = Clock(CONFIG, replicas=4)
    clock.run(300, 4 * 8.0)
    assert {d.target for d in clock.decisions} == {4}
    assert clock.decisions[-1].reason == "hold"


def test_burst_panics_up_within_seconds():
    """A 5x burst is caught by the panic window within a few seconds, long before the stable window catches up."""
    clock = Clock(CONFIG, replicas=4)
    clock.run(120, 32.0)
    decisions = [clock.step(160.0) for _ in range(4)]
    assert any(d.reason == "panic_scale_up" for d in decisions)
    assert decisions[-1].target >= 15
    # in panic the target does not go down, even when the burst is over at once
    after = [clock.step(32.0) for _ in range(10)]
    assert min(d.target for d in after) >= decisions[-1].target


def test_scale_up_rate_is_bounded_per_second():
    config = CONFIG.model_copy(update={"max_scale_up_rate": 2.0})
    clock = Clock(config, replicas=2)
    clock.run(60, 16.0)
    targets = [clock.step(400.0).target for _ in range(6)]
    previous = 2
    for target in targets:
        assert target <= max(previous + 1, 2 * previous)
        previous = target
    assert targets[-1] == 50  # reaches the max within a few seconds


def test_drop_waits_the_delay_then_scales_down_at_the_bounded_rate():
    """After a drop the count holds for downscale_delay_s, then shrinks at most 2x per minute down to the need."""
    config = CONFIG.model_copy(update={"downscale_delay_s": 120.0, "max_scale_down_rate": 2.0})
    clock = Clock(config, replicas=40)
    clock.run(200, 40 * 8.0)
    assert clock.state.target == 40
    clock.run(100, 2 * 8.0)  # drop to 2 replicas' worth
    assert clock.state.target == 40 and clock.decisions[-1].reason == "downscale_delay"
    clock.run(30, 2 * 8.0)  # past the delay (the stable window has seen the drop for 120 s by ~150 s)
    after_delay = clock.state.target
    assert after_delay < 40
    clock.run(60, 2 * 8.0)
    assert clock.state.target >= math.floor(after_delay / 2) - 1  # at most halved in a minute
    clock.run(600, 2 * 8.0)
    assert clock.state.target == 3  # ceil(2 * (1 + hysteresis)) with the default 0.15


def test_oscillating_input_does_not_flap():
    """Load swinging 1x-3x every minute for an hour: the count goes up once and stays (no reversals)."""
    clock = Clock(CONFIG, replicas=4)
    clock.run(3600, lambda now: 96.0 if int(now) // 60 % 2 else 32.0)
    assert clock.state.reversals == 0
    assert clock.state.target >= 12
    targets = [d.target for d in clock.decisions]
    assert max(targets[600:]) == min(targets[600:])


def test_bounds_hold_at_both_ends():
    clock = Clock(CONFIG, replicas=4)
    assert clock.run(60, 10_000.0).target == 50
    clock = Clock(CONFIG.model_copy(update={"min_replicas": 2, "downscale_delay_s": 0.0}), replicas=4)
    clock.run(600, 0.0)
    assert clock.state.target == 2


def test_forecast_prescales_by_the_measured_lead_time():
    """The lead time is measured from a scale-up until the replicas are ready; a rise forecast within it is acted
    on now, a rise forecast beyond it is not."""
    clock = Clock(CONFIG, replicas=4)
    clock.run(60, 32.0, ready=4)
    clock.run(3, 160.0, ready=4)  # burst: scale up, replicas not ready yet
    wanted = clock.state.target
    assert wanted > 4
    clock.run(39, 32.0, ready=4)
    clock.run(1, 32.0, ready=wanted)  # ready 42 s after the scale-up began
    assert 38 <= clock.state.lead_time_s <= 43
    config = CONFIG.model_copy(update={"forecast": True, "downscale_delay_s": 0.0, "max_scale_down_rate": 1000.0})
    lead = clock.state.lead_time_s

    def doubling_at(offset_s):
        step = 10.0
        first = math.floor(clock.now / step) * step
        rates = [320.0 if first + i * step < clock.now + offset_s else 640.0 for i in range(20)]
        return Forecast(start=first, step_s=step, rates=tuple(rates), model="holt")

    base = PolicyState(target=4, lead_time_s=lead, service_s=SERVICE_S)
    samples = tuple(Sample(second=int(clock.now) - k, arrivals=320, completions=320, in_flight=32, reporters=1)
                    for k in range(30, 0, -1))
    window = WindowSnapshot(samples, ReplicaCounts(ready=4))
    assert lead - 5 > config.startup_prior_s  # so acting on `soon` needs the measured lead, not the prior
    soon = decide(config, window, doubling_at(lead - 5), base, clock.now)
    late = decide(config, window, doubling_at(lead + 15), base, clock.now)
    assert (soon.reason, soon.target) == ("predictive_scale_up", 8)
    assert (late.reason, late.target) == ("hold", 4)


def test_lead_time_from_reported_startups():
    clock = Clock(CONFIG, replicas=2)
    clock.step(16.0, startups=(20.0,))
    assert clock.state.lead_time_s == 20.0
    clock.step(16.0, startups=(30.0,))
    assert 20.0 < clock.state.lead_time_s < 30.0


def test_upscale_delay_is_in_seconds():
    config = CONFIG.model_copy(update={"upscale_delay_s": 10.0, "panic_threshold": 100.0})
    clock = Clock(config, replicas=4)
    clock.run(60, 32.0)
    decisions = [clock.step(64.0) for _ in range(45)]
    first_up = next(i for i, d in enumerate(decisions) if d.target > 4)
    assert any(d.reason == "upscale_delay" for d in decisions[:first_up])
    assert first_up >= 10


def test_scale_to_zero_after_idle_and_wake_on_traffic():
    config = CONFIG.model_copy(update={"min_replicas": 0, "scale_to_zero": True, "scale_to_zero_delay_s": 60.0,
                                       "downscale_delay_s": 0.0})
    clock = Clock(config, replicas=1)
    clock.run(30, 0.0)
    assert clock.state.target == 1
    clock.run(40, 0.0)
    assert clock.state.target == 0 and any(d.reason == "scale_to_zero" for d in clock.decisions)
    clock.run(30, 0.0, ready=0)
    assert clock.state.target == 0  # idle stays at zero
    decision = clock.step(0.0, ready=0, queued=3.0)  # requests held at the gateway
    assert (decision.reason, decision.target) == ("wake_from_zero", 1)


def test_cpu_signal_scales_up_and_latency_needs_load():
    config = CONFIG.model_copy(update={"target_cpu_utilization": 0.5})
    clock = Clock(config, replicas=4)
    assert clock.run(60, 32.0, cpu=0.9).target > 4
    config = CONFIG.model_copy(update={"target_latency_s": 0.2})
    slow = Clock(config, replicas=4)
    assert slow.run(60, 32.0, latency_p99_s=0.5).target > 4
    idle = Clock(config, replicas=4)  # a slow model with little load is not scaled up for its latency
    assert idle.run(60, 4.0, latency_p99_s=0.5).target == 4


def test_decisions_are_json_ready():
    import json

    clock = Clock(CONFIG, replicas=4)
    decision = clock.run(40, 32.0)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["target"] == 4 and data["reason"] == "hold" and "stable" in data["signals"]


def test_a_short_window_sees_the_last_whole_seconds_between_ticks():
    """A 2 s stable window ticked mid-second holds the last two whole seconds: the row of the second just ended
    may not have arrived yet (second S is reported during S + 1), and the one before it still counts. (A window
    that began at `now - 2` held only that missing row, so a reporter whose phase trailed the scaler's ticks
    left a scale-to-zero version at no_data for good.)"""
    config = CONFIG.model_copy(update={"min_replicas": 0, "scale_to_zero": True, "scale_to_zero_delay_s": 2.0,
                                       "stable_window_s": 2.0, "panic_window_s": 1.0, "downscale_delay_s": 0.0})
    state = PolicyState(target=1)
    for tick in range(8):  # every tick at .5, the row of the second just ended still in flight
        now = 10_000.5 + tick
        late = Sample(second=int(now) - 2, arrivals=0.0, completions=0.0, in_flight=0.0, queued=0.0, reporters=1)
        decision = decide(config, WindowSnapshot((late,), ReplicaCounts(ready=1)), None, state, now)
        assert decision.reason != "no_data", (tick, decision)
        state = decision.new_state
    assert state.target == 0
