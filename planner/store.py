"""Dual prices in Redis: versioned, written atomically, announced on pub/sub; a reader that survives Redis outages.

Keys (namespace defaults to "raygate"):
    {ns}:duals:{scenario}:version   INCR counter: the last version handed out (strictly increasing)
    {ns}:duals:{scenario}           hash: version, lambda (JSON list), names (JSON list), certificate (JSON object),
                                    computed_at (unix seconds, float), published_at
    {ns}:duals:{scenario} channel   pub/sub announcement, payload = the version number as text

A publish runs one Lua script (atomic on the server): INCR the version, write the whole hash, PUBLISH. Concurrent
publishers therefore get distinct, increasing versions, and the hash always holds the record of the highest one.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["DualPrices", "DualPriceStore", "DualPriceReader"]

_PUBLISH = """
local v = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'version', v, 'lambda', ARGV[1], 'names', ARGV[2], 'certificate', ARGV[3],
           'computed_at', ARGV[4], 'published_at', ARGV[5])
redis.call('PUBLISH', ARGV[6], v)
return v
"""


@dataclass(frozen=True)
class DualPrices:
    """One published price record."""

    scenario: str  # which allocation problem these prices are for
    version: int  # strictly increasing per scenario
    lam: tuple[float, ...]  # K prices, >= 0
    names: tuple[str, ...]  # K constraint names, in the order of `lam`
    certificate: dict  # the solver's certificate (dual_objective, primal_objective, max_violation, ...)
    computed_at: float  # unix time the prices were computed

    def as_array(self) -> np.ndarray:
        return np.asarray(self.lam, dtype=np.float64)


class DualPriceStore:
    """Reads and writes price records; receives a redis-py client (never builds or closes one)."""

    def __init__(self, client, namespace: str = "raygate"):
        self.client = client
        self.namespace = namespace
        self._script = client.register_script(_PUBLISH)

    def record_key(self, scenario: str) -> str:
        return f"{self.namespace}:duals:{scenario}"

    def version_key(self, scenario: str) -> str:
        return f"{self.namespace}:duals:{scenario}:version"

    def channel(self, scenario: str) -> str:
        return f"{self.namespace}:duals:{scenario}"

    def publish(self, scenario: str, lambdas, names, certificate: dict, computed_at: float,
                now: Callable[[], float] = time.time) -> int:
        """Write a new record atomically and announce it; returns its version."""
        lam = [float(x) for x in lambdas]
        names = [str(x) for x in names]
        if len(lam) != len(names):
            raise ValueError(f"{len(lam)} prices but {len(names)} names")
        if any(not np.isfinite(x) or x < 0 for x in lam):
            raise ValueError("prices must be finite and >= 0")
        version = self._script(
            keys=[self.version_key(scenario), self.record_key(scenario)],
            args=[json.dumps(lam), json.dumps(names), json.dumps(certificate, default=float), repr(float(computed_at)),
                  repr(float(now())), self.channel(scenario)])
        return int(version)

    def read(self, scenario: str) -> DualPrices | None:
        """The current record, or None if nothing was published for `scenario`."""
        raw = self.client.hgetall(self.record_key(scenario))
        if not raw:
            return None
        get = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
               for k, v in raw.items()}
        return DualPrices(scenario=scenario, version=int(get["version"]), lam=tuple(json.loads(get["lambda"])),
                          names=tuple(json.loads(get["names"])), certificate=json.loads(get["certificate"]),
                          computed_at=float(get["computed_at"]))


class DualPriceReader:
    """A local copy of one scenario's prices that never goes back to an older version and keeps serving the last
    good prices while Redis is unreachable (`stale` says so, `last_error` says why)."""

    def __init__(self, store: DualPriceStore, scenario: str, clock: Callable[[], float] = time.time):
        self.store = store
        self.scenario = scenario
        self.clock = clock
        self._lock = threading.Lock()
        self._prices: DualPrices | None = None
        self.stale = True  # True until a refresh succeeds, and again after a failed one
        self.last_ok_at: float | None = None  # clock() of the last successful refresh
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def offer(self, prices: DualPrices | None) -> bool:
        """Take `prices` if newer than the local copy (pure version rule); True if taken."""
        with self._lock:
            if prices is None or (self._prices is not None and prices.version <= self._prices.version):
                return False
            self._prices = prices
            return True

    def refresh(self) -> DualPrices | None:
        """Read Redis once; on any error keep the local copy and mark it stale. Never raises."""
        try:
            fresh = self.store.read(self.scenario)
        except Exception as exc:  # redis.ConnectionError, TimeoutError, ...: serve what we have
            self.stale = True
            self.last_error = f"{type(exc).__name__}: {exc}"
            return self.current()
        self.offer(fresh)
        self.stale = False
        self.last_error = None
        self.last_ok_at = self.clock()
        return self.current()

    def current(self) -> DualPrices | None:
        with self._lock:
            return self._prices

    def start(self, poll_s: float = 5.0) -> "DualPriceReader":
        """Refresh in a background thread on every announcement, and every `poll_s` seconds regardless."""
        self._thread = threading.Thread(target=self._run, args=(poll_s,), name=f"duals-{self.scenario}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self, poll_s: float) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.store.channel(self.scenario))
                self.refresh()
                deadline = time.monotonic() + poll_s
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=min(0.2, poll_s))
                    if message is not None or time.monotonic() >= deadline:
                        self.refresh()
                        deadline = time.monotonic() + poll_s
            except Exception as exc:  # connection lost: mark stale, wait a little, resubscribe; never die
                self.stale = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(min(poll_s, 0.5))
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
