"""Window metrics: merging reports of several reporters per second, the ring, snapshots."""

import pytest

from autoscale.window import MetricReport, MetricWindow, ReplicaCounts, merge_reports

KEY = ("app", "dep", "v1")


def edge(second, reporter="gw-0", **kw):
    return MetricReport(*KEY, reporter=reporter, role="edge", second=second, **kw)


def replica(second, reporter="r-0", **kw):
    return MetricReport(*KEY, reporter=reporter, role="replica", second=second, **kw)


def test_edge_counts_add_up_and_in_flight_takes_the_larger_side():
    """Two gateways' counts are summed; in-flight is max(edge sum, replica sum); CPU is the replicas' mean."""
    sample = merge_reports(7, [
        edge(7, "gw-0", arrivals=10, completions=9, errors=1, in_flight=4, queued=1),
        edge(7, "gw-1", arrivals=5, completions=5, in_flight=2),
        replica(7, "r-0", in_flight=5, cpu=0.5),
        replica(7, "r-1", in_flight=3, cpu=0.7),
    ])
    assert (sample.arrivals, sample.completions, sample.errors, sample.queued) == (15, 14, 1, 1)
    assert sample.in_flight == 8  # replicas saw 8, gateways 6: one gateway's report may be missing
    assert sample.cpu == pytest.approx(0.6)
    assert sample.reporters == 4


def test_latency_quantiles_are_weighted_by_completions():
    sample = merge_reports(1, [edge(1, "a", completions=30, latency_p99_s=1.0, latency_p50_s=0.1),
                               edge(1, "b", completions=10, latency_p99_s=3.0, latency_p50_s=0.3)])
    assert sample.latency_p99_s == pytest.approx(1.5)
    assert sample.latency_p50_s == pytest.approx(0.15)
    assert merge_reports(1, [edge(1)]).latency_p99_s is None


def test_a_resent_report_replaces_the_first():
    window = MetricWindow(60)
    window.add(edge(100, arrivals=3))
    assert window.sample(KEY, 100).arrivals == 3
    window.add(edge(100, arrivals=4))
    assert window.sample(KEY, 100).arrivals == 4


def test_the_ring_drops_old_seconds_and_snapshots_exclude_the_current_second():
    window = MetricWindow(retention_s=10)
    for second in range(100, 130):
        window.add(edge(second, arrivals=second))
    assert window.sample(KEY, 105) is None  # evicted: older than 10 s before the newest
    snapshot = window.snapshot(KEY, now=129.5, span_s=5, replicas=ReplicaCounts(ready=2))
    assert [s.second for s in snapshot.samples] == [124, 125, 126, 127, 128]
    assert snapshot.replicas.ready == 2
    assert [s.second for s in snapshot.since(127)] == [127, 128]


def test_missing_seconds_are_absent_not_zero():
    window = MetricWindow(60)
    window.add(edge(10, arrivals=1))
    window.add(edge(12, arrivals=1))
    assert [s.second for s in window.samples(KEY, 0, 20)] == [10, 12]
    assert window.snapshot(("other", "d", "v"), 20, 10).samples == ()


def test_report_dicts_round_trip_and_bad_ones_are_refused():
    report = edge(5, arrivals=2, latency_p99_s=0.2)
    assert MetricReport.from_dict(report.to_dict()) == report
    with pytest.raises(ValueError, match="in_flight"):
        MetricReport.from_dict({**report.to_dict(), "in_flight": -1})
    with pytest.raises(ValueError, match="role"):
        MetricReport.from_dict({**report.to_dict(), "role": "proxy"})
