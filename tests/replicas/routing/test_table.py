"""Routing table: longest-prefix matching on segment boundaries, and whole-table swaps in the router."""

from __future__ import annotations

import asyncio

from replicas.routing.router import Router
from replicas.routing.table import AppRoute, ReplicaInfo, RoutingTable, VersionRoute
from tests.replicas.tables import route


def _table(version: int, replicas: int = 1, prefix: str = "/a") -> RoutingTable:
    infos = tuple(ReplicaInfo(f"r{i}", "app", "dep", "v1", "127.0.0.1", 1000 + i) for i in range(replicas))
    return RoutingTable(version=version, apps=(AppRoute("app", prefix, "dep"),),
                        deployments={("app", "dep"): route((VersionRoute("v1", 1, infos),))})


def test_longest_prefix_wins_on_segment_boundaries():
    table = RoutingTable(version=1, apps=(AppRoute("root", "/", "d"), AppRoute("api", "/api", "d"),
                                         AppRoute("v2", "/api/v2", "d")))
    assert table.match("/api/v2/predict").name == "v2"
    assert table.match("/api/v2").name == "v2"
    assert table.match("/api/v20").name == "api"
    assert table.match("/api").name == "api"
    assert table.match("/apix").name == "root"
    assert table.match("/other").name == "root"


def test_no_match_without_root_app():
    table = RoutingTable(version=1, apps=(AppRoute("api", "/api", "d"),))
    assert table.match("/nope") is None
    assert table.match("/ap") is None


def test_router_swaps_whole_table_and_keeps_replica_state():
    """A new table replaces the old one in one step; a replica present in both keeps its load counters;
    an old table object is never modified."""

    async def scenario():
        router = Router(asyncio.get_running_loop())
        first = _table(1, replicas=2)
        router.update_table(first)
        slot = next(s for s in router.slots() if s.replica_id == "r0")
        slot.in_flight = 5
        second = _table(2, replicas=1)
        router.update_table(second)
        assert router.table is second
        assert [s.replica_id for s in router.slots()] == ["r0"]
        assert router.slots()[0].in_flight == 5
        assert len(first.deployments[("app", "dep")].versions[0].replicas) == 2  # untouched
        router.update_table(first)  # an older version is ignored
        assert router.table is second

    asyncio.run(scenario())
