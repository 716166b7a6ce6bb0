"""Hedged requests: an idempotent request with no answer after `hedge_after_s` also goes to a second replica, and
the first good answer wins. `hedge_delay` is the rule; `race` the mechanics (the loser is cancelled)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from replicas.routing.retry import Attempt

Outcome = TypeVar("Outcome")

__all__ = ["hedge_delay", "race"]


def hedge_delay(*, idempotent: bool, hedge_after_s: float | None) -> float | None:
    """Seconds without an answer after which a second copy goes out; None: never (only idempotent requests of a
    deployment with `hedge_after_s` are hedged, and only once)."""
    return hedge_after_s if idempotent and hedge_after_s else None


async def race(first: Awaitable[Outcome], second: Callable[[], Awaitable[Outcome]],
               hedge_after_s: float) -> Outcome:
    """Run `first`; if it has not finished after `hedge_after_s`, start `second()` too. The first answer (anything
    but a failed `Attempt`) wins and the other copy is cancelled; when both fail, the last failure is returned."""
    first_task = asyncio.ensure_future(first)
    done, _ = await asyncio.wait({first_task}, timeout=hedge_after_s)
    if done:
        return first_task.result()
    pending = {first_task, asyncio.ensure_future(second())}
    outcome = None
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcome = task.result()
                if not isinstance(outcome, Attempt):  # an answer (a CallResult)
                    return outcome
        return outcome
    finally:
        for task in pending:
            task.cancel()
