"""The controller's durable state in Redis: the applied spec, runtime overrides, the replicas it runs.

One store class, given its client (never building one), owning the keys under one prefix:
- `<prefix>:state`     the JSON document (schema 1), validated on load like a spec;
- `<prefix>:revision`  the revision of that document: a save carrying an older revision is refused (one
                       Lua compare-and-set), so a late, older snapshot never overwrites a newer one;
- `<prefix>:rejected`  a document that failed validation, kept aside with the reason;
- `<prefix>:epoch`     a counter bumped by every controller start: routing-table versions are
                       epoch * 2**32 + a counter, increasing across restarts whatever the clocks say.
"""

from __future__ import annotations

import time
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploy.spec import (
    ReplicaCount,
    Spec,
    SpecError,
    Weight,
    format_validation_error,
    parse_spec,
)

__all__ = ["EPOCH_SHIFT", "SCHEMA_VERSION", "ControllerStateStore", "SavedState", "SavedStateInvalid"]

SCHEMA_VERSION = 1  # bumped when the document's shape changes
EPOCH_SHIFT = 32  # table version = epoch << EPOCH_SHIFT | counter within the epoch

_SAVE_IF_NEWER = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local revision = tonumber(ARGV[2])
if revision <= current then return -current end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], revision)
return revision
"""


class SavedStateInvalid(ValueError):
    """The saved document failed validation (tampered, truncated or from an unknown version)."""


class SavedState(BaseModel):
    """Schema of the saved document. Every field typed and bounded, like a spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = Field(description="shape of this document")
    revision: int = Field(ge=1, description="increases with every save")
    generation: int = Field(ge=0, description="applies accepted so far")
    spec: dict = Field(description="the applied spec, validated again with parse_spec on load")
    channel_token: str = Field(pattern=r"^[0-9a-f]{32}$", description="replicas' channel secret, hex")
    weights: dict[str, dict[str, Weight]] = Field(description="runtime weight overrides, 'app/deployment'")
    scales: dict[str, ReplicaCount] = Field(description="runtime replica-count overrides, 'app/dep/version'")
    replicas: dict[str, tuple[str, str, str]] = Field(description="replica id -> (app, deployment, version)")
    retiring: list[str] = Field(description="replicas being drained: stopped by a restarted controller")

    def parsed_spec(self) -> Spec:
        return parse_spec(self.spec, "<saved spec>")


def validate_saved(raw: bytes) -> tuple[SavedState, Spec]:
    try:
        state = SavedState.model_validate(orjson.loads(raw))
        return state, state.parsed_spec()
    except orjson.JSONDecodeError as exc:
        raise SavedStateInvalid(f"saved state is not JSON: {exc}") from None
    except ValidationError as exc:
        raise SavedStateInvalid(format_validation_error("saved state", exc)) from None
    except SpecError as exc:
        raise SavedStateInvalid(str(exc)) from None


class ControllerStateStore:
    """Reads and writes the controller's keys; the client (redis.asyncio) belongs to the caller."""

    def __init__(self, client, prefix: str) -> None:
        self.client = client  # redis.asyncio.Redis
        self.key = f"{prefix}:state"
        self.revision_key = f"{prefix}:revision"
        self.rejected_key = f"{prefix}:rejected"
        self.epoch_key = f"{prefix}:epoch"
        self._save = client.register_script(_SAVE_IF_NEWER)

    async def load(self) -> tuple[SavedState, Spec] | None:
        """The saved state, or None when there is none; SavedStateInvalid when it fails validation."""
        raw = await self.client.get(self.key)
        return validate_saved(raw) if raw else None

    async def save(self, state: SavedState) -> bool:
        """Write `state` unless a newer revision is already saved (then False)."""
        doc = orjson.dumps(state.model_dump(mode="json"))
        return await self._save(keys=[self.key, self.revision_key], args=[doc, state.revision]) > 0

    async def saved_revision(self) -> int:
        return int(await self.client.get(self.revision_key) or 0)

    async def set_aside(self, reason: str) -> str:
        """Move the current document to the rejected key (with the reason and time); return that key."""
        raw = await self.client.get(self.key)
        record = orjson.dumps({"reason": reason, "at": time.time(), "document": (raw or b"").decode("utf-8", "replace")})
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.rejected_key, record)
            pipe.delete(self.key)
            await pipe.execute()
        return self.rejected_key

    async def next_epoch(self) -> int:
        return int(await self.client.incr(self.epoch_key))

    async def clear(self) -> None:
        await self.client.delete(self.key, self.revision_key)
