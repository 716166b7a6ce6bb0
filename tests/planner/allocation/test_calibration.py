"""Online calibration: Platt and isotonic maps learnt from feedback, recency weighting, and the quality metrics."""

from __future__ import annotations

import numpy as np
import pytest

from planner.allocation.calibration import Calibration, isotonic_fit, platt_fit


def feedback(cal: Calibration, item: str, n: int, truth, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for p in rng.uniform(0.02, 0.6, size=n):
        cal.observe(item, float(p), float(rng.random() < truth(p)))


def test_platt_recovers_a_known_distortion():
    """Outcomes drawn from sigmoid(2 logit p - 1) give a close to 2 and b close to -1."""
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, size=20000)
    x = np.log(p / (1 - p))
    y = (rng.random(p.size) < 1 / (1 + np.exp(-(2 * x - 1)))).astype(float)
    a, b = platt_fit(x, y, np.ones_like(p), steps=8, ridge=0.0)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)


def test_isotonic_fit_is_monotone_and_pools_violations():
    """PAV pools adjacent violators into their weighted mean."""
    x, y = isotonic_fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]), np.ones(4))
    assert np.all(np.diff(y) >= 0) and y.tolist() == [0.0, 0.5, 1.0]
    assert x.tolist() == pytest.approx([0.1, 0.25, 0.4])  # pooled knots sit at the weighted mean of their x


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_overconfident_predictions_are_pulled_down_and_log_loss_improves(method):
    """An item that converts at half its predicted rate is calibrated towards the truth; the prequential log loss of
    the calibrated predictions beats the raw ones, and the reliability table says where the mass is."""
    cal = Calibration(method, min_feedback=50)
    feedback(cal, "coupon_a", 3000, lambda p: 0.5 * p)
    q = cal.apply(["coupon_a", "other"], np.array([0.4, 0.4]))
    assert q[0] == pytest.approx(0.2, abs=0.06) and q[1] == 0.4  # unknown items pass through
    rng = np.random.default_rng(5)
    p = rng.uniform(0.02, 0.6, size=4000)
    y = rng.random(p.size) < 0.5 * p
    raw = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    qq = np.array([cal.apply(["coupon_a"], np.array([v]))[0] for v in p])
    assert -np.mean(y * np.log(qq) + (1 - y) * np.log(1 - qq)) < raw
    m = cal.metrics()
    assert m["count"] == 3000 and m["log_loss"] > 0 and sum(r["count"] for r in m["reliability"]) == 3000


def test_recent_feedback_weighs_more():
    """After the conversion rate halves, a short half-life follows it and a long one lags behind."""
    fast, slow = Calibration("platt", half_life=200), Calibration("platt", half_life=1e6)
    for cal in (fast, slow):
        feedback(cal, "x", 3000, lambda p: p, seed=1)
        feedback(cal, "x", 1000, lambda p: 0.5 * p, seed=2)
    assert fast.apply(["x"], np.array([0.4]))[0] < slow.apply(["x"], np.array([0.4]))[0] - 0.03


def test_off_changes_nothing():
    """With calibration off, values pass through and feedback is ignored."""
    cal = Calibration("off")
    feedback(cal, "x", 200, lambda p: 0.1)
    assert cal.apply(["x"], np.array([0.7]))[0] == 0.7 and cal.metrics()["count"] == 0
