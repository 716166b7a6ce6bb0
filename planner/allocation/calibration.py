"""Online calibration of predicted values per item, from feedback.

A prediction p (a conversion probability) is mapped to a calibrated q per item:
- Platt: q = sigmoid(a * logit(p) + b), refitted every few observations by a few Newton steps (warm-started,
  with a small ridge pull towards the identity a = 1, b = 0) on the item's recent feedback;
- isotonic: the weighted pool-adjacent-violators fit of outcome on p, applied by linear interpolation.
Recent feedback weighs more: an observation `half_life` observations old weighs half. Until an item has
`min_feedback` observations its predictions pass through unchanged.

Quality is measured prequentially (each outcome scored against the calibrated prediction made before it was
learnt): log loss, and a reliability table (per bin of predicted q: mean q, observed rate, count).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Calibration", "ItemCalibration", "isotonic_fit", "platt_fit"]

_EPS = 1e-6


def _logit(p):
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def platt_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, start=(1.0, 0.0), steps: int = 4,
              ridge: float = 1e-3) -> tuple[float, float]:
    """A few Newton steps of weighted logistic regression of y on x = logit(p); returns (a, b)."""
    theta = np.asarray(start, dtype=np.float64)
    prior = np.array([1.0, 0.0])
    X = np.column_stack([x, np.ones_like(x)])
    scale = max(float(w.sum()), 1.0)
    for _ in range(steps):
        q = _sigmoid(X @ theta)
        grad = X.T @ (w * (q - y)) + ridge * scale * (theta - prior)
        hess = (X * (w * q * (1 - q))[:, None]).T @ X + ridge * scale * np.eye(2)
        theta = theta - np.linalg.solve(hess, grad)
    return float(theta[0]), float(theta[1])


def isotonic_fit(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted pool-adjacent-violators: knots (x, fitted non-decreasing values)."""
    order = np.argsort(p, kind="stable")
    xs, ys, ws = p[order], y[order].astype(np.float64), w[order]
    blocks: list[list[float]] = []  # [weighted mean, weight, x sum * w]
    for xi, yi, wi in zip(xs, ys, ws):
        blocks.append([yi, wi, xi * wi])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, x2 = blocks.pop()
            m1, w1, x1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, x1 + x2])
    knots_x = np.array([b[2] / b[1] for b in blocks])
    knots_y = np.array([b[0] for b in blocks])
    return knots_x, knots_y


@dataclass
class ItemCalibration:
    """One item's recent feedback and fitted map."""

    method: Literal["platt", "isotonic"]
    capacity: int = 5000  # observations kept
    refit_every: int = 20  # observations between refits
    a: float = 1.0
    b: float = 0.0
    knots: tuple[np.ndarray, np.ndarray] | None = None
    seen: int = 0

    def __post_init__(self):
        self.p: deque = deque(maxlen=self.capacity)
        self.y: deque = deque(maxlen=self.capacity)

    def apply(self, p: np.ndarray) -> np.ndarray:
        if self.method == "isotonic" and self.knots is not None:
            return np.clip(np.interp(p, *self.knots), _EPS, 1 - _EPS)
        return _sigmoid(self.a * _logit(p) + self.b)

    def observe(self, p: float, outcome: float, half_life: float) -> None:
        self.p.append(float(p))
        self.y.append(float(outcome))
        self.seen += 1
        if self.seen % self.refit_every == 0:
            self.refit(half_life)

    def refit(self, half_life: float) -> None:
        p, y = np.asarray(self.p), np.asarray(self.y)
        w = 0.5 ** (np.arange(len(p))[::-1] / half_life)  # the newest weighs 1
        if self.method == "isotonic":
            self.knots = isotonic_fit(p, y, w)
        else:
            self.a, self.b = platt_fit(_logit(p), y, w, start=(self.a, self.b))


class Calibration:
    """Per-item calibration with quality metrics; thread-safe."""

    def __init__(self, method: Literal["off", "platt", "isotonic"] = "platt", half_life: float = 2000.0,
                 min_feedback: int = 50, bins: int = 10, window: int = 10_000):
        self.method = method
        self.half_life = half_life
        self.min_feedback = min_feedback
        self.bins = bins
        self._items: dict[str, ItemCalibration] = {}
        self._lock = threading.Lock()
        self._scored: deque = deque(maxlen=window)  # (calibrated prediction, outcome), prequential

    def apply(self, items, values: np.ndarray) -> np.ndarray:
        """Calibrated values for the candidates (pass-through when off or too little feedback)."""
        if self.method == "off":
            return values
        out = np.array(values, dtype=np.float64)
        with self._lock:
            for j, item in enumerate(items):
                cal = self._items.get(item)
                if cal is not None and cal.seen >= self.min_feedback:
                    out[j] = float(cal.apply(np.array([out[j]]))[0])
        return out

    def observe(self, item: str, predicted: float, outcome: float) -> None:
        """Learn from one outcome (1 converted, 0 not) of an item given with raw prediction `predicted`."""
        if self.method == "off":
            return
        with self._lock:
            cal = self._items.get(item)
            if cal is None:
                cal = self._items[item] = ItemCalibration(self.method)
            before = float(cal.apply(np.array([predicted]))[0]) if cal.seen >= self.min_feedback else predicted
            self._scored.append((min(max(before, _EPS), 1 - _EPS), float(outcome)))
            cal.observe(predicted, outcome, self.half_life)

    def metrics(self) -> dict:
        """Prequential log loss and the reliability table over the recent window."""
        with self._lock:
            scored = np.asarray(self._scored, dtype=np.float64).reshape(-1, 2)
        if len(scored) == 0:
            return {"count": 0, "log_loss": None, "reliability": []}
        q, y = scored[:, 0], scored[:, 1]
        log_loss = float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
        edges = np.linspace(0.0, 1.0, self.bins + 1)
        which = np.clip(np.digitize(q, edges) - 1, 0, self.bins - 1)
        table = []
        for k in range(self.bins):
            sel = which == k
            if sel.any():
                table.append({"bin": [float(edges[k]), float(edges[k + 1])], "mean_predicted": float(q[sel].mean()),
                              "observed_rate": float(y[sel].mean()), "count": int(sel.sum())})
        return {"count": len(q), "log_loss": log_loss, "reliability": table}
