"""`python -m planner` end to end in subprocesses: generate, solve (JSON contract), evaluate, errors exit 2.

The subprocesses inherit NUMBA_CACHE_DIR from tests/conftest.py, so the kernel is compiled once for the whole
suite (by whichever process needs it first) and loaded from that cache everywhere else."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from planner.backends import default_backend
from planner.highs import solve_exact
from planner.instance import load_instance

CONTRACT = {"lambda", "dual_objective", "primal_objective", "max_violation", "iterations", "seconds", "backend",
            "gap", "converged"}


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "planner", *args]


def _run(*args):
    return subprocess.run(_cmd(*args), capture_output=True, text=True, timeout=300)


def test_generate_solve_evaluate(tmp_path):
    """generate writes a family's file; solve at its defaults writes DUALS.json with the contract's keys, K
    prices, the default backend of this machine, and figures that bracket HiGHS's optimum as the default contract
    says (0.5% gap, 0.5% overshoot); evaluate reproduces them, and the hard-stop replay never beats the rule."""
    inst = tmp_path / "i.npz"
    r = _run("generate", "--n", "6000", "--J", "6", "--K", "9", "--seed", "4", "--family", "spendcaps",
             "--out", str(inst))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["family"] == "spendcaps"
    # The two solves run side by side while HiGHS solves here: three independent processes' work at once.
    solves = {}
    for backend in (None, "numpy"):
        duals = tmp_path / f"d-{backend}.json"
        args = ["solve", str(inst), "--out", str(duals)] + (["--backend", backend] if backend else [])
        solves[backend] = (duals, subprocess.Popen(_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   text=True))
    try:
        optimum = solve_exact(load_instance(inst)).objective
        for backend, (duals, proc) in solves.items():
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            rec = json.loads(duals.read_text())
            assert CONTRACT <= set(rec)
            assert len(rec["lambda"]) == 9 and all(x >= 0 for x in rec["lambda"])
            assert rec["backend"] == (backend or default_backend())
            assert rec["converged"] and rec["gap"] <= 5e-3 and rec["max_violation"] <= 5e-3
            assert rec["dual_objective"] >= optimum * (1 - 1e-9)
            assert rec["primal_objective"] >= optimum * (1 - 5e-3 - 1e-9)
    finally:
        for _, proc in solves.values():  # a failed check leaves no solve running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    r = _run("evaluate", str(inst), str(duals))
    assert r.returncode == 0, r.stderr
    judged = json.loads(r.stdout)
    assert np.isclose(judged["dual_objective"], rec["dual_objective"], rtol=1e-9)
    assert np.isclose(judged["primal_objective"], rec["primal_objective"], rtol=1e-9)
    assert judged["hard_stop_objective"] <= judged["primal_objective"] * (1 + 1e-9)


def test_dense_generate_and_sample(tmp_path):
    """--kind dense files solve too, and --sample reports the sample beside the whole instance's figures."""
    inst = tmp_path / "d.npz"
    assert _run("generate", "--n", "800", "--J", "4", "--K", "5", "--kind", "dense", "--out", str(inst)).returncode == 0
    duals = tmp_path / "d.json"
    r = _run("solve", str(inst), "--out", str(duals), "--sample", "0.5", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    rec = json.loads(duals.read_text())
    assert rec["sample"]["users"] == 400
    assert rec["converged"] == (rec["gap"] <= 5e-3 and rec["max_violation"] <= 5e-3)


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


def test_seed_of_the_wrong_shape_exits_2_naming_it(tmp_path):
    """seed=[1, 2] is an error naming 'seed', not a TypeError traceback."""
    from planner.generate import GeneratorConfig, generate_instance
    from planner.instance import save_instance

    inst = generate_instance(GeneratorConfig(n=50, J=3, K=3, seed=1))
    path = tmp_path / "s.npz"
    save_instance(path, inst)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["seed"] = np.array([1, 2])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    r = _run("solve", str(path), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "'seed'" in r.stderr and "Traceback" not in r.stderr


def test_memory_budget_flag_refuses_before_loading(tmp_path):
    """--memory-budget-gb below what the file declares exits 2 naming the array and the budget."""
    from planner.generate import GeneratorConfig, generate_instance
    from planner.instance import save_instance

    path = tmp_path / "i.npz"
    save_instance(path, generate_instance(GeneratorConfig(n=20_000, J=10, K=5, seed=1)))
    r = _run("solve", str(path), "--out", str(tmp_path / "x.json"), "--memory-budget-gb", "0.001")
    assert r.returncode == 2 and "memory budget" in r.stderr and "'w'" in r.stderr and "Traceback" not in r.stderr
