"""Gateway processes: their config derived from the spec (in this one place), how many, and the fleet that
keeps them serving on every node.

`num_gateways: auto` means one gateway process per core of the node (as a gateway process on that node sees
them), at least 2 (so losing one process never takes the port down) and at most 8 (gateway/config.py); an explicit
number wins. Either way it is per node: the fleet runs that many serving processes on every alive Ray node,
pinned there (node affinity, not soft), plus FleetPolicy.spares_per_node warm spares.

How a dead process is replaced fast: every gateway actor starts as a warm spare and is promoted by the fleet
(gateway/actor.py). The fleet keeps a `watch` call in flight on every gateway; the call fails the moment its
process dies, and the fleet promotes the node's spare into the dead one's index (tens of ms, no process start,
no imports). Ray restarts the dead actor (max_restarts=-1) as the node's next spare. A node that joins gets its
gateways within FleetPolicy.node_poll_s; a node that leaves takes its gateways with it and is forgotten.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import structlog

from deploy.names import gateway_name, scaler_name
from deploy.spec import GatewaySpec
from gateway.config import MIN_AUTO_GATEWAYS, GatewayConfig, resolve_gateway_count

__all__ = [
    "FleetPolicy",
    "GatewayFleet",
    "gateway_config",
]

log = structlog.get_logger("raygate.gateways")


@dataclasses.dataclass(frozen=True)
class FleetPolicy:
    """How the fleet keeps gateways serving (defaults here, nowhere else)."""

    spares_per_node: int = 1  # warm, not listening processes per node, promoted when a serving one dies
    node_poll_s: float = 1.0  # how often the fleet looks for Ray nodes that joined or left
    watch_s: float = 30.0  # length of one watch long poll (a death ends it at once)
    retry_s: float = 0.1  # pause before watching a gateway again after a failed watch
    start_timeout_s: float = 120.0  # a node's first gateways must be up within this
    promote_timeout_s: float = 30.0  # a promotion (build the app, take the table, bind) may take this long


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




STARTING, SPARE, PROMOTING, SERVING = "starting", "spare", "promoting", "serving"  # a slot as the fleet sees it


@dataclasses.dataclass
class _Slot:
    """One gateway actor on a node, as the fleet last saw it."""

    number: int  # its place on the node (part of its name)
    name: str  # its detached actor name (deploy/names.gateway_name)
    handle: Any  # its Ray actor handle
    state: str = STARTING  # STARTING (process coming up or restarting), SPARE, PROMOTING or SERVING
    index: int = -1  # its serving index on the node (-1: not serving)
    pid: int = 0  # its process, as last seen (0: not seen yet)
    reported: str = ""  # the state it last reported (its watch answers when that changes)


@dataclasses.dataclass
class _Node:
    """The gateways of one Ray node."""

    node_id: str  # Ray node id (hex)
    node_ip: str  # the node's address as Ray knows it
    count: int = 0  # serving processes wanted here (known once a gateway reported the node's cores)
    slots: list[_Slot] = dataclasses.field(default_factory=list)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)  # one promotion round at a time
    tasks: set = dataclasses.field(default_factory=set)  # its start and watch tasks
    started: asyncio.Task | None = None  # its start (done once its gateways serve)

    def vacant(self) -> list[int]:
        held = {s.index for s in self.slots if s.index >= 0}  # serving, promoting, or a promotion unconfirmed
        return [i for i in range(self.count) if i not in held]


class GatewayFleet:
    """The controller's gateway actors: per alive node, `num_gateways` serving processes and spares, detached
    and named (a restarted controller adopts them), pinned to their node, restarted by Ray as spares."""

    def __init__(self, config: GatewayConfig, namespace: str, call_timeout_s: float,
                 policy: FleetPolicy = FleetPolicy()) -> None:
        self.config = config  # as derived by gateway_config
        self.namespace = namespace  # Ray namespace
        self.call_timeout_s = call_timeout_s  # stats/stop calls
        self.policy = policy
        self.nodes: dict[str, _Node] = {}
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self._stopping = False

    @property
    def handles(self) -> list:
        """The serving gateways, node by node, by index."""
        return [s.handle for node in self.nodes.values() for s in sorted(node.slots, key=lambda s: s.index)
                if s.state == SERVING]

    def _spawn(self, coro, tasks: set | None = None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        group = self._tasks if tasks is None else tasks
        group.add(task)
        task.add_done_callback(group.discard)
        return task

    async def ensure(self) -> list:
        """Gateways on every alive node, serving before this returns; then the fleet follows nodes joining and
        leaving and replaces dead processes in the background."""
        await self._refresh_nodes()
        if self._poller is None:
            self._poller = self._spawn(self._poll_nodes())
        # a node that leaves while its gateways start is forgotten (its start cancelled) by the poller
        await asyncio.gather(*(n.started for n in self.nodes.values() if n.started), return_exceptions=True)
        if not self.handles:
            raise RuntimeError("no gateway serves on any node")
        return self.handles

    # -- nodes ------------------------------------------------------------------------------------
    async def _refresh_nodes(self) -> None:
        import ray

        alive = {n["NodeID"]: n for n in await asyncio.to_thread(ray.nodes) if n.get("Alive")}
        for node_id in [n for n in self.nodes if n not in alive]:
            self._forget(node_id, "left the cluster")
        new = [_Node(node_id, n.get("NodeManagerAddress", "")) for node_id, n in alive.items()
               if node_id not in self.nodes]
        for node in new:
            self.nodes[node.node_id] = node  # before any await: the next poll does not start it twice
            node.started = self._spawn(self._start_node(node), node.tasks)

    async def _poll_nodes(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.policy.node_poll_s)
            try:
                await self._refresh_nodes()
            except Exception as exc:  # noqa: BLE001 - the GCS briefly unreachable: try again next period
                log.warning("gateway_node_poll_failed", error=repr(exc))

    def _forget(self, node_id: str, why: str) -> None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        for task in list(node.tasks):
            task.cancel()
        log.info("gateway_node_forgotten", node_id=node_id, node_ip=node.node_ip, reason=why)

    async def _start_node(self, node: _Node) -> None:
        """Find or create the node's gateways, learn its cores from them, promote spares to `count`."""
        setting = self.config.num_gateways
        try:
            first = (MIN_AUTO_GATEWAYS if setting == "auto" else setting) + self.policy.spares_per_node
            infos = await asyncio.wait_for(self._add_slots(node, range(first)), self.policy.start_timeout_s)
            node.count = resolve_gateway_count(setting, max(i["cores"] for i in infos))
            more = range(first, node.count + self.policy.spares_per_node)  # auto on a node with more cores
            await asyncio.wait_for(self._add_slots(node, more), self.policy.start_timeout_s)
        except Exception as exc:  # noqa: BLE001
            log.warning("gateway_node_start_failed", node_id=node.node_id, node_ip=node.node_ip, error=repr(exc))
            self._forget(node.node_id, "its gateways did not start")  # the next poll tries again
            return
        for slot in node.slots:
            self._spawn(self._watch(node, slot), node.tasks)
        await self._fill(node)
        log.info("gateway_node_started", node_id=node.node_id, node_ip=node.node_ip, serving=node.count,
                 spares=len(node.slots) - node.count)

    async def _add_slots(self, node: _Node, numbers) -> list[dict]:
        """Slots `numbers` (adopting gateways that exist by name); each new slot's first look."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from gateway.actor import Gateway

        added = []
        for number in numbers:
            name = gateway_name(self.config.controller_name, node.node_id, number)
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                handle = ray.remote(Gateway).options(
                    name=name, namespace=self.namespace, lifetime="detached", max_restarts=-1,
                    max_concurrency=8, num_cpus=0,  # no runtime_env: nothing to set up per start
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
                ).remote(self.config)
            added.append(_Slot(number, name, handle))
        node.slots += added
        infos = await asyncio.gather(*(s.handle.watch.remote(0, "", 0.0) for s in added))
        for slot, info in zip(added, infos):
            self._seen(node, slot, info)
        return infos

    # -- deaths and promotions --------------------------------------------------------------------
    async def _watch(self, node: _Node, slot: _Slot) -> None:
        """Keep a watch call in flight on `slot`: its failure is the process's death, seen at once."""
        import ray

        while not self._stopping and self.nodes.get(node.node_id) is node:
            try:
                info = await asyncio.wait_for(slot.handle.watch.remote(slot.pid, slot.reported, self.policy.watch_s),
                                              self.policy.watch_s + self.policy.promote_timeout_s)
            except ray.exceptions.RayActorError:
                if not await self._lost(node, slot):
                    return  # dead for good: a new slot took its place, or its node left
                await asyncio.sleep(self.policy.retry_s)
                continue
            except Exception as exc:  # noqa: BLE001 - a slow answer; ask again
                log.info("gateway_watch_failed", name=slot.name, error=repr(exc))
                await asyncio.sleep(self.policy.retry_s)
                continue
            if self._seen(node, slot, info):
                self._arm(node)
            if node.vacant():
                await self._fill(node)

    def _seen(self, node: _Node, slot: _Slot, info: dict) -> bool:
        """What a gateway said about itself; True when the node's serving set changed. A process only ever
        serves after a promotion, so a spare that took over an index is right and the slot the fleet still
        thought held it is dead (Ray tells the fleet shortly)."""
        before = (slot.state, slot.index, slot.pid)
        slot.pid, slot.reported = info["pid"], info["state"]
        if slot.state == PROMOTING:
            return False
        if info["state"] == "spare":
            slot.state, slot.index = SPARE, -1
        else:
            for other in node.slots:  # the one thought to hold this index died (or never took it)
                if other is not slot and other.index == info["index"] and other.state != PROMOTING:
                    other.state, other.index = STARTING, -1
            slot.state, slot.index = SERVING, info["index"]
            if before[0] == SPARE:  # (a restarted controller adopting a serving gateway logs nothing)
                log.info("gateway_took_over", node_ip=node.node_ip, index=slot.index, pid=slot.pid)
        return before != (slot.state, slot.index, slot.pid)

    def _arm(self, node: _Node) -> None:
        """Hand the node's first spare its serving siblings (it takes over the first that dies); disarm the
        other spares, so one death is taken over once."""
        serving = {s.pid: s.index for s in node.slots if s.state == SERVING and s.pid}
        for n, spare in enumerate(s for s in node.slots if s.state == SPARE):
            spare.handle.guard.remote(serving if n == 0 else {})

    async def _lost(self, node: _Node, slot: _Slot) -> bool:
        """`slot`'s process died: promote a spare into its index first, then see that Ray brings it back.
        False when the actor is dead for good (a new one replaces it, or its node left)."""
        import ray

        was, index = slot.state, slot.index
        slot.state, slot.index = STARTING, -1
        if index >= 0:
            log.warning("gateway_died", node_ip=node.node_ip, index=index, pid=slot.pid, state=was)
            await self._fill(node)
        try:
            ray.get_actor(slot.name, namespace=self.namespace)  # restarting: its name is kept
            return True
        except ValueError:  # dead for good (killed, or its node is gone): start a new one if the node lives
            pass
        alive = {n["NodeID"] for n in await asyncio.to_thread(ray.nodes) if n.get("Alive")}
        if node.node_id not in alive:
            self._forget(node.node_id, "left the cluster")
            return False
        node.slots.remove(slot)
        await self._add_slots(node, [slot.number])
        self._spawn(self._watch(node, node.slots[-1]), node.tasks)
        return False

    async def _fill(self, node: _Node) -> None:
        """Promote spares into the node's vacant indices (all at once)."""
        async with node.lock:
            pairs = list(zip(node.vacant(), [s for s in node.slots if s.state == SPARE]))
            if len(pairs) < len(node.vacant()):
                log.warning("gateway_no_spare", node_ip=node.node_ip, vacant=node.vacant())
            for index, slot in pairs:
                slot.state, slot.index = PROMOTING, index
            await asyncio.gather(*(self._promote(node, slot, index) for index, slot in pairs))
            self._arm(node)

    async def _promote(self, node: _Node, slot: _Slot, index: int) -> None:
        try:
            info = await asyncio.wait_for(slot.handle.promote.remote(index), self.policy.promote_timeout_s)
        except Exception as exc:  # noqa: BLE001
            # it may serve all the same (a slow answer): its index stays claimed until its watch or death says
            slot.state = STARTING
            log.warning("gateway_promote_failed", name=slot.name, index=index, error=repr(exc))
            return
        slot.state, slot.pid, slot.reported = SERVING, info["pid"], info["state"]
        log.info("gateway_promoted", node_ip=node.node_ip, index=index, pid=slot.pid, promote_s=info["promote_s"])

    # -- status and stop --------------------------------------------------------------------------
    async def _stats(self, node: _Node, slot: _Slot) -> dict:
        entry: dict = {"name": slot.name, "node_id": node.node_id, "node_ip": node.node_ip}
        down = {"index": slot.index, "pid": slot.pid, "served": 0, "in_flight": 0, "table_version": 0,
                "traffic": [], "ejections": [], "serving_since": 0.0}
        if slot.state == STARTING:  # restarting: a call would wait for the new process
            return entry | down | {"state": STARTING}
        try:
            stats = await asyncio.wait_for(slot.handle.stats.remote(), self.call_timeout_s)
        except Exception as exc:  # noqa: BLE001 - died just now, or stuck
            return entry | down | {"state": "unreachable", "error": type(exc).__name__}
        return entry | stats

    async def stats(self) -> list[dict]:
        """Per gateway process (spares and restarting ones included): what Gateway.stats() returns, its name,
        node id and node address, node by node, serving ones first by index."""
        slots = [(node, s) for node in self.nodes.values()
                 for s in sorted(node.slots, key=lambda s: (s.state != SERVING, s.index))]
        return list(await asyncio.gather(*(self._stats(node, slot) for node, slot in slots)))

    async def stop(self, timeout_s: float) -> None:
        from deploy.replica_ops import stop_then_kill

        self._stopping = True
        for task in [*self._tasks, *(t for node in self.nodes.values() for t in node.tasks)]:
            task.cancel()
        slots = [s for node in self.nodes.values() for s in node.slots]
        spares = [s for s in slots if s.state != SERVING]  # first: a spare must not take over a stopped one
        await asyncio.gather(*(stop_then_kill(s.handle, timeout_s) for s in spares))
        await asyncio.gather(*(stop_then_kill(s.handle, timeout_s) for s in slots if s not in spares))
