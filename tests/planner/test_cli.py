"""`python -m planner` end to end in subprocesses: generate, solve (JSON contract), evaluate, errors exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

CONTRACT = {"lambda", "dual_objective", "primal_objective", "max_violation", "iterations", "seconds", "backend"}


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, timeout=120)


def test_generate_solve_evaluate(tmp_path):
    """generate writes a valid file; solve writes DUALS.json with the contract's keys and K prices (default
    backend and numpy); evaluate judges it, including the hard-stop objective."""
    inst = tmp_path / "i.npz"
    r = _run("generate", "--n", "3000", "--J", "6", "--K", "9", "--seed", "4", "--out", str(inst))
    assert r.returncode == 0, r.stderr
    for backend in (None, "numpy"):
        duals = tmp_path / f"d-{backend}.json"
        args = ["solve", str(inst), "--out", str(duals)] + (["--backend", backend] if backend else [])
        r = _run(*args)
        assert r.returncode == 0, r.stderr
        rec = json.loads(duals.read_text())
        assert CONTRACT <= set(rec)
        assert len(rec["lambda"]) == 9 and all(x >= 0 for x in rec["lambda"])
        assert rec["dual_objective"] >= rec["primal_objective"] * (1 - 1e-9) or rec["max_violation"] > 0
        assert rec["backend"] == (backend or "numba")
    r = _run("evaluate", str(inst), str(duals))
    assert r.returncode == 0, r.stderr
    judged = json.loads(r.stdout)
    assert np.isclose(judged["dual_objective"], rec["dual_objective"], rtol=1e-9)
    assert judged["hard_stop_objective"] <= judged["primal_objective"] * (1 + 1e-9)


def test_dense_generate_and_sample(tmp_path):
    """--kind dense files solve too, and --sample adds the sample's report."""
    inst = tmp_path / "d.npz"
    assert _run("generate", "--n", "800", "--J", "4", "--K", "5", "--kind", "dense", "--out", str(inst)).returncode == 0
    duals = tmp_path / "d.json"
    r = _run("solve", str(inst), "--out", str(duals), "--sample", "0.5", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert json.loads(duals.read_text())["sample"]["users"] == 400


def test_bad_instance_exits_2_without_traceback(tmp_path):
    """A bad file prints one error line naming the file and the array, exits 2, and shows no traceback."""
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as fh:
        np.savez(fh, c=np.zeros((2, 2)), mask=np.ones((2, 2), bool), b=np.ones(1), kind=np.array("factored"))
    r = _run("solve", str(bad), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "'item'" in r.stderr and str(bad) in r.stderr
    r = _run("solve", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "no such file" in r.stderr
