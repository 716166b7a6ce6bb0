"""Shared by the benchmark servers: wait until a freshly started system answers the quickstart body."""

from __future__ import annotations

import json
import time
import urllib.request

__all__ = ["BODY", "wait_answering"]

BODY = json.dumps({"x": [0.5 * (i + 1) for i in range(16)]}).encode()


def wait_answering(url: str, timeout_s: float, body: bytes = BODY) -> None:
    """POST `body` until it gets a 200 (an apply or deploy returned, but be sure the route is live)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001 - keep trying until the deadline
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 in {timeout_s}s (last error: {last!r})")
