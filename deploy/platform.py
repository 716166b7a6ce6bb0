"""Starting and stopping raygate's actors inside a Ray session (used by `raygate up` and the tests)."""

from __future__ import annotations

import ray

from deploy.controller import get_or_create_controller
from deploy.packaging import upload_local_dirs
from deploy.policy import ControllerConfig
from deploy.replica_ops import ApplyError
from deploy.spec import Spec

__all__ = ["Platform"]


class Platform:
    """The controller (which starts the gateways) in the current Ray session."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.controller = None

    def start(self, timeout_s: float = 120.0) -> Platform:
        self.controller = get_or_create_controller(self.config)
        ray.get(self.controller.start.remote(), timeout=timeout_s)
        return self

    def apply(self, spec: Spec, timeout_s: float = 300.0, remove_all: bool = False) -> dict:
        """Apply and wait; raise ApplyError (running apps untouched) when the spec could not be applied.
        A spec with no apps needs remove_all=True (see deploy/changes.py)."""
        doc = upload_local_dirs(spec.to_dict()) | ({"remove_all": True} if remove_all else {})  # local dirs -> GCS
        status = ray.get(self.controller.apply.remote(doc, True), timeout=timeout_s)
        if status.get("state") != "applied":
            raise ApplyError(status.get("error") or f"apply ended in state {status.get('state')}")
        return status

    def status(self) -> dict:
        return ray.get(self.controller.status.remote())

    def gateways(self) -> list:
        return ray.get(self.controller.gateways.remote())

    def stop(self, forget: bool = True, timeout_s: float = 30.0) -> None:
        if self.controller is None:
            return
        try:
            ray.get(self.controller.shutdown.remote(forget), timeout=timeout_s)
        finally:
            ray.kill(self.controller, no_restart=True)
            self.controller = None
