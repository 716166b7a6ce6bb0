"""The `raygate` CLI beyond `up`: the planner subcommand and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _raygate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_plan_generates_and_solves_through_the_raygate_command(tmp_path):
    instance, duals = tmp_path / "inst.npz", tmp_path / "duals.json"
    result = _raygate("plan", "generate", "--n", "300", "--J", "4", "--K", "3", "--seed", "1", "--out", str(instance))
    assert result.returncode == 0, result.stderr
    result = _raygate("plan", "solve", str(instance), "--out", str(duals), "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    answer = json.loads(duals.read_text())
    assert len(answer["lambda"]) == 3 and answer["backend"] == "numpy"
    assert answer["dual_objective"] >= answer["primal_objective"] - 1e-9


def test_split_rejects_malformed_weights_without_contacting_anything():
    result = _raygate("--url", "http://127.0.0.1:9", "--token", "x", "split", "app", "dep", "v1:90")
    assert result.returncode != 0 and "must look like VERSION=NUMBER" in result.stderr


def test_commands_say_how_to_reach_a_platform_when_none_runs(tmp_path):
    result = _raygate("--run-dir", str(tmp_path), "status")
    assert result.returncode != 0 and "no admin token" in result.stderr


def test_status_text_shows_scenarios_and_pipelines(capsys):
    """`raygate status` (text) prints each scenario's constraints against capacity and plan, its prices and
    forecast, and each pipeline's lag, pending and dead letters; unreadable entries say why."""
    from deploy.cli import _echo_features

    _echo_features({"scenarios": [
        {"scenario": "coupons", "route_prefix": "/allocate/coupons", "prices_version": 17, "prices_age_s": 4.2,
         "stale": False, "forecast": {"model": "holt_winters", "remaining_requests": 12000.0},
         "certificate": {"gap": 0.001, "rigorous_gap": 0.002},
         "constraints": [{"name": "total_spend", "capacity": 100000.0, "used": 2500.0, "use": 0.025,
                          "planned_use": 0.03, "price": 0.012}]},
        {"scenario": "other", "error": "no Redis"}],
        "pipelines": [{"pipeline": "clicks", "lag": 3, "pending": 1, "dead_letters": 2,
                       "rates": {"read_per_s": 12.5}}]})
    out = capsys.readouterr().out
    assert "scenario coupons (/allocate/coupons): prices v17, age 4.2 s" in out and "holt_winters" in out
    assert "total_spend" in out and "2.5%" in out and "3.0%" in out
    assert "scenario other: no Redis" in out
    assert "pipeline clicks: lag 3, pending 1, dead letters 2, read_per_s 12.5" in out
