"""Pacing and per-constraint correction, pure functions of K-vectors.

- The sample S stands in for the N(t) requests still to come, so each constraint's capacity for the solve is
  b_k(t) * |S| / N(t) with b_k(t) = b_k - used_k(t) (never below a tiny positive floor: an exhausted budget gets a
  high price, not a division by zero).
- Correction: the real consumption of constraint k (lagging feedback and model error included) is compared with
  what the published prices planned for the same requests; the factor (planned / actual) ** gain, bounded,
  multiplies its paced capacity (consumption ahead of plan: a smaller capacity, a higher price).
"""

from __future__ import annotations

import numpy as np

__all__ = ["paced_capacities", "per_request_rates", "remaining_budget", "remaining_requests", "update_correction"]

_FLOOR = 1e-9  # share of the capacity kept as the smallest paced capacity


def remaining_budget(capacity: np.ndarray, used: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(capacity, dtype=np.float64) - used, 0.0)


def paced_capacities(capacity: np.ndarray, used: np.ndarray, sample_size: float, remaining_requests: float,
                     correction: np.ndarray | None = None) -> np.ndarray:
    """b_k(t) * |S| / N(t) * correction_k, floored at a tiny share of the capacity."""
    capacity = np.asarray(capacity, dtype=np.float64)
    share = sample_size / max(float(remaining_requests), 1.0)
    paced = remaining_budget(capacity, used) * share
    if correction is not None:
        paced = paced * correction
    return np.maximum(paced, _FLOOR * capacity)


def remaining_requests(forecast: float | None, observed_rate: float, time_left: float, margin: float) -> float:
    """N(t): the forecast arrivals still to come (without a forecast, the rate observed so far over the time left),
    times 1 + margin; at least 1."""
    expected = forecast if forecast is not None else observed_rate * max(time_left, 0.0)
    return max(expected * (1.0 + margin), 1.0)


def per_request_rates(capacity: np.ndarray, used: np.ndarray, remaining_requests: float) -> np.ndarray:
    """rho_k(t) = b_k(t) / N(t): what each coming request may consume on average."""
    return remaining_budget(capacity, used) / max(float(remaining_requests), 1.0)


def update_correction(correction: np.ndarray, planned: np.ndarray, actual: np.ndarray, gain: float,
                      step_bounds: tuple[float, float] = (0.8, 1.25),
                      bounds: tuple[float, float] = (0.5, 2.0)) -> np.ndarray:
    """Move each factor by (planned / actual) ** gain where both are known; unchanged where planned is 0."""
    planned = np.asarray(planned, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    ratio = np.where(actual > 0, planned / np.where(actual > 0, actual, 1.0), step_bounds[1])
    step = np.clip(ratio ** gain, *step_bounds)
    step = np.where(planned > 0, step, 1.0)
    return np.clip(correction * step, *bounds)
