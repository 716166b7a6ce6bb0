"""Gateway processes: their config derived from the spec (in this one place), how many, starting them and
asking them how they are.

`num_gateways: auto` means one gateway process per core of the node, at least 2 (so losing one process
never takes the port down) and at most MAX_AUTO_GATEWAYS; an explicit number wins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

from deploy.names import gateway_name, scaler_name
from deploy.spec import GatewaySpec
from gateway.config import GatewayConfig

__all__ = [
    "MAX_AUTO_GATEWAYS",
    "MIN_AUTO_GATEWAYS",
    "GatewayFleet",
    "gateway_config",
    "node_cores",
    "resolve_num_gateways",
]

MIN_AUTO_GATEWAYS = 2  # `auto` never runs fewer: one killed process must not close the port
MAX_AUTO_GATEWAYS = 8  # `auto` never runs more: beyond this, processes mostly contend for the same cores


def resolve_num_gateways(setting: int | str, cores: int) -> int:
    """`auto` -> one per core within [MIN_AUTO_GATEWAYS, MAX_AUTO_GATEWAYS]; a number stays as it is."""
    if setting == "auto":
        return max(MIN_AUTO_GATEWAYS, min(MAX_AUTO_GATEWAYS, cores))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"num_gateways must be 'auto' or a positive integer, got {setting!r}")
    return setting


def node_cores() -> int:
    """Cores this process may run on (the node's, unless the process is pinned to fewer)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gateway_config(spec: GatewaySpec, *, admin_token: str, metrics_dir: str = "", log_dir: str = "",
                   controller_name: str, namespace: str, redis_url: str | None = None,
                   **overrides: Any) -> GatewayConfig:
    """The one derivation of GatewayConfig: the spec's fields by name (overridden by validated command-line
    values such as host, port, num_gateways), plus the runtime fields the spec does not carry (the scaler that
    takes load reports is the controller's; `redis_url` is the platform's Redis, for event pipelines)."""
    fields = spec.model_dump()
    fields.update({k: v for k, v in overrides.items() if v is not None})
    validated = GatewaySpec.model_validate(fields).model_dump()  # overrides are checked like the spec
    return GatewayConfig(**validated, admin_token=admin_token, metrics_dir=metrics_dir, log_dir=log_dir,
                         controller_name=controller_name, namespace=namespace, redis_url=redis_url or "",
                         scaler_name=scaler_name(controller_name))


class GatewayFleet:
    """The controller's gateway actors: detached, named, restarted by Ray when their process dies."""

    def __init__(self, config: GatewayConfig, namespace: str, call_timeout_s: float) -> None:
        self.config = config  # as derived by gateway_config
        self.namespace = namespace  # Ray namespace
        self.call_timeout_s = call_timeout_s  # stats/stop calls
        self.count = resolve_num_gateways(config.num_gateways, node_cores())
        self.handles: list = []

    async def ensure(self) -> list:
        """Find or create every gateway and wait until each one serves."""
        import ray

        from gateway.actor import Gateway

        config = dataclasses.replace(self.config, num_gateways=self.count)
        handles = []
        for index in range(self.count):
            name = gateway_name(config.controller_name, index)
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                handle = ray.remote(Gateway).options(
                    name=name, namespace=self.namespace, lifetime="detached", max_restarts=-1,
                    max_concurrency=8, num_cpus=0,  # no runtime_env: a restarted gateway starts sooner
                ).remote(config, index)
            handles.append(handle)
        self.handles = handles
        await asyncio.gather(*(h.ready.remote() for h in handles))
        return handles

    async def _stats(self, index: int, handle) -> dict:
        entry: dict = {"index": index, "name": gateway_name(self.config.controller_name, index)}
        try:
            stats = await asyncio.wait_for(handle.stats.remote(), self.call_timeout_s)
        except Exception as exc:  # restarting (Ray brings it back) or stuck
            return entry | {"state": "unreachable", "error": type(exc).__name__, "pid": 0, "served": 0,
                            "in_flight": 0, "table_version": 0, "traffic": [], "ejections": []}
        return entry | {"state": "serving"} | stats

    async def stats(self) -> list[dict]:
        """Per gateway process: what Gateway.stats() returns, its index and name, and a state."""
        return list(await asyncio.gather(*(self._stats(i, h) for i, h in enumerate(self.handles))))

    async def stop(self, timeout_s: float) -> None:
        from deploy.replica_ops import stop_then_kill

        for handle in self.handles:
            await stop_then_kill(handle, timeout_s)
