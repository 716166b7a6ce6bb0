"""Budgets that never overspend: consumption counted in Redis per constraint, capacity handed to replicas in
leases.

Keys (all under the scenario's hash tag, so one script touches one Redis Cluster slot):
    {ns:scenario}:budget:cap       hash constraint -> capacity
    {ns:scenario}:budget:pool      hash constraint -> capacity nobody holds (capacity - used - held by leases)
    {ns:scenario}:budget:used      hash constraint -> consumption reported so far
    {ns:scenario}:budget:leases    hash "holder|constraint" -> capacity that holder may still spend
    {ns:scenario}:budget:expiry    hash holder -> when its lease returns to the pool unless renewed
    {ns:scenario}:arrivals         hash forecast bucket (unix seconds // bucket_s) -> requests seen

One Lua script does a replica's whole sync atomically: return the expired leases of others to the pool (killed
replicas), add the replica's consumption since the last sync to `used` and take it off its lease, count its
arrivals, and top its lease up to `fraction` of what remains (pool + held), so chunks shrink as budgets run out
(in whole multiples of `min_chunk`, the largest single consumption seen, so leases do not fragment into
crumbs nobody can use; a crumb smaller than that goes back to the pool). A replica spends only what it holds, so the
total cannot exceed the capacity. While Redis is down it keeps deciding from its lease (until its own copy of the
lease's time-to-live runs out) and buffers consumption and arrivals; the next sync writes them, nothing lost.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planner.store import scenario_tag

__all__ = ["BudgetLease", "BudgetStore", "LeaseState"]

_SYNC = """
local holder, now, ttl, fraction = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local release, K, base = ARGV[5] == '1', tonumber(ARGV[6]), 6
local function fmt(x) return string.format('%.17g', x) end
local exp = redis.call('HGETALL', KEYS[5])
for i = 1, #exp, 2 do
  local h = exp[i]
  if h ~= holder and tonumber(exp[i + 1]) < now then
    for k = 1, K do
      local name = ARGV[base + k]
      local held = tonumber(redis.call('HGET', KEYS[4], h .. '|' .. name) or '0')
      if held > 0 then redis.call('HINCRBYFLOAT', KEYS[2], name, fmt(held)) end
      redis.call('HDEL', KEYS[4], h .. '|' .. name)
    end
    redis.call('HDEL', KEYS[5], h)
  end
end
local known = redis.call('HEXISTS', KEYS[5], holder) == 1
local out = {}
for k = 1, K do
  local name = ARGV[base + k]
  local spent = tonumber(ARGV[base + K + k])
  local minchunk = tonumber(ARGV[base + 2 * K + k])
  local f = holder .. '|' .. name
  if spent ~= 0 then
    redis.call('HINCRBYFLOAT', KEYS[3], name, fmt(spent))
    if known then redis.call('HINCRBYFLOAT', KEYS[4], f, fmt(-spent))
    else redis.call('HINCRBYFLOAT', KEYS[2], name, fmt(-spent)) end
  end
  local held = tonumber(redis.call('HGET', KEYS[4], f) or '0')
  local pool = tonumber(redis.call('HGET', KEYS[2], name) or '0')
  if release then
    if held ~= 0 then pool = tonumber(redis.call('HINCRBYFLOAT', KEYS[2], name, fmt(held))) end
    held = 0
    redis.call('HDEL', KEYS[4], f)
  elseif minchunk > 0 and held > 0 and held < minchunk and held + pool < minchunk then
    pool = tonumber(redis.call('HINCRBYFLOAT', KEYS[2], name, fmt(held)))  -- a crumb too small to use: give it
    held = 0                                                              -- back so others can add it up
    redis.call('HDEL', KEYS[4], f)
  else
    local total = math.max(held + pool, 0)
    local target = math.max(fraction * total, math.min(minchunk, total))
    if held < target and pool > 0 then
      local take = target - held
      if minchunk > 0 then take = math.ceil(take / minchunk - 1e-9) * minchunk end
      take = math.min(take, pool)
      pool = tonumber(redis.call('HINCRBYFLOAT', KEYS[2], name, fmt(-take)))
      held = tonumber(redis.call('HINCRBYFLOAT', KEYS[4], f, fmt(take)))
    end
  end
  out[#out + 1] = fmt(held)
  out[#out + 1] = fmt(pool)
  out[#out + 1] = redis.call('HGET', KEYS[3], name) or '0'
end
if release then redis.call('HDEL', KEYS[5], holder) else redis.call('HSET', KEYS[5], holder, fmt(now + ttl)) end
local first = base + 3 * K + 1
for i = first, #ARGV, 2 do redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1]) end
return out
"""

_ENSURE = """
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HSETNX', KEYS[3], ARGV[i], '0')
  end
end
return 1
"""


@dataclass(frozen=True)
class LeaseState:
    """What one sync left in Redis for the caller's constraints."""

    held: np.ndarray  # (K,) capacity the holder may still spend
    pool: np.ndarray  # (K,) capacity nobody holds
    used: np.ndarray  # (K,) consumption reported so far by everyone


class BudgetStore:
    """The scenario's budget keys in Redis; receives its client (never builds or closes one)."""

    def __init__(self, client, scenario: str, namespace: str = "raygate"):
        self.client = client
        self.scenario = scenario
        tag = scenario_tag(namespace, scenario)
        self.keys = [f"{tag}:budget:cap", f"{tag}:budget:pool", f"{tag}:budget:used", f"{tag}:budget:leases",
                     f"{tag}:budget:expiry", f"{tag}:arrivals"]
        self._sync = client.register_script(_SYNC)
        self._ensure = client.register_script(_ENSURE)

    def ensure(self, names, capacities) -> None:
        """Create each constraint's counters at full capacity unless they exist (idempotent, atomic)."""
        args = []
        for name, cap in zip(names, capacities):
            args += [str(name), repr(float(cap))]
        self._ensure(keys=self.keys[:3], args=args)

    def sync(self, holder: str, now: float, ttl_s: float, fraction: float, names, spent, min_chunk,
             arrivals: dict[int, int] | None = None, release: bool = False) -> LeaseState:
        """The sync script (module docstring); raises what redis-py raises when Redis is unreachable."""
        args = [holder, repr(float(now)), repr(float(ttl_s)), repr(float(fraction)), "1" if release else "0",
                str(len(names)), *map(str, names), *(repr(float(x)) for x in spent),
                *(repr(float(x)) for x in min_chunk)]
        for bucket, count in (arrivals or {}).items():
            args += [str(int(bucket)), str(int(count))]
        raw = np.asarray([float(x) for x in self._sync(keys=self.keys, args=args)]).reshape(-1, 3)
        return LeaseState(held=raw[:, 0], pool=raw[:, 1], used=raw[:, 2])

    def _floats(self, key: str, names) -> np.ndarray:
        values = self.client.hmget(key, list(names))
        return np.asarray([float(v) if v is not None else 0.0 for v in values])

    def used(self, names) -> np.ndarray:
        """Consumption reported so far, per constraint."""
        return self._floats(self.keys[2], names)

    def pool(self, names) -> np.ndarray:
        return self._floats(self.keys[1], names)

    def arrivals(self) -> dict[int, int]:
        """Requests seen per forecast bucket."""
        return {int(k): int(v) for k, v in self.client.hgetall(self.keys[5]).items()}

    def add_arrivals(self, counts: dict[int, int]) -> None:
        """Add history (e.g. from before the platform counted it), atomically."""
        pipe = self.client.pipeline(transaction=True)
        for bucket, count in counts.items():
            pipe.hincrby(self.keys[5], str(int(bucket)), int(count))
        pipe.execute()

    def holders(self) -> dict[str, float]:
        """Lease holders and when their leases expire."""
        return {(k.decode() if isinstance(k, bytes) else k): float(v)
                for k, v in self.client.hgetall(self.keys[4]).items()}


class BudgetLease:
    """A replica's lease: spends only what it holds, buffers consumption and arrivals between syncs, and keeps
    deciding from the lease while Redis is down (for at most its time-to-live, after which the pool may have
    reclaimed it). Thread-safe; `sync()` never raises."""

    def __init__(self, store: BudgetStore, holder: str, names, capacity, *, bucket_s: float, ttl_s: float = 30.0,
                 fraction: float = 0.05, min_fraction: float = 0.0005, clock: Callable[[], float] = time.time):
        self.store = store
        self.holder = holder
        self.names = tuple(names)
        self.capacity = np.asarray(capacity, dtype=np.float64)
        self.bucket_s = bucket_s
        self.ttl_s = ttl_s
        self.fraction = fraction
        self.min_fraction = min_fraction
        self.clock = clock
        self._lock = threading.Lock()
        self.held = np.zeros(len(self.names))  # what this replica may still spend
        self.pending = np.zeros(len(self.names))  # spent, not yet written to Redis
        self._arrivals: dict[int, int] = defaultdict(int)  # counted, not yet written
        self._need = np.zeros(len(self.names))  # largest single consumption seen (sizes the smallest chunk)
        self.valid_until = -np.inf  # clock() after which the held lease may have been reclaimed
        self.healthy = False  # the last sync reached Redis
        self.last_error: str | None = None
        self.last_state: LeaseState | None = None

    def remaining(self) -> np.ndarray:
        """What may be spent now: the held lease, or nothing once it may have expired."""
        with self._lock:
            return self.held.copy() if self.clock() < self.valid_until else np.zeros_like(self.held)

    def count_arrival(self) -> None:
        with self._lock:
            self._arrivals[int(self.clock() // self.bucket_s)] += 1

    def try_spend(self, consumption: np.ndarray) -> bool:
        """Take `consumption` off the lease if it fits entirely; False (and nothing taken) otherwise."""
        with self._lock:
            if self.clock() >= self.valid_until or np.any(consumption > self.held * (1 + 1e-9) + 1e-12):
                return False
            self.held = np.maximum(self.held - consumption, 0.0)
            self.pending += consumption
            self._need = np.maximum(self._need, consumption)
            return True

    def note_need(self, consumption: np.ndarray) -> None:
        """A candidate needed this much and the lease was too small: size the next top-up to fit it."""
        with self._lock:
            self._need = np.maximum(self._need, consumption)

    def sync(self, release: bool = False) -> bool:
        """Write buffered consumption and arrivals, renew and top up the lease (or give it back). Never raises."""
        with self._lock:
            spent, self.pending = self.pending, np.zeros_like(self.pending)
            arrivals, self._arrivals = dict(self._arrivals), defaultdict(int)
            min_chunk = np.maximum(self.min_fraction * self.capacity, self._need)
        started = self.clock()
        try:
            state = self.store.sync(self.holder, started, self.ttl_s, self.fraction, self.names, spent, min_chunk,
                                    arrivals, release)
        except Exception as exc:  # Redis unreachable: keep everything buffered for the next sync
            with self._lock:
                self.pending += spent
                for bucket, count in arrivals.items():
                    self._arrivals[bucket] += count
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        with self._lock:
            # Spent locally while the script ran is still pending: take it off what Redis says we hold.
            self.held = np.maximum(state.held - self.pending, 0.0)
            self.valid_until = -np.inf if release else started + 0.8 * self.ttl_s
            self.healthy = True
            self.last_error = None
            self.last_state = state
        return True

    def release(self) -> bool:
        """Report what is pending and give the unused lease back to the pool (shutdown)."""
        return self.sync(release=True)
