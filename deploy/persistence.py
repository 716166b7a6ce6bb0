"""The controller's state across restarts: reach Redis (or wait for it), load and check the saved state,
adopt the replicas it names, rotate the channel token, and save every change (newest revision wins).

A saved state that fails validation is never applied. The controller then runs with no apps, shows the
problem in `status()["saved_state"]`, and leaves the document where it is (saving nothing over it) until it
is told to start empty: an explicit deploy, or `ControllerConfig.start_empty_on_bad_state`. Either moves
the document aside to `<prefix>:rejected` first.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import ray
import structlog

from deploy.expand import expand_spec
from deploy.policy import ControllerConfig
from deploy.records import VersionState
from deploy.replica_ops import rotate_channel_tokens
from deploy.spec import resolve_versions
from deploy.state import (
    SCHEMA_VERSION,
    ControllerStateStore,
    SavedState,
    SavedStateInvalid,
)

if TYPE_CHECKING:
    from deploy.controller import Controller

__all__ = ["RedisUnreachable", "StatePersistence", "redacted"]

log = structlog.get_logger("raygate.controller")


class RedisUnreachable(RuntimeError):
    """Redis did not answer within the policy's wait; the controller refuses to start without its state."""


def redacted(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"


class StatePersistence:
    """Owns the Redis client and the state store of one controller."""

    def __init__(self, config: ControllerConfig, controller: Controller) -> None:
        self.config = config
        self.controller = controller
        self.store: ControllerStateStore | None = None
        self.revision = 0  # revision of the last snapshot taken
        self.rejected: dict | None = None  # {"error", "kept_at"} while a bad saved state blocks saving
        self.loaded = "memory only" if not config.redis_url else "not loaded"
        self._save_task: asyncio.Task | None = None
        self._dirty = False

    async def _connect(self):
        import redis.asyncio as aioredis

        policy = self.config.policy
        client = aioredis.Redis.from_url(self.config.redis_url, socket_timeout=policy.redis_socket_timeout_s,
                                         socket_connect_timeout=policy.redis_socket_timeout_s)
        deadline = self.controller.clock() + policy.redis_wait_s
        while True:
            try:
                await client.ping()
                return client
            except Exception as exc:
                if self.controller.clock() >= deadline:
                    raise RedisUnreachable(
                        f"cannot reach Redis at {redacted(self.config.redis_url)} after {policy.redis_wait_s:g}s "
                        f"({exc!r}); the controller does not start without its saved state, since starting "
                        f"empty would orphan the running replicas") from None
                log.warning("redis_unreachable_waiting", error=repr(exc))
                await asyncio.sleep(policy.redis_retry_s)

    async def open(self) -> None:
        """Connect (waiting for Redis), take a new table epoch, then recover what was saved."""
        if not self.config.redis_url or self.store is not None:
            return
        client = await self._connect()
        store = ControllerStateStore(client, self.config.state_prefix)
        self.controller.epoch = await store.next_epoch()
        self.revision = await store.saved_revision()
        self.store = store
        try:
            saved = await store.load()
        except SavedStateInvalid as exc:
            self.rejected = {"error": str(exc), "kept_at": store.key}
            log.error("saved_state_rejected", error=str(exc), key=store.key)
            if self.config.start_empty_on_bad_state:
                await self.accept_empty()
            self.loaded = "rejected"
            return
        if saved is None:
            self.loaded = "none saved"
            return
        await self._recover(*saved)
        self.loaded = f"revision {saved[0].revision}"

    async def accept_empty(self) -> None:
        """Told to start without the rejected state: move it aside, then save normally again."""
        if self.rejected is None or self.store is None:
            return
        self.rejected["kept_at"] = await self.store.set_aside(self.rejected["error"])
        self.rejected["set_aside"] = True
        log.warning("saved_state_set_aside", key=self.rejected["kept_at"])

    async def _recover(self, saved: SavedState, spec) -> None:
        ctl = self.controller
        spec = expand_spec(spec, ctl.config.redis_url, ctl.config.namespace)  # the Redis URL may have changed
        ctl.generation = saved.generation
        ctl.spec = spec
        ctl.weights = {tuple(k.split("/", 1)): dict(v) for k, v in saved.weights.items()}
        ctl.scales = {tuple(k.split("/")): n for k, n in saved.scales.items()}
        desired = resolve_versions(spec)
        ctl.versions = {key: VersionState(resolved) for key, resolved in desired.items()}
        adopted, gone = [], []
        for replica_id, key in saved.replicas.items():
            record = await ctl.ops.adopt(replica_id, desired[key]) if key in desired else None
            if record is None:
                gone.append(replica_id)
                continue
            ctl.versions[key].replicas[replica_id] = record
            adopted.append(record)
        for replica_id in gone + list(saved.retiring):  # not adoptable, or being retired (or no longer in the spec): make sure nothing is orphaned
            try:
                ray.kill(ray.get_actor(replica_id, namespace=self.config.namespace), no_restart=True)
            except Exception:
                pass
        ctl.channel_token = bytes.fromhex(saved.channel_token)
        await self._rotate(adopted)
        log.info("controller_recovered", generation=ctl.generation, adopted_replicas=len(adopted),
                 lost_replicas=len(gone), revision=saved.revision)

    async def _rotate(self, adopted: list) -> None:
        """A fresh channel token for this controller's life (contract 3), accepted by every adopted replica
        before any table carries it; if one refuses, the saved token stays."""
        import secrets

        new_token = secrets.token_bytes(16)
        policy = self.config.policy
        refused = await rotate_channel_tokens(adopted, new_token, policy.token_grace_s, policy.adopt_timeout_s)
        if refused:
            log.warning("channel_token_kept", refused=[r.replica_id for r in refused])
            return
        self.controller.channel_token = new_token
        log.info("channel_token_rotated", replicas=len(adopted))

    @property
    def blocked(self) -> bool:
        """A refused saved state is still in place: save nothing over it, publish nothing, until told."""
        return self.rejected is not None and not self.rejected.get("set_aside")

    def snapshot(self) -> SavedState:
        ctl = self.controller
        self.revision += 1
        replicas = {r.replica_id: r.key for s in ctl.versions.values() for r in s.replicas.values()}
        replicas |= {r.replica_id: r.key for r in ctl.launching.values()}
        return SavedState(retiring=sorted(ctl.retiring), schema_version=SCHEMA_VERSION, revision=self.revision, generation=ctl.generation,
                          spec=ctl.spec.to_dict(), channel_token=ctl.channel_token.hex(),
                          weights={"/".join(k): v for k, v in ctl.weights.items()},
                          scales={"/".join(k): n for k, n in ctl.scales.items()}, replicas=replicas)

    async def save(self) -> bool:
        """Save the controller's state now (a newer save already written wins); False when Redis failed."""
        if self.store is None or self.blocked:
            return True
        state = self.snapshot()
        try:
            if not await self.store.save(state):
                log.info("controller_state_newer_saved", revision=state.revision)
            return True
        except Exception as exc:  # serving goes on; the state is saved again shortly
            log.warning("controller_state_not_saved", error=repr(exc))
            return False

    def mark_dirty(self) -> None:
        """Save soon (coalesced): the replica set or the table changed."""
        self._dirty = True
        if self._save_task is None or self._save_task.done():
            self._save_task = self.controller.spawn(self._save_soon())

    async def _save_soon(self) -> None:
        while self._dirty:
            self._dirty = False
            if not await self.save():
                self._dirty = True
                await asyncio.sleep(self.config.policy.redis_retry_s)

    def summary(self) -> dict:
        return {"store": "redis" if self.config.redis_url else "memory", "loaded": self.loaded,
                "revision": self.revision, "rejected": self.rejected}

    async def forget(self) -> None:
        if self.store is not None:
            try:
                await self.store.clear()
            except Exception:
                pass
