"""Per-second load rows for the scaler: counts, errors, quantiles, idle versions and the router's load."""

from __future__ import annotations

from autoscale.window import MetricReport
from gateway.load_report import LoadReporter, quantile


def test_quantile_is_nearest_rank_and_none_without_values():
    """p50 of 1..100 is 50, p99 is 99, and no values give None rather than raising."""
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.5) == 50.0
    assert quantile(values, 0.99) == 99.0
    assert quantile([], 0.5) is None


def test_rows_count_one_second_and_then_start_again():
    """Three answers (one a 503) in a second give arrivals 3, errors 1; the next second starts from zero."""
    reporter = LoadReporter("gateway-0-1")
    for status, seconds in ((200, 0.001), (200, 0.003), (503, 0.002)):
        reporter.observe("app", "dep", "v1", status, seconds)
    rows = reporter.rows(100, {("app", "dep", "v1"): (4.0, 1.0)})
    assert len(rows) == 1
    row = rows[0]
    assert (row["arrivals"], row["completions"], row["errors"]) == (3, 3, 1)
    assert row["in_flight"] == 5.0 and row["queued"] == 1.0
    assert row["latency_p50_s"] == 0.002 and row["latency_p99_s"] == 0.003
    MetricReport.from_dict(row)  # the scaler accepts the row as it is
    again = reporter.rows(101, {})
    assert again == []


def test_idle_known_versions_are_reported_with_zeros_and_404s_are_not():
    """A version the router knows but that had no traffic reports zeros; unmatched requests ('-') never do."""
    reporter = LoadReporter("gateway-0-1")
    reporter.observe("-", "-", "-", 404, 0.0001)
    rows = reporter.rows(7, {}, versions=[("app", "dep", "v2")])
    assert [(r["version"], r["arrivals"], r["in_flight"], r["latency_p50_s"]) for r in rows] == [("v2", 0, 0.0, None)]


def test_latencies_kept_per_second_are_bounded():
    """Under any load a second keeps at most `max_latencies` samples (memory stays bounded)."""
    reporter = LoadReporter("g")
    for _ in range(reporter.max_latencies + 500):
        reporter.observe("a", "d", "v", 200, 0.001)
    assert len(reporter._current[("a", "d", "v")].latencies) == reporter.max_latencies
    assert reporter.rows(1, {})[0]["completions"] == reporter.max_latencies + 500
