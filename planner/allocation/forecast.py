"""Forecast of arrivals per bucket, for pacing: how many requests are still to come before the horizon ends.

Model choice by the data (statsmodels):
- at least two seasons of history: additive Holt-Winters (ExponentialSmoothing, seasonal period = a season in
  buckets) and STL (seasonal-trend decomposition by Loess, with an AR(1) on the deseasonalised series) are both
  fitted on the history less its last half season and scored on that half season; the one with the lower mean
  absolute error is refitted on all of it;
- less history: simple exponential smoothing of the level (no seasonality can be learnt yet);
- no history at all: no forecast (the caller extrapolates the rate seen so far).
Between refits (every `refit_every` updates) the update is cheap: the median ratio of arrivals to forecast over
the last `ratio_window` buckets completed since the fit scales the rest of the forecast. A level shift moves it
within a few buckets; a short surprise spike does not (its consumption already shows in the remaining budgets,
and a spike that is over says nothing about the traffic to come; an EWMA of the ratio kept forecasting the spike
after it ended and priced the campaign's tail too high).
Refits are robust to such spikes too: before a refit, the buckets completed since the last fit are judged against
that fit's forecast (a Hampel filter on the log ratio actual / forecast, each bucket against the median of its
neighbours within `ratio_window` either side, the fit's own last buckets counting as ratio 1); an outlier enters the new fit as the forecast times that local median. A level
shift moves the local median with it and is kept; a spike is not learnt as a new level. (Measured: a refit just
after the bench's 3x spike, fitted on the raw counts, forecast the rest of the day 1.5-2.2x too high and cost 2.4
points of value on the 60 s campaign, which is what the live bench hit: its warm-up cycles put a refit there.)
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["ArrivalForecast"]


def _fit_holt_winters(y: np.ndarray, period: int):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    model = ExponentialSmoothing(y, trend=None, seasonal="add", seasonal_periods=period,
                                 initialization_method="estimated")
    return model.fit()


def _fit_stl(y: np.ndarray, period: int):
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.forecasting.stl import STLForecast

    return STLForecast(y, ARIMA, model_kwargs={"order": (1, 0, 0), "trend": "c"}, period=period,
                       robust=True).fit()


def _fit_level(y: np.ndarray):
    from statsmodels.tsa.holtwinters import SimpleExpSmoothing

    return SimpleExpSmoothing(y, initialization_method="estimated").fit()


class ArrivalForecast:
    """Arrival counts per bucket of `bucket_s` seconds (bucket b covers [b * bucket_s, (b + 1) * bucket_s))."""

    def __init__(self, bucket_s: float, season_buckets: int, refit_every: int = 30, max_seasons: int = 4,
                 ratio_window: int = 7):
        self.bucket_s = bucket_s
        self.season = season_buckets
        self.refit_every = refit_every
        self.max_seasons = max_seasons  # history used in a fit, in seasons
        self.ratio_window = ratio_window  # completed buckets whose median actual/forecast ratio scales the forecast
        self.counts: dict[int, float] = {}
        self.model_name = "none"
        self._path: np.ndarray | None = None  # forecast for buckets fit_end + 1, fit_end + 2, ...
        self._fit_end = -1  # last bucket the model was fitted on
        self._updates = 0
        self.level_ratio = 1.0  # actual / forecast over buckets completed since the fit
        self._ratio_through = -1  # last bucket folded into level_ratio
        self._ratios: list[float] = []  # actual / forecast of the buckets completed since the fit (seeded with 1s)
        self.cleaned: dict[int, float] = {}  # bucket -> the value refits use instead of an outlier count
        self.outlier_floor = math.log(1.5)  # a bucket within 1.5x of its neighbours' level is never an outlier
        self._deviations: list[float] = []  # |log ratio - local median| of the buckets judged so far (noise scale)

    def update(self, counts: dict[int, float], now: float) -> None:
        """New totals per bucket (the whole hash is fine); refits every `refit_every` calls, else cheap update."""
        self.counts = {int(b): float(c) for b, c in counts.items()}
        current = int(now // self.bucket_s)
        self._updates += 1
        if self._path is None or self._updates % self.refit_every == 0:
            self._refit(current)
        self._cheap_update(current)

    def _series(self, current: int) -> np.ndarray:
        done = [b for b in self.counts if b < current]
        if not done:
            return np.zeros(0)
        first = max(min(done), current - self.max_seasons * self.season)
        self.cleaned = {b: v for b, v in self.cleaned.items() if b >= first}
        return np.array([self.cleaned.get(b, self.counts.get(b, 0.0)) for b in range(first, current)])

    def _judge_since_fit(self, current: int) -> None:
        """Hampel filter over the buckets completed since the last fit: log(actual / forecast) against the median
        of its neighbours (ratio_window buckets either side, cut at the newest; before the first, the fit's own
        buckets at ratio 1); beyond max(outlier_floor, 3 robust sigmas of earlier judgements) it is an outlier, and the next fit sees
        forecast x that median instead."""
        first = max(self._fit_end + 1, current - self.max_seasons * self.season)  # what a fit can see
        if self._path is None or current <= first:
            return
        buckets = list(range(first, current))
        predicted = np.array([self.rate(b, corrected=False) for b in buckets])
        actual = np.array([self.counts.get(b, 0.0) for b in buckets])
        if not (predicted > 0).all():
            return
        # Context: the fit's own last `ratio_window` buckets, at ratio 1 (in sample), so that a spike among the
        # few buckets since the fit is judged against the level before it, not against itself.
        half = self.ratio_window
        log_ratio = np.concatenate([np.zeros(half), np.log(np.maximum(actual, 0.5) / predicted)])
        local = np.array([np.median(log_ratio[i - half:i + half + 1]) for i in range(half, len(log_ratio))])
        deviation = np.abs(log_ratio[half:] - local)
        # The noise scale comes from earlier judgements (a spike can be most of the few buckets judged now).
        earlier = self._deviations[-self.max_seasons * self.season:]
        sigma = 1.4826 * float(np.median(earlier)) if len(earlier) >= self.ratio_window else 0.0
        limit = max(self.outlier_floor, 3 * sigma)
        for i in np.flatnonzero(deviation > limit):
            self.cleaned[buckets[i]] = float(predicted[i] * np.exp(local[i]))
        self._deviations = earlier + deviation.tolist()

    def _refit(self, current: int) -> None:
        self._judge_since_fit(current)
        y = self._series(current)
        self._fit_end = current - 1
        self.level_ratio, self._ratio_through = 1.0, current - 1
        # The new fit is taken to be right about the level until most of the ratio window says otherwise: a
        # spike in the first buckets after a refit must not become the level (it did, 2.9x, mid-spike).
        self._ratios = [1.0] * self.ratio_window
        horizon = 4 * self.season + 1
        if len(y) == 0:
            self._path, self.model_name = None, "none"
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if len(y) >= 2 * self.season:
                    name, fit = self._choose(y)
                    path = np.asarray(fit.forecast(horizon))
                elif len(y) >= 4:
                    name, path = "level", np.asarray(_fit_level(y).forecast(horizon))
                else:
                    name, path = "mean", np.full(horizon, float(y.mean()))
            except Exception:  # a fit that fails must not stop planning: fall back to the recent mean
                name, path = "mean", np.full(horizon, float(y[-self.season:].mean()))
        self.model_name = name
        self._path = np.maximum(path, 0.0)

    def _choose(self, y: np.ndarray):
        hold = max(2, self.season // 2)
        train, test = y[:-hold], y[-hold:]
        scores = {}
        for name, fit_fn in (("holt_winters", _fit_holt_winters), ("stl", _fit_stl)):
            if len(train) < 2 * self.season:
                scores[name] = math.inf if name == "stl" else 0.0
                continue
            try:
                scores[name] = float(np.mean(np.abs(fit_fn(train, self.season).forecast(hold) - test)))
            except Exception:
                scores[name] = math.inf
        name = min(scores, key=scores.get)
        fit_fn = _fit_holt_winters if name == "holt_winters" else _fit_stl
        return name, fit_fn(y, self.season)

    def _cheap_update(self, current: int) -> None:
        for b in range(self._ratio_through + 1, current):
            predicted = self.rate(b, corrected=False)
            if predicted is not None and predicted > 0:
                self._ratios.append(self.counts.get(b, 0.0) / predicted)
        self._ratio_through = max(self._ratio_through, current - 1)
        recent = self._ratios[-self.ratio_window:]
        self.level_ratio = float(np.median(recent)) if recent else 1.0

    def rate(self, bucket: int, corrected: bool = True) -> float | None:
        """Forecast arrivals in `bucket` (None without a model)."""
        if self._path is None:
            return None
        step = bucket - self._fit_end - 1
        if step < 0:
            return self.counts.get(bucket, 0.0)
        value = float(self._path[min(step, len(self._path) - 1)])
        return value * (self.level_ratio if corrected else 1.0)

    def remaining(self, now: float, end: float) -> float | None:
        """Forecast arrivals in [now, end): the rest of the current bucket plus every later bucket up to `end`."""
        if self._path is None:
            return None
        if end <= now:
            return 0.0
        total = 0.0
        b = int(now // self.bucket_s)
        while b * self.bucket_s < end:
            lo, hi = max(now, b * self.bucket_s), min(end, (b + 1) * self.bucket_s)
            total += self.rate(b) * (hi - lo) / self.bucket_s
            b += 1
        return total
