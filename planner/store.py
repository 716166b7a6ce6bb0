"""Dual prices in Redis: versioned within an epoch, written atomically, announced on pub/sub; a reader that survives
Redis outages and Redis resets.

Keys (namespace defaults to "raygate"; every key of a scenario shares the hash tag `{ns:scenario}`, so the scripts
below touch one Redis Cluster slot):
    {ns:scenario}:duals:epoch     random token, set once (SET NX); a new one means the counters were reset
    {ns:scenario}:duals:version   INCR counter: the last version handed out in this epoch
    {ns:scenario}:duals           hash: epoch, version, lambda, names, certificate, plan (JSON), computed_at,
                                  published_at
    {ns:scenario}:duals           pub/sub channel; payload = the new version number as text

A publish is one Lua script: it refuses a record computed earlier than the stored one (a slow, older solve never
overwrites a newer one), creates the epoch if missing, INCRs the version, writes the whole hash and PUBLISHes.
After a FLUSHDB the next publish starts a new epoch at version 1; after a lost AOF tail the version in Redis may be
lower than one a reader holds. Readers take Redis's record in both cases (a reset), instead of holding on to
prices nobody will ever supersede.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DualPriceReader",
    "DualPriceStore",
    "DualPrices",
    "Published",
    "certificate_problem",
    "price_certificate",
    "scenario_tag",
]

_PUBLISH = """
local stored = redis.call('HGET', KEYS[3], 'computed_at')
if stored and tonumber(stored) > tonumber(ARGV[4]) then
  return {0, redis.call('HGET', KEYS[3], 'version'), redis.call('GET', KEYS[1]) or ''}
end
redis.call('SET', KEYS[1], ARGV[7], 'NX')
local epoch = redis.call('GET', KEYS[1])
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], 'epoch', epoch, 'version', v, 'lambda', ARGV[1], 'names', ARGV[2],
           'certificate', ARGV[3], 'computed_at', ARGV[4], 'published_at', ARGV[5], 'plan', ARGV[6])
redis.call('PUBLISH', KEYS[3], v)
return {1, v, epoch}
"""


def scenario_tag(namespace: str, scenario: str) -> str:
    """The hash tag every Redis key of one scenario starts with."""
    return "{" + f"{namespace}:{scenario}" + "}"


def price_certificate(dual_objective: float, primal_objective: float, max_violation: float) -> dict:
    """The certificate published with prices: today's gap (dual - primal) / dual and the rigorous gap
    1 - primal / ((1 + overshoot) * dual), which also charges the overshoot (scaling an overshooting allocation down
    by 1 + overshoot makes it feasible, so primal / (1 + overshoot) is a feasible value below the dual bound)."""
    dual, primal, over = float(dual_objective), float(primal_objective), max(0.0, float(max_violation))
    denom = max(abs(dual), 1e-300)
    return {"dual_objective": dual, "primal_objective": primal, "max_violation": over,
            "gap": (dual - primal) / denom, "rigorous_gap": 1.0 - primal / ((1.0 + over) * denom)}


def certificate_problem(certificate: dict, names, expected_names, gap_tol: float, overshoot_tol: float) -> str | None:
    """Why these prices must not be published (None: they may)."""
    if tuple(names) != tuple(expected_names):
        return f"constraint names {list(names)} do not match the scenario's {list(expected_names)}"
    for key in ("rigorous_gap", "max_violation"):
        value = certificate.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"certificate.{key} is missing or not finite"
    if certificate["max_violation"] > overshoot_tol:
        return f"overshoot {certificate['max_violation']:.4g} > overshoot_tol {overshoot_tol:g}"
    if certificate["rigorous_gap"] > gap_tol:
        return f"rigorous gap {certificate['rigorous_gap']:.4g} > gap_tol {gap_tol:g}"
    return None


@dataclass(frozen=True)
class DualPrices:
    """One published price record."""

    scenario: str  # which allocation problem these prices are for
    version: int  # strictly increasing per scenario within one epoch
    lam: tuple[float, ...]  # K prices, >= 0
    names: tuple[str, ...]  # K constraint names, in the order of `lam`
    certificate: dict  # dual_objective, primal_objective, max_violation, gap, rigorous_gap (see price_certificate)
    computed_at: float  # unix time of the data the prices were computed from
    epoch: str = ""  # the store's epoch token when published
    plan: dict = field(default_factory=dict)  # what the planner assumed (per-request budget rates, ...)
    published_at: float = 0.0  # unix time of the publish

    def as_array(self) -> np.ndarray:
        return np.asarray(self.lam, dtype=np.float64)


@dataclass(frozen=True)
class Published:
    """The answer of a publish: taken (with its version and epoch) or refused (with the reason)."""

    accepted: bool
    version: int  # the new version, or the stored one when refused (0 if none)
    epoch: str
    reason: str = ""


class DualPriceStore:
    """Reads and writes price records; receives a redis-py client (never builds or closes one)."""

    def __init__(self, client, namespace: str = "raygate"):
        self.client = client
        self.namespace = namespace
        self._script = client.register_script(_PUBLISH)

    def record_key(self, scenario: str) -> str:
        return f"{scenario_tag(self.namespace, scenario)}:duals"

    def version_key(self, scenario: str) -> str:
        return f"{scenario_tag(self.namespace, scenario)}:duals:version"

    def epoch_key(self, scenario: str) -> str:
        return f"{scenario_tag(self.namespace, scenario)}:duals:epoch"

    def channel(self, scenario: str) -> str:
        return self.record_key(scenario)

    def publish(self, scenario: str, lambdas, names, certificate: dict, computed_at: float, plan: dict | None = None,
                now: Callable[[], float] = time.time) -> Published:
        """Write a new record atomically and announce it, unless the stored record was computed later."""
        lam = [float(x) for x in lambdas]
        names = [str(x) for x in names]
        if len(lam) != len(names):
            raise ValueError(f"{len(lam)} prices but {len(names)} names")
        if any(not np.isfinite(x) or x < 0 for x in lam):
            raise ValueError("prices must be finite and >= 0")
        if not math.isfinite(float(computed_at)):
            raise ValueError("computed_at must be finite")
        accepted, version, epoch = self._script(
            keys=[self.epoch_key(scenario), self.version_key(scenario), self.record_key(scenario)],
            args=[json.dumps(lam), json.dumps(names), json.dumps(certificate, default=float), repr(float(computed_at)),
                  repr(float(now())), json.dumps(plan or {}, default=float), uuid.uuid4().hex])
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if not int(accepted):
            return Published(False, int(version or 0), epoch, "a record computed later is already stored")
        return Published(True, int(version), epoch)

    def publish_certified(self, scenario: str, lambdas, names, certificate: dict, computed_at: float, *,
                          expected_names, gap_tol: float, overshoot_tol: float, plan: dict | None = None,
                          now: Callable[[], float] = time.time) -> Published:
        """Publish only if the certificate is within the tolerances and the names are the scenario's."""
        problem = certificate_problem(certificate, names, expected_names, gap_tol, overshoot_tol)
        if problem is not None:
            return Published(False, 0, "", problem)
        return self.publish(scenario, lambdas, names, certificate, computed_at, plan, now)

    def read(self, scenario: str) -> DualPrices | None:
        """The current record, or None if nothing was published for `scenario` (in this epoch)."""
        raw = self.client.hgetall(self.record_key(scenario))
        if not raw:
            return None
        get = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
               for k, v in raw.items()}
        return DualPrices(scenario=scenario, version=int(get["version"]), lam=tuple(json.loads(get["lambda"])),
                          names=tuple(json.loads(get["names"])), certificate=json.loads(get["certificate"]),
                          computed_at=float(get["computed_at"]), epoch=get.get("epoch", ""),
                          plan=json.loads(get.get("plan") or "{}"), published_at=float(get.get("published_at", 0)))


class DualPriceReader:
    """A local copy of one scenario's prices. Within an epoch it never goes back to an older version; a new epoch,
    or a version lower than the one held in the same epoch (a lost AOF tail), is a reset and Redis's record wins.
    While Redis is unreachable it keeps serving the last prices; `stale` says so, and also when the prices are older
    than `stale_after_s`."""

    def __init__(self, store: DualPriceStore, scenario: str, clock: Callable[[], float] = time.time,
                 stale_after_s: float | None = None):
        self.store = store
        self.scenario = scenario
        self.clock = clock  # unix seconds (compared with computed_at)
        self.stale_after_s = stale_after_s  # None: age never makes prices stale
        self._lock = threading.Lock()
        self._prices: DualPrices | None = None
        self.unreachable = True  # True until a refresh succeeds, and again after a failed one
        self.missing = False  # Redis answered but holds no record although we hold prices (flushed)
        self.resets = 0  # resets detected (new epoch, or version gone back)
        self.last_ok_at: float | None = None  # clock() of the last successful refresh
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[DualPrices], None]] = []

    def on_change(self, listener: Callable[[DualPrices], None]) -> None:
        """Call `listener(prices)` whenever the local copy changes (from the refreshing thread)."""
        self._listeners.append(listener)

    def age_s(self) -> float | None:
        prices = self.current()
        return None if prices is None else max(0.0, self.clock() - prices.computed_at)

    @property
    def stale(self) -> bool:
        """Unreachable, flushed, never loaded, or older than stale_after_s."""
        if self.unreachable or self.missing or self._prices is None:
            return True
        age = self.age_s()
        return self.stale_after_s is not None and age is not None and age > self.stale_after_s

    def offer(self, prices: DualPrices | None) -> bool:
        """Take `prices` if newer than the local copy: same epoch, a higher version; another epoch, published later
        (a record from before a reset never replaces one from after it). True if taken."""
        with self._lock:
            held = self._prices
            if prices is None or (held is not None and (
                    prices.version <= held.version if prices.epoch == held.epoch
                    else prices.published_at <= held.published_at)):
                return False
            self._prices = prices
        self._announce(prices)
        return True

    def _adopt(self, prices: DualPrices, reset: bool) -> None:
        with self._lock:
            self._prices = prices
            self.resets += int(reset)
        self._announce(prices)

    def _announce(self, prices: DualPrices) -> None:
        for listener in self._listeners:
            try:
                listener(prices)
            except Exception:  # a listener's bug must not stop the refresher
                pass

    def refresh(self) -> DualPrices | None:
        """Read Redis once; on any error keep the local copy and mark it unreachable. Never raises.

        Redis's record is the truth: a higher version is taken, and so is a record of another epoch or a lower
        version of the same epoch (both mean Redis was reset; counted in `resets`)."""
        try:
            fresh = self.store.read(self.scenario)
        except Exception as exc:  # redis.ConnectionError, TimeoutError, ...: serve what we have
            self.unreachable = True
            self.last_error = f"{type(exc).__name__}: {exc}"
            return self.current()
        held = self.current()
        self.missing = fresh is None and held is not None
        if fresh is not None:
            if held is None or (fresh.epoch == held.epoch and fresh.version > held.version):
                self._adopt(fresh, reset=False)
            elif fresh.epoch != held.epoch or fresh.version < held.version:
                self._adopt(fresh, reset=True)
        self.unreachable = False
        self.last_error = None
        self.last_ok_at = self.clock()
        return self.current()

    def current(self) -> DualPrices | None:
        with self._lock:
            return self._prices

    def start(self, poll_s: float = 5.0) -> DualPriceReader:
        """Refresh in a background thread on every announcement, and every `poll_s` seconds regardless."""
        self._stop.clear()
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
            except Exception as exc:  # connection lost: mark unreachable, wait a little, resubscribe; never die
                self.unreachable = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(min(poll_s, 0.5))
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
