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
