"""Parsing the allocator's request bodies: every problem is a `replicas.BadInput` (HTTP 400) naming the field."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from replicas import BadInput

__all__ = ["DecisionRequest", "FeedbackRequest", "parse_decision", "parse_feedback"]

MAX_CANDIDATES = 1000  # candidates in one request


@dataclass(frozen=True)
class DecisionRequest:
    user: str
    items: tuple[str, ...]  # J item names
    value: np.ndarray  # (J,) predicted gain before calibration
    usage: np.ndarray  # (J, R) usage per usage type, >= 0


@dataclass(frozen=True)
class FeedbackRequest:
    user: str
    item: str
    outcome: float  # in [0, 1]
    value: float | None  # the prediction the decision used, when the client sends it back


def _number(x, field: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise BadInput(f"{field}: expected a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise BadInput(f"{field}: must be finite, got {x}")
    return x


def _text(payload: dict, key: str, field: str) -> str:
    if key not in payload:
        raise BadInput(f"{field}: missing")
    x = payload[key]
    if isinstance(x, bool) or not isinstance(x, (str, int)) or not str(x) or len(str(x)) > 200:
        raise BadInput(f"{field}: expected a non-empty string of at most 200 characters")
    return str(x)


_FINITE_TYPES = (float, int)  # exact types: bool (an int subclass) takes the slow path and is refused there


def _fast_candidate(cand, j: int, items: list, value: np.ndarray, usage: np.ndarray, usage_index: dict[str, int],
                    probabilities: bool) -> bool:
    """Fill candidate j if it is well formed (the common case, no messages built); False sends it to the checks
    that name the field."""
    if type(cand) is not dict:
        return False
    item, v, use = cand.get("item"), cand.get("value"), cand.get("usage", {})
    if type(item) is not str or not 0 < len(item) <= 200 or type(v) not in _FINITE_TYPES or type(use) is not dict:
        return False
    if not math.isfinite(v) or (probabilities and not 0.0 <= v <= 1.0):
        return False
    row = usage[j]
    for name, amount in use.items():
        r = usage_index.get(name)
        if r is None or type(amount) not in _FINITE_TYPES or not math.isfinite(amount) or amount < 0:
            row[:] = 0.0
            return False
        row[r] = amount
    items.append(item)
    value[j] = v
    return True


def parse_decision(payload, usage_index: dict[str, int], probabilities: bool) -> DecisionRequest:
    """Validate `{"user", "candidates": [{"item", "value", "usage": {type: amount}}]}`."""
    if not isinstance(payload, dict):
        raise BadInput("body: expected a JSON object with 'user' and 'candidates'")
    user = _text(payload, "user", "user")
    cands = payload.get("candidates")
    if cands is None:
        raise BadInput("candidates: missing")
    if not isinstance(cands, list) or not cands:
        raise BadInput("candidates: expected a non-empty list")
    if len(cands) > MAX_CANDIDATES:
        raise BadInput(f"candidates: at most {MAX_CANDIDATES}, got {len(cands)}")
    J, R = len(cands), len(usage_index)
    items, value, usage = [], np.empty(J), np.zeros((J, R))
    for j, cand in enumerate(cands):
        if _fast_candidate(cand, j, items, value, usage, usage_index, probabilities):
            continue
        where = f"candidates[{j}]"
        if not isinstance(cand, dict):
            raise BadInput(f"{where}: expected an object with 'item', 'value' and 'usage'")
        items.append(_text(cand, "item", f"{where}.item"))
        if "value" not in cand:
            raise BadInput(f"{where}.value: missing")
        value[j] = _number(cand["value"], f"{where}.value")
        if probabilities and not 0.0 <= value[j] <= 1.0:
            raise BadInput(f"{where}.value: must be a probability in [0, 1] (calibration is on), got {value[j]}")
        use = cand.get("usage", {})
        if not isinstance(use, dict):
            raise BadInput(f"{where}.usage: expected an object of usage type -> amount")
        for name, amount in use.items():
            r = usage_index.get(name)
            if r is None:
                raise BadInput(f"{where}.usage.{name}: unknown usage type (known: {', '.join(usage_index)})")
            amount = _number(amount, f"{where}.usage.{name}")
            if amount < 0:
                raise BadInput(f"{where}.usage.{name}: must be >= 0, got {amount}")
            usage[j, r] = amount
    return DecisionRequest(user, tuple(items), value, usage)


def parse_feedback(payload) -> FeedbackRequest:
    """Validate `{"user", "item", "outcome"}` (+ optional "value", the prediction that was decided on)."""
    if not isinstance(payload, dict):
        raise BadInput("body: expected a JSON object with 'user', 'item' and 'outcome'")
    user = _text(payload, "user", "user")
    item = _text(payload, "item", "item")
    if "outcome" not in payload:
        raise BadInput("outcome: missing")
    outcome = _number(payload["outcome"] if not isinstance(payload["outcome"], bool) else float(payload["outcome"]),
                      "outcome")
    if not 0.0 <= outcome <= 1.0:
        raise BadInput(f"outcome: must be in [0, 1], got {outcome}")
    value = None
    if payload.get("value") is not None:
        value = _number(payload["value"], "value")
        if not 0.0 <= value <= 1.0:
            raise BadInput(f"value: must be a probability in [0, 1], got {value}")
    return FeedbackRequest(user, item, outcome, value)
