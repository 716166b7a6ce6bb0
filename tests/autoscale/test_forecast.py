"""Forecasts: the model follows the history there is, the cheap update tracks new data, short history is fine."""

import math

import numpy as np
import pytest

from autoscale.forecast import MAX_HW_SEASON, ArrivalForecaster, Forecast, choose_model


@pytest.mark.parametrize("buckets, season, model", [
    (0, 24, "naive"), (7, 24, "naive"), (8, 24, "holt"), (47, 24, "holt"), (48, 24, "holt_winters"),
    (2 * MAX_HW_SEASON, MAX_HW_SEASON, "holt_winters"), (400, 200, "stl"), (399, 200, "holt"),
])
def test_model_choice_follows_the_history(buckets, season, model):
    assert choose_model(buckets, season) == model


def seasonal(index, season, base=100.0, amplitude=60.0):
    return base + amplitude * np.sin(2 * np.pi * np.asarray(index) / season)


def fitted(buckets: int, season_buckets: int, noise=2.0, seed=0, start=1000):
    rng = np.random.default_rng(seed)
    forecaster = ArrivalForecaster(bucket_s=60, season_length_s=60 * season_buckets,
                                   history_s=60 * season_buckets * 3, refit_interval_s=600)
    index = np.arange(start, start + buckets)
    forecaster.load(zip(index.tolist(), (seasonal(index, season_buckets) + rng.normal(0, noise, buckets)).tolist()))
    forecaster.refit(now=0.0)
    return forecaster, start + buckets


def test_no_history_no_forecast_and_short_history_is_flat():
    forecaster = ArrivalForecaster(bucket_s=60, season_length_s=3600)
    assert forecaster.forecast(now=0.0, horizon_s=120) is None
    assert forecaster.refit(0.0) == "naive"
    for second in range(0, 185):
        forecaster.observe(second, 5.0)
    assert forecaster.refit(0.0) == "naive"
    forecast = forecaster.forecast(now=185.0, horizon_s=120)
    assert forecast.model == "naive" and all(r == pytest.approx(5.0) for r in forecast.rates)


@pytest.mark.parametrize("season_buckets, model", [(24, "holt_winters"), (240, "stl")])
def test_seasonal_models_beat_a_flat_forecast(season_buckets, model):
    """With two seasons of history the seasonal model forecasts the cycle, far better than the last value."""
    forecaster, next_index = fitted(int(2.5 * season_buckets), season_buckets)
    assert forecaster.model == model
    horizon = season_buckets // 3
    forecast = forecaster.forecast(now=next_index * 60.0, horizon_s=60 * horizon)
    truth = seasonal(np.arange(next_index, next_index + len(forecast.rates)), season_buckets)
    flat = np.full_like(truth, forecaster.history[next_index - 1])
    error = np.abs(np.array(forecast.rates) - truth).mean()
    assert error < 0.35 * np.abs(flat - truth).mean()
    assert error < 12.0


def test_trend_with_short_history():
    forecaster = ArrivalForecaster(bucket_s=60, season_length_s=86_400)
    forecaster.load((i, 10.0 + 2.0 * i) for i in range(30))
    assert forecaster.refit(0.0) == "holt"
    forecast = forecaster.forecast(now=30 * 60.0, horizon_s=300)
    assert forecast.rates[0] > 65 and forecast.rates[-1] > forecast.rates[0]


def test_each_new_bucket_updates_the_fitted_model_without_a_refit():
    """Between refits a level shift in new buckets moves the forecast (one smoothing step per bucket)."""
    forecaster, next_index = fitted(60, 24, noise=0.5)
    fitted_at = forecaster.fitted_at
    before = forecaster.forecast(now=next_index * 60.0, horizon_s=60).rates[0]
    for k in range(6):
        index = next_index + k
        for second in range(index * 60, index * 60 + 60):
            forecaster.observe(second, float(seasonal(index, 24)) + 80.0)
    forecaster.observe((next_index + 6) * 60, 0.0)  # completes the last bucket
    after = forecaster.forecast(now=(next_index + 6) * 60.0, horizon_s=60).rates[0]
    truth = float(seasonal(next_index + 6, 24))
    assert forecaster.fitted_at == fitted_at
    assert after - truth > 40 and abs(before - float(seasonal(next_index, 24))) < 10


def test_half_seen_buckets_are_dropped_and_refit_is_due_on_time():
    forecaster = ArrivalForecaster(bucket_s=60, season_length_s=3600, refit_interval_s=600)
    assert forecaster.due(0.0)
    for second in range(50, 61):  # 10 seconds of bucket 0, then bucket 1 begins
        forecaster.observe(second, 1.0)
    assert forecaster.history == {}
    forecaster.refit(100.0)
    assert not forecaster.due(699.0) and forecaster.due(700.0)


def test_forecast_peak_and_rate_at():
    forecast = Forecast(start=600.0, step_s=60.0, rates=(1.0, 5.0, 2.0), model="holt")
    assert forecast.rate_at(599.0) is None and forecast.rate_at(660.0) == 5.0
    assert forecast.peak(610.0, 650.0) == 1.0
    assert forecast.peak(610.0, 700.0) == 5.0
    assert forecast.peak(610.0, 10_000.0) == 5.0
    assert forecast.peak(10_000.0, 10_001.0) is None
    assert all(math.isfinite(r) for r in forecast.rates)


def test_a_failing_fit_falls_back_to_naive(monkeypatch):
    """A fit that raises (odd data) leaves a naive forecast instead of an error across the tick."""
    forecaster, next_index = fitted(60, 24)

    def broken(series):
        raise ValueError("optimiser gave up")

    monkeypatch.setattr(forecaster, "_fit", broken)
    assert forecaster.refit(now=1.0) == "naive"
    assert forecaster.forecast(now=next_index * 60.0, horizon_s=60).model == "naive"
