"""The exact LP optimum with HiGHS (highspy, a test/bench extra): the baseline the dual solver is judged by."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from planner.instance import Instance

__all__ = ["ExactSolution", "solve_exact"]


@dataclass(frozen=True)
class ExactSolution:
    """What HiGHS reported."""

    objective: float  # optimal LP value (nan unless status is "Optimal")
    status: str  # HiGHS model status as text
    seconds: float  # wall-clock of run()


def solve_exact(inst: Instance, time_limit_s: float = 600.0, solver: str = "ipm", threads: int = 0) -> ExactSolution:
    """Build the LP over the real slots (x_ij for masked-in (i, j)) and solve it with HiGHS."""
    import highspy
    from scipy import sparse

    rows, cols = np.nonzero(inst.mask)
    nv = rows.size
    cost = inst.c[rows, cols]
    items = inst.item[rows, cols]
    w = inst.w[rows, cols]  # (nv, R)
    # m (nv, K) sparse: sum_r w[:, r] * A[r, item, :]
    blocks = []
    for r in range(inst.R):
        Ar = sparse.csr_matrix(inst.A[r])  # (P, K)
        sel = sparse.csr_matrix((np.ones(nv), (np.arange(nv), items)), shape=(nv, inst.P))
        blocks.append(sparse.diags(w[:, r]) @ sel @ Ar)
    m = sum(blocks).tocsc()  # (nv, K)
    user_rows = sparse.csc_matrix((np.ones(nv), (rows, np.arange(nv))), shape=(inst.n, nv))
    cons = sparse.vstack([m.T.tocsc(), user_rows]).tocsc()
    cons.eliminate_zeros()
    lp = highspy.HighsLp()
    lp.num_col_ = nv
    lp.num_row_ = inst.K + inst.n
    lp.col_cost_ = -cost
    lp.col_lower_ = np.zeros(nv)
    lp.col_upper_ = np.ones(nv)
    lp.row_lower_ = np.full(inst.K + inst.n, -highspy.kHighsInf)
    lp.row_upper_ = np.concatenate([inst.b, np.ones(inst.n)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = cons.indptr
    lp.a_matrix_.index_ = cons.indices
    lp.a_matrix_.value_ = cons.data
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("solver", solver)
    h.setOptionValue("time_limit", float(time_limit_s))
    if threads:
        h.setOptionValue("threads", int(threads))
    h.passModel(lp)
    t0 = time.perf_counter()
    h.run()
    seconds = time.perf_counter() - t0
    status = h.modelStatusToString(h.getModelStatus())
    obj = -h.getInfo().objective_function_value if status == "Optimal" else float("nan")
    return ExactSolution(objective=float(obj), status=status, seconds=seconds)
