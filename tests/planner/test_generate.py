"""The instance generator: reproducible by seed, realistic constraint mix, valid by the format's rules."""

from __future__ import annotations

import numpy as np

from planner.generate import GeneratorConfig, generate_instance
from planner.instance import validate_arrays


def test_same_seed_same_arrays_other_seed_differs():
    """The same config and seed always give identical arrays; another seed gives other values."""
    a = generate_instance(GeneratorConfig(n=500, J=8, K=12, seed=5))
    b = generate_instance(GeneratorConfig(n=500, J=8, K=12, seed=5))
    c = generate_instance(GeneratorConfig(n=500, J=8, K=12, seed=6))
    for name in ("c", "mask", "item", "w", "A", "b"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.c, c.c)


def test_constraint_mix_and_validity():
    """Totals, category caps and item budgets are all present; A is sparse; the arrays pass validation;
    values correlate with spend; padding carries no value or usage."""
    inst = generate_instance(GeneratorConfig(n=3000, J=10, K=40, seed=1))
    assert {"total_spend", "total_count", "category_cap", "item_budget"} <= set(inst.ctype)
    assert (inst.A > 0).mean() < 0.2
    validate_arrays({"c": inst.c, "mask": inst.mask, "item": inst.item, "w": inst.w, "A": inst.A, "b": inst.b,
                     "kind": np.array("factored")})
    assert (inst.c[~inst.mask] == 0).all() and (inst.w[~inst.mask] == 0).all()
    real = inst.mask
    assert np.corrcoef(inst.c[real], inst.w[:, :, 0][real])[0, 1] > 0.3
    assert (~inst.mask).any() and inst.mask[:, 0].all()


def test_odd_sizes():
    """Any n/J/K/P/R works, including K larger than the catalog allows for budgets and R > 2."""
    inst = generate_instance(GeneratorConfig(n=10, J=3, K=30, P=5, R=3, seed=2))
    assert inst.K == 30 and inst.P == 5 and inst.R == 3 and (inst.b > 0).all()
