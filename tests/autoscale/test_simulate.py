"""The simulation on short traces: the issue's targets against the Ray Serve-like baseline, same run."""

import pytest

from autoscale import simulate


@pytest.fixture(scope="module")
def figures():
    figures, series = simulate.run_all(short=True, seed=1)
    return figures


@pytest.mark.parametrize("trace", ["diurnal", "flash_crowd"])
def test_half_the_slo_violations_at_no_more_replica_seconds(figures, trace):
    """At least 50% fewer SLO-violation seconds than the baseline, at no more than 1.1x its replica-seconds."""
    ours, baseline = figures[trace]["raygate"], figures[trace]["baseline"]
    assert baseline["slo_violation_s"] > 0
    assert ours["slo_violation_s"] <= 0.5 * baseline["slo_violation_s"]
    assert ours["replica_s"] <= 1.1 * baseline["replica_s"]


def test_oscillation_does_not_flap(figures):
    assert figures["oscillation"]["raygate"]["reversals_per_hour"] <= 2.0


def test_every_trace_has_the_keys_the_issue_names(figures):
    assert set(figures) == {"diurnal", "flash_crowd", "ramp", "oscillation"}
    for runs in figures.values():
        for policy in ("raygate", "baseline"):
            assert set(runs[policy]) == {"slo_violation_s", "replica_s", "reversals_per_hour"}


def test_the_cli_prints_a_table_and_a_json_last_line(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setattr(simulate, "run_all", lambda short, seed: (
        {"ramp": {"raygate": {"slo_violation_s": 1, "replica_s": 10.0, "reversals_per_hour": 0.0},
                  "baseline": {"slo_violation_s": 2, "replica_s": 12.0, "reversals_per_hour": 1.0}}}, {}))
    assert simulate.main(["--short", "--plot", ""]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["ramp"]["baseline"]["replica_s"] == 12.0
    assert any(line.startswith("ramp") for line in out)
