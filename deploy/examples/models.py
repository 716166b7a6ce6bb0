"""Example deployments: the quickstart linear model and an ensemble that averages two models."""

from __future__ import annotations

import asyncio
import os
import time

from replicas.handle import get_handle
from replicas.user_errors import BadInput

__all__ = ["Linear", "Ensemble", "Flaky", "Slow", "Stallable", "environment"]

# The quickstart's fixed weights: y = w . x
WEIGHTS = tuple(round(0.1 * (i + 1) * (-1) ** i, 2) for i in range(16))


class Linear:
    """A fixed 16-weight dot product. `scale` and `bias` let two versions differ."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        self.weights = tuple(w * scale for w in WEIGHTS)
        self.bias = bias

    def __call__(self, payload):
        if not isinstance(payload, dict) or "x" not in payload:
            raise BadInput('expected {"x": [16 floats]}')
        x = payload["x"]
        if not isinstance(x, list) or len(x) != len(self.weights) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
            raise BadInput(f"x must be a list of {len(self.weights)} numbers")
        total = self.bias
        for w, v in zip(self.weights, x):
            total += w * v
        return {"y": total}


class Ensemble:
    """Calls each member deployment (through the same routing as the gateway) and averages their `y`."""

    def __init__(self, members: list[str]) -> None:
        self.handles = [get_handle(name) for name in members]

    async def __call__(self, payload):
        answers = await asyncio.gather(*(handle.call(payload) for handle in self.handles))
        return {"y": sum(a["y"] for a in answers) / len(answers), "members": [a["y"] for a in answers]}


class Flaky:
    """Raises on request when asked to (for error-path tests and demos)."""

    def __call__(self, payload):
        if isinstance(payload, dict) and payload.get("fail"):
            raise RuntimeError("asked to fail")
        return {"ok": True}


class Slow:
    """Sleeps `seconds` per request (sync code, on a worker thread), and `init_s` once when it starts."""

    def __init__(self, seconds: float = 0.1, init_s: float = 0.0) -> None:
        self.seconds = seconds
        time.sleep(init_s)

    def __call__(self, payload):
        time.sleep(float((payload or {}).get("seconds", self.seconds)))
        return {"slept": True}


class Stallable(Linear):
    """Linear, but a replica whose pid has a flag file `stall-<pid>` in `flag_dir` takes `stall_s` per request
    while its health probes keep passing: a half-alive replica, for chaos tests and benchmarks."""

    def __init__(self, flag_dir: str, stall_s: float = 5.0, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__(scale, bias)
        self.flag = os.path.join(flag_dir, f"stall-{os.getpid()}")
        self.stall_s = stall_s

    def __call__(self, payload):
        if os.path.exists(self.flag):
            time.sleep(self.stall_s)
        return super().__call__(payload)


def environment(payload):
    """A function deployment: the values of the environment variables named in `payload["names"]`."""
    return {name: os.environ.get(name) for name in (payload or {}).get("names", [])}
