"""Decision sampling stratified by item: rare items are represented in the planner's window, and the weights keep
weighted counts unbiased; the planner scales a weighted record's value and usage."""

from __future__ import annotations

import random

import numpy as np
import pytest

from planner.allocation.decide import ConstraintMatrix
from planner.allocation.samples import SampleWindow, sample_weight, samples_instance
from planner.allocation.sampling import ItemStratifiedSampler
from tests.planner.allocation.allocation_testlib import coupon_scenario


def traffic(n: int, rare_share: float, seed: int = 0):
    rng = random.Random(seed)
    return [("common", "rare") if rng.random() < rare_share else ("common", "other") for _ in range(n)]


def kept(sampler, requests):
    return [(items, w) for items in requests if (w := sampler.offer(items)) is not None]


def test_a_rare_item_fills_its_floor_of_the_window_and_weights_stay_unbiased():
    """1% of 200,000 requests list a rare item; uniform 10% sampling would give it 1% of a 2,000-record window
    (20 records). Stratified, it gets about its floor of 200 (10%); weighted, the rare requests and all requests
    are estimated within a few percent of the truth."""
    requests = traffic(200_000, 0.01)
    uniform = kept(ItemStratifiedSampler(0.1, 2000, 0, random.Random(1)), requests)
    strata = kept(ItemStratifiedSampler(0.1, 2000, 200, random.Random(1)), requests)
    share = lambda sample: sum("rare" in items for items, _ in sample) / len(sample)  # noqa: E731
    assert share(uniform) == pytest.approx(0.01, rel=0.2)
    assert share(strata) >= 0.08
    rare_true = sum("rare" in items for items in requests)
    rare_estimate = sum(w for items, w in strata if "rare" in items) / 0.1
    assert rare_estimate == pytest.approx(rare_true, rel=0.05)
    assert sum(w for _, w in strata) / 0.1 == pytest.approx(len(requests), rel=0.03)
    assert all(w == 1.0 for items, w in strata if "rare" not in items)


def test_item_names_from_clients_are_bounded():
    """Random item names do not grow the counts without bound."""
    sampler = ItemStratifiedSampler(0.1, 100, 10, random.Random(0), max_items=1000)
    for i in range(20_000):
        sampler.offer((f"junk{i}",))
    assert len(sampler.counts) <= 1001


def test_the_planner_scales_a_weighted_record_as_that_many_requests():
    """A record of weight 0.25 enters the LP with a quarter of its value and usage; the sample's weight sums."""
    matrix = ConstraintMatrix(coupon_scenario())
    records = [{"t": 0, "items": ["coupon_a"], "value": [0.8], "usage": [[3.0, 1.0]], "w": 0.25},
               {"t": 0, "items": ["coupon_a"], "value": [0.8], "usage": [[3.0, 1.0]]}]
    inst = samples_instance(records, matrix, np.array([10.0, 5.0]))
    assert inst.c[:, 0].tolist() == [0.2, 0.8]
    assert inst.w[0, 0].tolist() == [0.75, 0.25] and inst.w[1, 0].tolist() == [3.0, 1.0]
    assert sample_weight(records) == 1.25


def test_the_planners_window_keeps_the_newest_records_and_builds_the_same_lp():
    """The ring of parsed records (parsed once each) past its length and past a wider record holds the newest
    `maxlen` records, oldest first, and gives the LP a rebuild from those records gives (up to item numbering)."""
    matrix = ConstraintMatrix(coupon_scenario())
    records = [{"t": 0, "items": ["coupon_a", "coupon_b"][: 1 + i % 2], "value": [0.1 * i, 0.2][: 1 + i % 2],
                "usage": [[1.0 + i, 1.0], [2.0, 0.5]][: 1 + i % 2], "w": 0.5 if i % 3 else 1.0} for i in range(9)]
    records[0]["items"], records[0]["value"], records[0]["usage"] = ["coupon_a"], [0.3], [[1.0, 1.0]]
    window = SampleWindow(4, matrix)
    window.extend(records[:1])
    window.extend(records[1:])
    new, old = window.instance(np.array([10.0, 5.0])), samples_instance(records[-4:], matrix, np.array([10.0, 5.0]))
    assert len(window) == 4 and window.total_weight() == sample_weight(records[-4:])
    assert np.array_equal(new.c, old.c) and np.array_equal(new.mask, old.mask) and np.array_equal(new.w, old.w)
    names = {p: n for n, p in window.catalog.items()}
    assert [[names[p] for p in row[m]] for row, m in zip(new.item, new.mask)] == [r["items"] for r in records[-4:]]
    assert np.array_equal(new.A[:, new.item[new.mask]], old.A[:, old.item[old.mask]])
