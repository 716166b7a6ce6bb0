"""The gateway endpoints a client knows, in order of preference, with their health.

Passive: a connection error takes an endpoint out at once; `down_after_errors` consecutive 5xx/timeouts do
too. Active: the client probes endpoints that are out with `GET /-/ready` and a 200 brings one back. Calls go
to the first healthy endpoint in preference order, so traffic fails back to the preferred endpoint as soon
as its probe passes. When every endpoint is out, calls still try them, longest-out first (a client with
no healthy endpoint tries rather than refuses).

The list can be replaced at run time (from the Keeper): health of endpoints still listed is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EndpointHealth", "EndpointSet", "normalize_endpoint"]


def normalize_endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint {url!r} must be an http:// or https:// URL")
    return url


@dataclass
class EndpointHealth:
    url: str
    down_since: float | None = None  # None: healthy
    strikes: int = 0  # consecutive failed attempts
    last_error: str = ""

    @property
    def healthy(self) -> bool:
        return self.down_since is None


class EndpointSet:
    def __init__(self, urls: list[str], down_after_errors: int = 3) -> None:
        if not urls:
            raise ValueError("at least one gateway endpoint is needed")
        self.down_after_errors = max(1, down_after_errors)
        self._health: dict[str, EndpointHealth] = {}
        self.urls: tuple[str, ...] = ()
        self.replace(urls)

    def replace(self, urls: list[str]) -> None:
        """A new preference order; endpoints already known keep their health."""
        ordered = list(dict.fromkeys(normalize_endpoint(u) for u in urls))
        if not ordered:
            return
        self._health = {u: self._health.get(u) or EndpointHealth(u) for u in ordered}
        self.urls = tuple(ordered)

    def candidates(self) -> list[str]:
        """Endpoints to try, best first: healthy ones by preference, then those that are out, longest-out first."""
        healthy = [u for u in self.urls if self._health[u].healthy]
        down = sorted((u for u in self.urls if not self._health[u].healthy),
                      key=lambda u: (self._health[u].down_since, self.urls.index(u)))
        return healthy + down

    def down(self) -> list[str]:
        return [u for u in self.urls if not self._health[u].healthy]

    def record_success(self, url: str) -> None:
        health = self._health.get(url)
        if health is not None:
            health.strikes = 0

    def record_failure(self, url: str, now: float, error: str, immediately: bool) -> bool:
        """Count a failed attempt; returns True when this takes the endpoint out."""
        health = self._health.get(url)
        if health is None:
            return False
        health.strikes += 1
        health.last_error = error
        if health.healthy and (immediately or health.strikes >= self.down_after_errors):
            health.down_since = now
            return True
        return False

    def mark_up(self, url: str) -> bool:
        """A probe passed; returns True when the endpoint was out."""
        health = self._health.get(url)
        if health is None or health.healthy:
            return False
        health.down_since, health.strikes, health.last_error = None, 0, ""
        return True

    def snapshot(self) -> list[dict]:
        return [{"url": u, "healthy": self._health[u].healthy, "strikes": self._health[u].strikes,
                 "last_error": self._health[u].last_error} for u in self.urls]
