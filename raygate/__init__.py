"""raygate's Python client: `Client` (blocking) and `AsyncClient` (asyncio) for raygate gateways.

    from raygate import Client
    with Client(["http://127.0.0.1:8000"]) as client:
        answer = client.post("/linear", json={"x": [1.0] * 16}, idempotent=True, split_key="user-42")
        answer.json(), answer.version, answer.replica

Connection pooling, per-attempt timeouts and a call deadline, retries with jittered exponential back-off
under a retry budget (only where a retry is safe: see `raygate.policy`), split-key and version headers, and
failover across gateway endpoints (several clusters) with fail-back to the preferred one; the endpoint list
can come from a Keeper (`raygate keeper`). Errors follow the gateway's JSON contract (`raygate.errors`).
"""

from raygate.aio import AsyncClient, Response
from raygate.errors import (
    BadRequest,
    DeadlineExceeded,
    GatewayError,
    ModelError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RaygateClientError,
    ReplicaFailed,
    Timeout,
    Unauthorized,
    Unavailable,
)
from raygate.policy import ClientConfig
from raygate.sync import Client

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientConfig",
    "DeadlineExceeded",
    "GatewayError",
    "ModelError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RaygateClientError",
    "ReplicaFailed",
    "Response",
    "Timeout",
    "Unauthorized",
    "Unavailable",
]
