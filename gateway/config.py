"""Gateway settings, fixed at start."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GatewayConfig"]


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"  # bind address; loopback unless the operator asks for more
    port: int = 8000  # HTTP port shared by every gateway process on the node (SO_REUSEPORT)
    num_gateways: int = 1  # gateway processes per node
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    access_log: bool = True  # one JSON log line per request
    admin_token: str = ""  # bearer token for /-/admin/; empty disables the admin API
    metrics_dir: str = ""  # prometheus_client multiprocess directory shared by the node's gateways
    controller_name: str = "raygate-controller"  # named controller actor
    namespace: str = "raygate"  # Ray namespace
    drain_s: float = 1.0  # minimum time to stay not-ready before stopping, so balancers notice
    log_dir: str = ""  # access logs go to <log_dir>/access-<pid>.jsonl (default: the process's stdout)
