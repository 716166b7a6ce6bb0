"""Routing tables for unit tests: every DeploymentRoute field spelled out (the table itself has no defaults)."""

from __future__ import annotations

from replicas.routing.table import AppRoute, DeploymentRoute, RoutingTable, VersionRoute

__all__ = ["route", "table"]

_ROUTE_FIELDS = dict(max_ongoing_requests=32, max_queued_requests=256, request_timeout_s=30.0, idempotent=None,
                     allow_pinning=True, max_retries=3, hedge_after_s=None)


def route(versions: tuple[VersionRoute, ...] | list[VersionRoute], app: str = "app", name: str = "dep",
          **fields) -> DeploymentRoute:
    """A DeploymentRoute with the spec's defaults unless `fields` say otherwise."""
    return DeploymentRoute(app, name, tuple(versions), **{**_ROUTE_FIELDS, **fields})


def table(version: int, deployment: DeploymentRoute, prefix: str = "/api", token: bytes = b"") -> RoutingTable:
    return RoutingTable(version=version, apps=(AppRoute(deployment.app, prefix, deployment.name),),
                        deployments={(deployment.app, deployment.name): deployment}, channel_token=token)
