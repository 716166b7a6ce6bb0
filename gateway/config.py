"""Gateway settings, fixed at start.

`GatewayConfig` is derived from the spec's `GatewaySpec` by field name (deploy/, in one place): every field the
two share has the same name here and there; the fields below the marker are runtime-only (filled by the platform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_AUTO_GATEWAYS", "MIN_AUTO_GATEWAYS", "GatewayConfig", "resolve_gateway_count"]

MIN_AUTO_GATEWAYS = 2  # "auto": at least two, so losing one process never refuses every connection
MAX_AUTO_GATEWAYS = 8  # "auto": at most eight; beyond that, processes contend for the same cores


def resolve_gateway_count(num_gateways: int | Literal["auto"], cpus: int) -> int:
    """Gateway processes to serve on a node with `cpus` cores: an explicit positive number wins; "auto" is one per
    core, at least MIN_AUTO_GATEWAYS, at most MAX_AUTO_GATEWAYS (the fleet, deploy/gateways.py, and the bench)."""
    if num_gateways == "auto":
        return max(MIN_AUTO_GATEWAYS, min(MAX_AUTO_GATEWAYS, int(cpus)))
    if isinstance(num_gateways, bool) or not isinstance(num_gateways, int) or num_gateways < 1:
        raise ValueError(f"num_gateways must be 'auto' or a positive integer, got {num_gateways!r}")
    return num_gateways


@dataclass(frozen=True)
class GatewayConfig:
    # -- shared with GatewaySpec (same names, same defaults) --
    num_gateways: int | Literal["auto"] = "auto"  # gateway processes per node; "auto": resolve_gateway_count
    host: str = "127.0.0.1"  # bind address; loopback unless the operator asks for more
    port: int = 8000  # HTTP port shared by every gateway process on the node (SO_REUSEPORT)
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    access_log: bool = True  # one JSON log line per request
    header_timeout_s: float = 10.0  # a connection with no complete request head this long after it opened or
    #                                 after its last answer is closed (slowloris heads and idle keep-alives alike)
    body_timeout_s: float = 30.0  # longest body read on control and admin paths (proxied requests: their deadline)
    max_connections: int = 4096  # open connections per gateway process; more are answered 503 and closed
    drain_s: float = 1.0  # minimum time to stay not-ready before stopping, so balancers notice
    drain_timeout_s: float = 30.0  # longest wait for in-flight requests when stopping
    metrics_flush_s: float = 0.25  # how often buffered metrics go to the shared files (and access lines to disk)
    # -- runtime only (filled by the platform, not in the spec) --
    admin_token: str = ""  # bearer token for /-/admin/; empty disables the admin API
    metrics_dir: str = ""  # prometheus_client multiprocess directory shared by the node's gateways
    controller_name: str = "raygate-controller"  # named controller actor
    namespace: str = "raygate"  # Ray namespace
    log_dir: str = ""  # access logs go to <log_dir>/access-<pid>.jsonl (default: the process's stdout)
    redis_url: str = ""  # event pipelines' streams (ingestion and consumers); empty: /-/events answers 503
    scaler_name: str = ""  # named scaler actor that takes per-second load reports; empty: none sent
