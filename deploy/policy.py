"""The controller's settings: every timing knob a named field with its default here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field

from deploy.names import CONTROLLER_NAME, NAMESPACE
from gateway.config import GatewayConfig

__all__ = ["ControllerConfig", "ControllerPolicy", "start_backoff_s"]


@dataclass(frozen=True)
class ControllerPolicy:
    """Timing of probes, starts, drains, acknowledgements and recovery. Seconds throughout."""

    probe_period_s: float = 0.5  # time between health probes of a replica (also the control loop's period)
    probe_timeout_s: float = 1.0  # a probe slower than this counts as failed
    unhealthy_after: int = 2  # consecutive failed probes before a replica is replaced (a dead actor: at once)
    loop_min_sleep_s: float = 0.05  # the control loop sleeps at least this long between rounds
    start_timeout_s: float = 300.0  # time a new replica may take to become ready (pip installs included)
    start_backoff_base_s: float = 0.5  # back-off after the first failed start; doubles per further failure
    start_backoff_max_s: float = 30.0  # ceiling of that back-off
    drain_timeout_s: float = 10.0  # time a retiring replica gets to finish its requests
    drain_call_margin_s: float = 5.0  # extra time the drain call itself may take before the replica is killed
    ack_timeout_s: float = 5.0  # time to wait for every router to acknowledge a table before draining replicas
    watcher_poll_timeout_s: float = 10.0  # routers' long-poll timeout; silent for 3x this, a router counts as gone
    adopt_timeout_s: float = 3.0  # a saved replica that does not answer `ready` in this long is not adopted
    token_grace_s: float = 30.0  # after a rotation, replicas accept the previous channel token this long
    redis_wait_s: float = 60.0  # a (re)starting controller waits this long for Redis before giving up
    redis_retry_s: float = 0.5  # time between attempts to reach Redis while waiting
    redis_socket_timeout_s: float = 2.0  # one Redis command may take this long
    gateway_call_timeout_s: float = 1.0  # a gateway's `stats` call for status may take this long
    gateway_stop_timeout_s: float = 5.0  # a gateway's drain at shutdown may take this long before it is killed


def start_backoff_s(failures: int, policy: ControllerPolicy) -> float:
    """Wait before the next start after `failures` failed starts in a row (0 failures: no wait)."""
    if failures <= 0:
        return 0.0
    return min(policy.start_backoff_max_s, policy.start_backoff_base_s * 2 ** (failures - 1))


@dataclass(frozen=True)
class ControllerConfig:
    redis_url: str | None = None  # where the controller's state is kept (password in the URL); None: memory only
    name: str = CONTROLLER_NAME  # actor name; also prefixes the controller's Redis keys
    namespace: str = NAMESPACE  # Ray namespace of every raygate actor
    replica_host: str | None = None  # bind address of replicas' direct channels; None: each node's Ray address
    start_empty_on_bad_state: bool = False  # a saved state that fails validation: start empty (True) or wait
    policy: ControllerPolicy = field(default_factory=ControllerPolicy)  # timing knobs
    gateway: GatewayConfig = field(default_factory=GatewayConfig)  # gateway settings (see deploy/gateways.py)

    @property
    def state_prefix(self) -> str:
        """Prefix of the controller's Redis keys: one controller, one prefix."""
        return f"{self.namespace}:{self.name}"
