"""The instance generator: reproducible by seed, realistic constraint mix, valid by the format's rules."""

from __future__ import annotations

import numpy as np
import pytest

from planner.generate import FAMILIES, GeneratorConfig, family_config, generate_instance
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


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_is_valid_and_reproducible(family):
    """Every family's instance passes the format's validation, is identical for the same seed, and carries the
    constraint mix its name promises."""
    a = generate_instance(family_config(family, n=3000, J=10, K=40, seed=2))
    b = generate_instance(family_config(family, n=3000, J=10, K=40, seed=2))
    validate_arrays({"c": a.c, "mask": a.mask, "item": a.item, "w": a.w, "A": a.A, "b": a.b,
                     "kind": np.array("factored")})
    for name in ("c", "mask", "item", "w", "A", "b"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.c[~a.mask] == 0).all() and (a.w[~a.mask] == 0).all() and a.mask[:, 0].all()


def _greedy_consumption(inst):
    from planner.kernels import ArrayKernel

    return ArrayKernel(inst).evaluate(np.zeros(inst.K), 0.0).hard_consumption


@pytest.mark.parametrize("family,level", [("bind10", 0.1), ("bind30", 0.3), ("bind80", 0.8)])
def test_binding_families_set_capacities_at_their_share_of_demand(family, level):
    """bindX: every capacity is X% of what the unconstrained greedy rule consumes."""
    inst = generate_instance(family_config(family, n=4000, J=8, K=20, seed=1))
    greedy = _greedy_consumption(inst)
    np.testing.assert_allclose(inst.b[greedy > 0], level * greedy[greedy > 0], rtol=1e-9)


def test_family_features():
    """subset: a catalog of 10 items per constraint and repeats as padding; spendcaps: caps
    on spend; heavytail: far heavier value tails; ties: values from a few exact levels; slack: capacities 5x the
    demand; floors: capacities of a few allocations."""
    kw = dict(n=5000, J=10, K=40, seed=3)
    base = generate_instance(family_config("baseline", **kw))
    subset = generate_instance(family_config("subset", **kw))
    assert subset.P == 10 * 40 == 5 * base.P and (~subset.mask[:, 1:]).any()
    caps = [c for c in generate_instance(family_config("spendcaps", **kw)).cname if c.startswith("category_")]
    assert any(c.endswith("_spend") for c in caps) and any(c.endswith("_count") for c in caps)
    heavy = generate_instance(family_config("heavytail", **kw))
    ratio = lambda i: np.quantile(i.c[i.mask], 0.999) / np.median(i.c[i.mask])  # noqa: E731
    assert ratio(heavy) > 2 * ratio(base)
    ties = generate_instance(family_config("ties", **kw))
    assert np.unique(ties.c[ties.mask]).size < 0.05 * ties.mask.sum()
    slack = generate_instance(family_config("slack", **kw))
    assert np.sum(slack.b > 4.9 * _greedy_consumption(slack)) >= 5
    floors = generate_instance(family_config("floors", **kw))
    budgets = np.array([t == "item_budget" for t in floors.ctype])
    mean_spend = floors.w[:, :, 0][floors.mask].mean()
    assert np.sum(floors.b[budgets] < 10 * mean_spend) >= 5
    with pytest.raises(ValueError, match="unknown family"):
        family_config("nope", 10, 2, 2)
