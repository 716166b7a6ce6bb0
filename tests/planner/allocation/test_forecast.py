"""Arrival forecast: learns a daily shape from history, chooses a model, follows a surprise at once."""

from __future__ import annotations

import numpy as np
import pytest

from planner.allocation.forecast import ArrivalForecast

SEASON = 24


def diurnal(buckets: np.ndarray, base: float = 100.0) -> np.ndarray:
    return base * (1.0 + 0.6 * np.sin(2 * np.pi * buckets / SEASON))


def history(seasons: int, seed: int = 0) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    b = np.arange(seasons * SEASON)
    return dict(zip(b.tolist(), (diurnal(b) * rng.lognormal(0, 0.05, b.size)).tolist()))


def test_remaining_arrivals_follow_the_daily_shape():
    """With three seasons of history a seasonal model is chosen, and the arrivals of the next half season are
    forecast within 8%, although they are far from the mean rate."""
    f = ArrivalForecast(bucket_s=60.0, season_buckets=SEASON)
    now = 3 * SEASON * 60.0
    f.update(history(3), now)
    assert f.model_name in ("holt_winters", "stl")
    truth = diurnal(np.arange(3 * SEASON, 3 * SEASON + SEASON // 2)).sum()
    assert f.remaining(now, now + SEASON // 2 * 60.0) == pytest.approx(truth, rel=0.08)


def test_short_history_falls_back_to_the_level_and_none_means_no_forecast():
    """Less than two seasons: a level model; no history: None (the caller extrapolates)."""
    f = ArrivalForecast(bucket_s=60.0, season_buckets=SEASON)
    f.update({}, 0.0)
    assert f.remaining(0.0, 600.0) is None
    f.update({b: 50.0 for b in range(10)}, 600.0)
    assert f.model_name == "level" and f.remaining(600.0, 1200.0) == pytest.approx(500.0, rel=0.01)


def test_a_surprise_spike_raises_the_forecast_before_the_next_refit():
    """Buckets at three times the forecast raise the rest of the forecast by the cheap update, without a refit."""
    f = ArrivalForecast(bucket_s=60.0, season_buckets=SEASON, refit_every=1000)
    counts = history(3)
    start = 3 * SEASON
    f.update(counts, start * 60.0)
    before = f.remaining(start * 60.0 + 180.0, (start + 12) * 60.0)
    for b in range(start, start + 3):
        counts[b] = 3 * diurnal(np.array([b]))[0]
    f.update(counts, (start + 3) * 60.0)
    assert f.model_name != "mean"
    assert f.remaining((start + 3) * 60.0, (start + 12) * 60.0) > 1.8 * before
