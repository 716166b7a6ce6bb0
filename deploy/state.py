"""The controller's durable state in Redis: the last applied spec and the replicas it runs."""

from __future__ import annotations

import orjson

__all__ = ["ControllerStateStore"]


class ControllerStateStore:
    """Reads and writes one JSON document; the client belongs to the caller."""

    def __init__(self, client, namespace: str = "raygate") -> None:
        self.client = client  # redis.asyncio.Redis
        self.key = f"{namespace}:controller:state"

    async def save(self, state: dict) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key, orjson.dumps(state))
            pipe.incr(self.key + ":writes")
            await pipe.execute()

    async def load(self) -> dict | None:
        raw = await self.client.get(self.key)
        return orjson.loads(raw) if raw else None

    async def clear(self) -> None:
        await self.client.delete(self.key, self.key + ":writes")
