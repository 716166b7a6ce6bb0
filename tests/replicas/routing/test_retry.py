"""The retry decision over attempt values, and the hedging rule and mechanics."""

from __future__ import annotations

import asyncio

from replicas.routing.hedge import hedge_delay, race
from replicas.routing.retry import Attempt, CallResult, Decision, decide_retry

ANSWER = CallResult(500, b"{}", "v1", "r1", 1)


def decide(attempt, idempotent=True, retries=0, max_retries=3, budget_allows=True):
    return decide_retry(attempt, idempotent=idempotent, retries=retries, max_retries=max_retries,
                        budget_allows=budget_allows)


def test_never_sent_is_always_tried_again():
    busy = Attempt(None, "busy", False)
    assert decide(busy, idempotent=False, retries=9, budget_allows=False) is Decision.RETRY


def test_sent_requests_retry_only_when_idempotent_within_max_and_budget():
    lost = Attempt(None, "connection_lost", True)
    assert decide(lost) is Decision.RETRY
    assert decide(lost, idempotent=False) is Decision.FAIL
    assert decide(lost, retries=3) is Decision.FAIL
    assert decide(lost, budget_allows=False) is Decision.FAIL


def test_a_5xx_answer_is_returned_when_no_retry_happens():
    error = Attempt(ANSWER, "server_error", True)
    assert decide(error) is Decision.RETRY
    assert decide(error, idempotent=False) is Decision.RETURN
    assert decide(Attempt(ANSWER, None, True)) is Decision.RETURN


def test_hedge_delay_only_for_idempotent_requests_with_a_setting():
    assert hedge_delay(idempotent=True, hedge_after_s=0.1) == 0.1
    assert hedge_delay(idempotent=False, hedge_after_s=0.1) is None
    assert hedge_delay(idempotent=True, hedge_after_s=None) is None


async def test_race_takes_the_second_answer_when_the_first_hangs_and_cancels_the_first():
    first_cancelled = asyncio.Event()

    async def hangs():
        try:
            await asyncio.Event().wait()
        finally:
            first_cancelled.set()

    async def answers():
        return ANSWER

    assert await race(hangs(), answers, 0.001) is ANSWER
    await asyncio.wait_for(first_cancelled.wait(), 1)


async def test_race_without_a_hedge_when_the_first_is_quick():
    started = []

    async def quick():
        return ANSWER

    async def second():
        started.append(1)
        return ANSWER

    assert await race(quick(), second, 10.0) is ANSWER and not started
