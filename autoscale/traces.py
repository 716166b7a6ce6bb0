"""Traffic traces for the autoscaling simulation: arrival rates (requests per second) per second.

- `diurnal`: a day (or a compressed day of `period_s`) with a night trough, a morning ramp, a lunch bump and an
  evening peak; slow multiplicative noise (AR(1) in log space, a few minutes' memory) and short bursts (push
  notifications: +60% for 2-5 minutes, a few a day). `history` gives earlier days of the same shape with other
  noise, standing for what the scaler would load from Redis.
- `flash_crowd`: flat, then 5x within 10 s for ten minutes, then back.
- `ramp`: a slow linear ramp from 50 to 500 rps over 90 minutes, then flat.
- `oscillation`: load swinging between 1x and 3x every minute (the case Ray Serve users report flapping on).
"""

from __future__ import annotations

import numpy as np

__all__ = ["diurnal", "diurnal_history", "flash_crowd", "ramp", "oscillation"]


def _shape(t: np.ndarray, period_s: float) -> np.ndarray:
    hour = (t % period_s) / period_s * 24.0
    night, peak = 40.0, 400.0
    morning = 1 / (1 + np.exp(-(hour - 8.5) * 2.2))  # steep rise around 08:30
    evening = 1 / (1 + np.exp((hour - 22.0) * 1.5))  # fall around 22:00
    lunch = 0.25 * np.exp(-((hour - 12.5) / 0.8) ** 2)
    dinner = 0.35 * np.exp(-((hour - 19.5) / 1.2) ** 2)
    return night + (peak - night) * (0.7 * morning * evening + lunch + dinner)


def _noise(n: int, rng: np.random.Generator, memory_s: float = 180.0, sigma: float = 0.08) -> np.ndarray:
    phi = np.exp(-1.0 / memory_s)
    shocks = rng.normal(0.0, sigma * np.sqrt(1 - phi ** 2), n)
    out = np.empty(n)
    level = 0.0
    for i in range(n):
        level = phi * level + shocks[i]
        out[i] = level
    return np.exp(out)


def _bursts(t: np.ndarray, rng: np.random.Generator, per_period: int, period_s: float) -> np.ndarray:
    factor = np.ones(len(t))
    for _ in range(per_period):
        start = rng.uniform(0.25, 0.95) * period_s
        length = rng.uniform(120, 300)
        rise = np.clip((t - start) / 20.0, 0, 1) * np.clip((start + length - t) / 20.0, 0, 1)
        factor *= 1 + 0.6 * rise
    return factor


def diurnal(seed: int = 1, period_s: float = 86_400.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(period_s), dtype=float)
    return _shape(t, period_s) * _noise(len(t), rng) * _bursts(t, rng, 6, period_s)


def diurnal_history(days: int = 2, seed: int = 100, period_s: float = 86_400.0) -> np.ndarray:
    """Earlier periods of the diurnal trace (other noise), oldest first."""
    return np.concatenate([diurnal(seed + d, period_s) for d in range(days)])


def flash_crowd(duration_s: int = 3600, start_s: int = 900, length_s: int = 600, base: float = 100.0,
                factor: float = 5.0) -> np.ndarray:
    t = np.arange(duration_s, dtype=float)
    up = np.clip((t - start_s) / 10.0, 0, 1) * np.clip((start_s + length_s - t) / 10.0, 0, 1)
    return base * (1 + (factor - 1) * up)


def ramp(duration_s: int = 7200, start: float = 50.0, end: float = 500.0, ramp_s: int = 5400) -> np.ndarray:
    t = np.arange(duration_s, dtype=float)
    return start + (end - start) * np.clip(t / ramp_s, 0, 1)


def oscillation(duration_s: int = 3600, low: float = 100.0, high: float = 300.0, half_period_s: int = 60) -> np.ndarray:
    t = np.arange(duration_s, dtype=float)
    phase = (t % (2 * half_period_s)) / half_period_s  # 0..2
    up = np.clip(phase * 10, 0, 1) * np.clip((1 - phase) * 10 + 1e-9, 0, 1)  # 10% ramps at each edge
    return low + (high - low) * np.where(phase < 1, up, 0.0)
