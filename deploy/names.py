"""Names of raygate's Ray actors, in one place (the controller, its gateways, its replicas)."""

from __future__ import annotations

import secrets

__all__ = ["CONTROLLER_NAME", "NAMESPACE", "gateway_name", "replica_name", "scaler_name"]

CONTROLLER_NAME = "raygate-controller"  # the controller actor's name (gateways and handles find it by it)
NAMESPACE = "raygate"  # Ray namespace of every raygate actor


def gateway_name(controller_name: str, node_id: str, slot: int) -> str:
    """The detached gateway actor `slot` of a controller on a node ("raygate-gateway-<node id[:12]>-<slot>" for
    the default controller); a slot serves or waits as a spare (deploy/gateways.py)."""
    prefix = "raygate" if controller_name == CONTROLLER_NAME else controller_name
    return f"{prefix}-gateway-{node_id[:12]}-{slot}"


def scaler_name(controller_name: str) -> str:
    """The cluster's detached scaler actor for a controller: "raygate-scaler" for the default controller."""
    prefix = "raygate" if controller_name == CONTROLLER_NAME else controller_name
    return f"{prefix}-scaler"


def replica_name(app: str, deployment: str, version: str) -> str:
    """A fresh replica id (also its actor name): "<app>.<deployment>.<version>#<8 hex>"."""
    return f"{app}.{deployment}.{version}#{secrets.token_hex(4)}"
