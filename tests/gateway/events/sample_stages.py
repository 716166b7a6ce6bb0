"""User stage code the tests name by import path (like my_pkg.stages in the issue)."""

from __future__ import annotations

__all__ = ["is_big", "enrich", "Score", "explode", "AsyncTag"]


def is_big(data: dict) -> bool:
    return data["amount"] >= 10


def enrich(data: dict) -> dict | None:
    if data.get("drop"):
        return None
    if data.get("boom"):
        raise RuntimeError("enrich failed")
    return {**data, "cents": int(round(data["amount"] * 100))}


class Score:
    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def __call__(self, batch: dict) -> dict:
        return {"events": [{**e, "data": {**e["data"], "score": e["data"]["amount"] * self.factor}}
                           for e in batch["events"]], "dead": []}


def explode(batch: dict) -> str:
    return "not a batch"


class AsyncTag:
    async def __call__(self, batch: dict) -> dict:
        return {"events": [{**e, "data": {**e["data"], "tag": "async"}} for e in batch["events"]]}
