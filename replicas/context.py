"""What a replica knows about itself, for user code and for deployment handles."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

__all__ = ["ReplicaContext", "get_replica_context", "set_replica_context"]


@dataclass
class ReplicaContext:
    app: str  # app this replica belongs to
    deployment: str  # deployment name
    version: str  # version name
    replica_id: str  # unique replica id
    loop: asyncio.AbstractEventLoop  # the replica's event loop (uvloop); handles run on it
    controller_name: str  # named controller actor, for routing tables
    namespace: str  # Ray namespace of the controller
    scaler_name: str = ""  # the cluster's scaler actor, where handles report their load ("": they do not)
    _router: object | None = field(default=None, repr=False)
    _load: object | None = field(default=None, repr=False)  # the handles' load reporter (replicas/handle.py)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_current: ReplicaContext | None = None


def set_replica_context(context: ReplicaContext | None) -> None:
    global _current
    _current = context


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in; raises outside a replica."""
    if _current is None:
        raise RuntimeError("not running inside a raygate replica (get_handle works only in deployment code)")
    return _current
