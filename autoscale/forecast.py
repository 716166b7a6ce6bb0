"""Arrivals forecasts: statsmodels Holt-Winters or STL, chosen by the data, refitted now and then, updated each bucket.

Arrivals are summed into buckets (`forecast_bucket_s`, a minute by default); the forecast is a rate (arrivals per
second) per future bucket. The model is chosen from the history there is (`choose_model`):

- fewer than 8 buckets: `naive`, the mean of the last few buckets;
- less than two seasons: `holt`, additive damped trend (statsmodels `ExponentialSmoothing`);
- two seasons or more, a season of at most 96 buckets: `holt_winters`, additive damped trend plus additive
  seasonality (`ExponentialSmoothing(seasonal="add")`);
- two seasons or more with a longer season (a day of minutes is 1,440 buckets, too many seasonal states for
  Holt-Winters' optimiser): `stl`, an STL decomposition for the seasonal profile and damped Holt on the
  seasonally adjusted series; the profile is smoothed over 1/48 of the season, so that one day's bursts are not
  forecast again the next day.

A fit is the costly part (`refit`, every `refit_interval_s`). In between, every completed bucket runs one step of
the same smoothing recursions with the fitted parameters (`_step`), so a tick costs microseconds. The seasonal
profile is indexed by absolute bucket number modulo the season, so gaps in the history do not shift the phase.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = ["Forecast", "ArrivalForecaster", "choose_model", "MIN_HOLT_BUCKETS", "MAX_HW_SEASON"]

MIN_HOLT_BUCKETS = 8  # below this, no model: the mean of the last buckets
MAX_HW_SEASON = 96  # longest season (in buckets) fitted by Holt-Winters; longer seasons go through STL
# the level keeps adapting between refits: a clean history would otherwise fit alpha ~ 0 and freeze the forecast
_BOUNDS = {"smoothing_level": (0.05, 1.0)}
MAX_HOLT_FIT = 480  # Holt's parameters are fitted on at most this many of the newest buckets


@dataclass(frozen=True)
class Forecast:
    """Forecast arrival rates of one version: `rates[i]` covers [start + i*step_s, start + (i+1)*step_s)."""

    start: float  # unix time the first step begins (the start of the current bucket)
    step_s: float  # bucket length
    rates: tuple[float, ...]  # arrivals per second, >= 0
    model: str  # naive | holt | holt_winters | stl

    def rate_at(self, t: float) -> float | None:
        index = math.floor((t - self.start) / self.step_s)
        if 0 <= index < len(self.rates):
            return self.rates[index]
        return None

    def peak(self, start: float, end: float) -> float | None:
        """Highest forecast rate over [start, end]; None when the forecast does not cover `start`."""
        first = math.floor((start - self.start) / self.step_s)
        last = math.floor((end - self.start) / self.step_s)
        if first < 0 or first >= len(self.rates):
            return None
        return max(self.rates[first:min(last, len(self.rates) - 1) + 1])


def choose_model(buckets: int, season_buckets: int) -> str:
    """Which model the history supports (rules in the module docstring)."""
    if buckets < MIN_HOLT_BUCKETS:
        return "naive"
    if buckets < 2 * season_buckets:
        return "holt"
    return "holt_winters" if season_buckets <= MAX_HW_SEASON else "stl"


@dataclass
class _State:
    """Smoothing state and fitted parameters of the additive damped (seasonal) model."""

    level: float
    trend: float
    alpha: float
    beta: float
    phi: float
    gamma: float = 0.0
    seasonal: np.ndarray | None = None  # by absolute bucket index % season


class ArrivalForecaster:
    """One version's arrivals: bucketing, model fitting and forecasting. Pure computation; time is passed in."""

    def __init__(self, bucket_s: float = 60.0, season_length_s: float = 86_400.0, history_s: float = 3 * 86_400.0,
                 refit_interval_s: float = 600.0) -> None:
        self.bucket_s = float(bucket_s)
        self.season = max(2, round(season_length_s / bucket_s))
        self.max_buckets = max(self.season * 3, round(history_s / bucket_s))
        self.refit_interval_s = refit_interval_s
        self.history: dict[int, float] = {}  # completed bucket index -> arrivals per second
        self.model = "naive"
        self.fitted_at: float | None = None
        self._state: _State | None = None
        self._open: tuple[int, float, int] | None = None  # (bucket index, arrivals so far, seconds seen)
        self._last_index: int | None = None  # newest completed bucket

    # --- data in -------------------------------------------------------------------------------------------------
    def observe(self, second: int, arrivals: float) -> list[tuple[int, float]]:
        """Add one second of arrivals (seconds in increasing order). Returns the buckets this completed."""
        index = math.floor(second / self.bucket_s)
        done = []
        if self._open is not None and index != self._open[0]:
            open_index, total, seen = self._open
            if seen * 2 >= self.bucket_s:  # at least half the bucket seen: its mean rate is trustworthy
                rate = total / seen
                self._add_bucket(open_index, rate)
                done.append((open_index, rate))
            self._open = None
        if self._open is None:
            self._open = (index, 0.0, 0)
        _, total, seen = self._open
        self._open = (index, total + arrivals, seen + 1)
        return done

    def load(self, buckets: Iterable[tuple[int, float]]) -> int:
        """Add completed buckets (index, rate) from storage, e.g. after a restart."""
        count = 0
        for index, rate in sorted(buckets):
            if self._last_index is None or index > self._last_index:
                self._add_bucket(int(index), float(rate))
                count += 1
        return count

    def _add_bucket(self, index: int, rate: float) -> None:
        self.history[index] = max(0.0, rate)
        if self._state is not None and self._last_index is not None and index > self._last_index:
            self._step(index, rate)
        self._last_index = index if self._last_index is None else max(self._last_index, index)
        while len(self.history) > self.max_buckets:
            del self.history[min(self.history)]

    # --- fitting ---------------------------------------------------------------------------------------------------
    def due(self, now: float) -> bool:
        return self.fitted_at is None or now - self.fitted_at >= self.refit_interval_s

    def refit(self, now: float) -> str:
        """Fit the model the history supports; returns its name. Falls back to `naive` if a fit fails."""
        self.fitted_at = now
        series = self._series()
        self.model = choose_model(len(series), self.season)
        try:
            self._state = None if self.model == "naive" else self._fit(series)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            self.model, self._state = "naive", None
        return self.model

    def _series(self) -> np.ndarray:
        """Contiguous history from the oldest kept bucket to the newest, gaps filled by linear interpolation."""
        if not self.history:
            return np.zeros(0)
        first, last = min(self.history), max(self.history)
        index = np.arange(first, last + 1)
        known = np.array(sorted(self.history))
        values = np.array([self.history[i] for i in known])
        self._first_index = first
        return np.interp(index, known, values)

    def _fit(self, y: np.ndarray) -> _State:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        first = self._first_index
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.model == "holt_winters":
                fit = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add",
                                           seasonal_periods=self.season, initialization_method="estimated",
                                           bounds=_BOUNDS).fit()
                seasonal = np.zeros(self.season)
                tail = np.asarray(fit.season)[-self.season:]
                for offset, value in enumerate(tail):
                    seasonal[(first + len(y) - self.season + offset) % self.season] = value
                params = fit.params
                return _State(float(fit.level[-1]), float(fit.trend[-1]), float(params["smoothing_level"]),
                              float(params["smoothing_trend"]), float(params["damping_trend"]),
                              float(params["smoothing_seasonal"]), seasonal)
            seasonal = None
            adjusted = y
            if self.model == "stl":
                seasonal = self._stl_profile(y, first)
                adjusted = y - seasonal[(first + np.arange(len(y))) % self.season]
            # the smoothing parameters need recent data only; the tail keeps the fit fast on long histories
            fit = ExponentialSmoothing(adjusted[-MAX_HOLT_FIT:], trend="add", damped_trend=True,
                                       initialization_method="estimated", bounds=_BOUNDS).fit()
            params = fit.params
            return _State(float(fit.level[-1]), float(fit.trend[-1]), float(params["smoothing_level"]),
                          float(params["smoothing_trend"]), float(params["damping_trend"]), 0.0, seasonal)

    def _stl_profile(self, y: np.ndarray, first: int) -> np.ndarray:
        """Seasonal profile by phase: STL on the series averaged down to at most MAX_HW_SEASON points per season
        (a day of minutes would make STL slow and its profile noisy), interpolated back, circularly."""
        from statsmodels.tsa.seasonal import STL

        factor = math.ceil(self.season / MAX_HW_SEASON)
        skip = (-first) % factor  # start coarse buckets on a phase multiple of `factor`
        usable = (len(y) - skip) // factor * factor
        coarse = y[skip:skip + usable].reshape(-1, factor).mean(axis=1)
        coarse_season = self.season / factor
        period = max(2, round(coarse_season))
        decomposition = STL(coarse, period=period, robust=True).fit()
        profile = np.asarray(decomposition.seasonal)
        phase0 = (first + skip) % self.season  # fine phase of coarse point 0
        # the last full season of the coarse profile, placed by fine phase (centre of each coarse bucket)
        points = profile[-period:]
        centres = (phase0 + (np.arange(len(profile))[-period:]) * factor + (factor - 1) / 2) % self.season
        order = np.argsort(centres)
        xs, vs = centres[order], points[order]
        xs = np.concatenate([xs - self.season, xs, xs + self.season])
        vs = np.concatenate([vs, vs, vs])
        profile = np.interp(np.arange(self.season), xs, vs)
        # the cycle's shape, not the minutes: a circular moving average over 1/48 of the season (30 min of a day)
        # keeps last season's bursts out of the profile, where they would be forecast again
        width = max(1, self.season // 48)
        if width > 1:
            padded = np.concatenate([profile[-width:], profile, profile[:width]])
            smooth = np.convolve(padded, np.ones(width) / width, mode="same")
            profile = smooth[width:width + self.season]
        return profile

    def _step(self, index: int, y: float) -> None:
        """One step of additive damped Holt(-Winters) with the fitted parameters (gaps: one step per bucket)."""
        st = self._state
        s_prev = st.seasonal[index % self.season] if st.seasonal is not None else 0.0
        previous = st.level + st.phi * st.trend
        st.level = st.alpha * (y - s_prev) + (1 - st.alpha) * previous
        st.trend = st.beta * (st.level - (previous - st.phi * st.trend)) + (1 - st.beta) * st.phi * st.trend
        if st.seasonal is not None and st.gamma > 0:
            st.seasonal[index % self.season] = st.gamma * (y - previous) + (1 - st.gamma) * s_prev

    # --- forecasting -----------------------------------------------------------------------------------------------
    def forecast(self, now: float, horizon_s: float) -> Forecast | None:
        """Rates from the bucket holding `now` to `now + horizon_s`; None with no history at all."""
        if self._last_index is None:
            return None
        current = math.floor(now / self.bucket_s)
        steps = max(1, math.floor((now + horizon_s) / self.bucket_s) - current + 1)
        rates = []
        st = self._state
        for k in range(steps):
            index = current + k
            h = max(1, index - self._last_index)
            if st is None:
                recent = [self.history[i] for i in sorted(self.history)[-4:]]
                value = sum(recent) / len(recent)
            else:
                damped = sum(st.phi ** j for j in range(1, h + 1)) if st.phi < 1 else float(h)
                value = st.level + damped * st.trend
                if st.seasonal is not None:
                    value += st.seasonal[index % self.season]
            rates.append(max(0.0, float(value)) if math.isfinite(value) else 0.0)
        return Forecast(start=current * self.bucket_s, step_s=self.bucket_s, rates=tuple(rates), model=self.model)
