"""The scaler with a fake source, sink, store and clock: reports in, counts out, status kept, failures survived."""

import json

from autoscale.config import AutoscalingConfig
from autoscale.scaler import AutoscaledVersion, Scaler
from autoscale.window import ReplicaCounts

KEY = ("shop", "ranker", "v1")
CONFIG = AutoscalingConfig(min_replicas=1, max_replicas=20, target_ongoing_requests=4, season_length_s=3600)


class Source:
    def __init__(self, ready=2):
        self.counts = ReplicaCounts(ready=ready)
        self.reports = []
        self.fail = False

    def autoscaled_versions(self):
        if self.fail:
            raise ConnectionError("controller away")
        return {KEY: AutoscaledVersion(CONFIG, self.counts)}

    def poll_reports(self):
        reports, self.reports = self.reports, []
        return reports


class Sink:
    def __init__(self):
        self.calls = []
        self.fail = False

    def set_autoscale_target(self, app, deployment, version, target, reason):
        if self.fail:
            raise ConnectionError("controller away")
        self.calls.append((app, deployment, version, target, reason))


class Store:
    def __init__(self, buckets=()):
        self.buckets, self.appended, self.max_buckets, self.lead = list(buckets), [], 10, None

    def load(self, key, bucket_s):
        return self.buckets

    def append(self, key, buckets, bucket_s):
        self.appended += list(buckets)

    def load_lead_time(self, key):
        return 33.0

    def save_lead_time(self, key, seconds):
        self.lead = seconds


def edge(second, in_flight, rate):
    return {"app": KEY[0], "deployment": KEY[1], "version": KEY[2], "reporter": "gw-0", "role": "edge",
            "second": second, "arrivals": rate, "completions": rate, "in_flight": in_flight}


def test_reports_in_counts_out_and_status():
    """Pushed reports drive a scale-up; the sink gets a target when it changes, and again every resend_s (30 s)
    in case the controller restarted, not every tick; status is JSON."""
    source, sink = Source(ready=2), Sink()
    scaler = Scaler(source, sink, clock=lambda: 0.0)
    start = 50_000
    for t in range(start, start + 40):
        scaler.report([edge(t, in_flight=8.0, rate=80)])
        scaler.tick(t + 1.2)
    assert sink.calls == [(*KEY, 2, "hold")] * 2
    for t in range(start + 40, start + 45):
        scaler.report([edge(t, in_flight=40.0, rate=400)])
        scaler.tick(t + 1.2)
    assert sink.calls[-1][3] >= 10 and sink.calls[-1][4] == "panic_scale_up"
    status = json.loads(json.dumps(scaler.last_decisions()))
    assert status[0]["app"] == "shop" and status[0]["target"] == sink.calls[-1][3]
    assert status[0]["reason"] == "panic_hold" or status[0]["reason"] == "panic_scale_up"


def test_failures_of_source_and_sink_do_not_stop_the_loop():
    source, sink = Source(), Sink()
    scaler = Scaler(source, sink)
    scaler.tick(100.0)
    source.fail = sink.fail = True
    scaler.report([edge(100, in_flight=80.0, rate=800)])
    decisions = scaler.tick(101.5)  # the last known versions are used; the sink failure is logged
    assert KEY in decisions and decisions[KEY].target > 2
    source.fail = sink.fail = False
    scaler.tick(102.5)
    assert sink.calls[-1][3] == decisions[KEY].target  # sent once the sink is back


def test_history_is_loaded_on_first_sight_and_new_buckets_are_stored():
    """After a restart the forecast starts from the stored buckets and lead time; new buckets are appended."""
    stored = [(i, 10.0 + (i % 60)) for i in range(0, 150)]
    store = Store(stored)
    scaler = Scaler(Source(), Sink(), history=store)
    now = 150 * 60.0
    for t in range(int(now), int(now) + 125):
        scaler.report([edge(t, in_flight=1.0, rate=10)])
        scaler.tick(t + 1.2)
    entry = scaler._versions[KEY]
    assert entry.forecaster.model == "holt_winters"
    assert entry.state.lead_time_s == 33.0
    assert [index for index, _ in store.appended] == [150, 151]  # seconds up to now - settle_s


def test_versions_that_leave_are_forgotten():
    source = Source()
    scaler = Scaler(source, Sink())
    scaler.tick(10.0)
    assert scaler.last_decisions()
    source.autoscaled_versions = lambda: {}
    scaler.tick(11.0)
    assert scaler.last_decisions() == []


def test_a_changed_config_keeps_the_policy_state_and_the_buckets():
    source = Source()
    scaler = Scaler(source, Sink())
    for t in range(6000, 6200):
        scaler.report([edge(t, in_flight=4.0, rate=40)])
        scaler.tick(t + 1.2)
    before = scaler._versions[KEY]
    buckets = dict(before.forecaster.history)
    assert buckets
    changed = CONFIG.model_copy(update={"max_replicas": 30})
    source.autoscaled_versions = lambda: {KEY: AutoscaledVersion(changed, source.counts)}
    scaler.tick(6201.2)
    after = scaler._versions[KEY]
    assert after.config.max_replicas == 30 and after.forecaster.history == buckets
    assert after.state.target == before.state.target


def test_held_demand_for_a_version_at_zero_wakes_it_in_the_next_tick():
    """A version idle past scale_to_zero_delay_s goes to 0; a report of queued (held) requests is flagged as a
    wake (the actor ticks at once) and that tick asks for one replica, reason wake_from_zero, without waiting
    for a stable window of traffic."""
    config = CONFIG.model_copy(update={"min_replicas": 0, "scale_to_zero": True, "scale_to_zero_delay_s": 5.0,
                                       "stable_window_s": 10.0, "forecast": False})

    class ZeroSource(Source):
        def autoscaled_versions(self):
            return {KEY: AutoscaledVersion(config, self.counts)}

    source, sink = ZeroSource(ready=1), Sink()
    now = [1000.0]
    scaler = Scaler(source, sink, clock=lambda: now[0])
    for second in range(1000, 1040):
        scaler.report([edge(second - 1, 0, 0)])
        now[0] = second + 0.5
        scaler.tick()
    assert sink.calls[-1][3:] == (0, "scale_to_zero")
    source.counts = ReplicaCounts(ready=0)
    held = dict(edge(1039, 3, 0), queued=3, reporter="gw-0:held")
    assert not scaler.wakes_from_zero([edge(1039, 0, 0)])
    assert scaler.wakes_from_zero([held])
    scaler.report([held])
    now[0] = 1040.1
    scaler.tick()
    assert sink.calls[-1][3:] == (1, "wake_from_zero")


def test_the_loop_ticks_at_once_when_nudged():
    """A nudge ends the wait for the period: the next tick comes without waiting 60 s."""
    import threading

    from autoscale.scaler import ScalerLoop

    ticked = threading.Event()
    count = [0]

    def tick():
        count[0] += 1
        if count[0] == 2:
            ticked.set()

    loop = ScalerLoop(tick, period_s=60.0).start()
    try:
        loop.nudge()
        assert ticked.wait(10.0)
    finally:
        loop.stop()
