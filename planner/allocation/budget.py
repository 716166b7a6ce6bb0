"""Budgets that never overspend: consumption counted in Redis per constraint, capacity handed to replicas in
leases.

Keys (all under the scenario's hash tag, so one script touches one Redis Cluster slot):
    {ns:scenario}:budget:cap       hash constraint -> capacity
    {ns:scenario}:budget:pool      hash constraint -> capacity nobody holds (capacity - used - held by leases)
    {ns:scenario}:budget:used      hash constraint -> consumption reported so far
    {ns:scenario}:budget:leases    hash "holder|constraint" -> capacity that holder may still spend
    {ns:scenario}:budget:expiry    hash holder -> when its lease returns to the pool unless renewed
    {ns:scenario}:arrivals         hash forecast bucket (unix seconds // bucket_s) -> requests seen
    {ns:scenario}:budget:meta      hash: epoch (a token made with the counters), restored, base|constraint

One Lua script does a replica's whole sync atomically: return the expired leases of others to the pool (killed
replicas), add the replica's consumption since the last sync to `used` and take it off its lease, count its
arrivals, and top its lease up to `fraction` of what remains (pool + held), so chunks shrink as budgets run out
(in whole multiples of `min_chunk`, the largest single consumption seen, so leases do not fragment into
crumbs nobody can use; a crumb smaller than that goes back to the pool). A replica spends only what it holds, so the
total cannot exceed the capacity. While Redis is down it keeps deciding from its lease (until its own copy of the
lease's time-to-live runs out) and buffers consumption and arrivals; the next sync writes them, nothing lost.

A reset store (FLUSHDB, a lost AOF) has no epoch: whoever comes first makes the counters and a new epoch, and
each replica's next sync brings what it saw at its previous one (everyone's consumption, the pool, its lease), so
the consumption is restored and the capacity others held in leases is kept back until their time-to-live, rather
than the whole capacity being handed out again (`_RESTORE`). What is lost: consumption reported after the last
sync any surviving replica saw (at most one sync interval of the replicas that died with the reset).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planner.store import scenario_tag

__all__ = ["BudgetLease", "BudgetStore", "LeaseState"]

# Shared head of both scripts: the epoch, and the counters at full capacity when the store has none (first use,
# or after a reset). ARGV: ..., K at `kpos`, a fresh epoch token at `tokpos`, names from `base`, capacities at
# `base + capblock * K`.
_CREATE = """
local function fmt(x) return string.format('%.17g', x) end
local function num(key, field) return tonumber(redis.call('HGET', key, field) or '0') end
local epoch = redis.call('HGET', KEYS[7], 'epoch')
if not epoch then
  epoch = ARGV[tokpos]
  redis.call('HSET', KEYS[7], 'epoch', epoch, 'restored', '0')
  for k = 1, K do
    local name, cap = ARGV[base + k], ARGV[base + capblock * K + k]
    if redis.call('HSETNX', KEYS[1], name, cap) == 1 then
      redis.call('HSET', KEYS[2], name, cap)
      redis.call('HSET', KEYS[3], name, '0')
    end
  end
end
"""

_ENSURE = """
local K, tokpos, base, capblock = tonumber(ARGV[1]), 2, 2, 1
""" + _CREATE + """
return epoch
"""

# A holder whose lease was granted in an earlier epoch (the store was reset since) brings what it saw at its last
# sync: the consumption reported by everyone (G), the pool (P) and its own lease (h). The first such holder
# restores: used += G, and the leases others held then (cap - G - P - h) go to a reserve held by '~reset' that
# returns to the pool after the time-to-live (their holders reclaim their part, or were killed). Each later one
# adds the consumption reported after the restorer's view (G - base) and reclaims its lease, from the reserve
# first, then the pool. So the capacity is handed out once, not again.
_RESTORE = """
if mine ~= '' and mine ~= epoch then
  local first = redis.call('HGET', KEYS[7], 'restored') ~= '1'
  for k = 1, K do
    local name = ARGV[base + k]
    local G, P, h = tonumber(ARGV[base + 4 * K + k]), tonumber(ARGV[base + 5 * K + k]), tonumber(ARGV[base + 6 * K + k])
    local delta = math.max(G - num(KEYS[7], 'base|' .. name), 0)
    if delta > 0 then
      redis.call('HINCRBYFLOAT', KEYS[3], name, fmt(delta))
      redis.call('HSET', KEYS[7], 'base|' .. name, fmt(G))
    end
    if first then
      local reserve = math.max(num(KEYS[1], name) - G - P - h, 0)
      redis.call('HSET', KEYS[4], '~reset|' .. name, fmt(reserve))
      redis.call('HINCRBYFLOAT', KEYS[2], name, fmt(-(delta + reserve + h)))
    else
      local need = delta + h
      local take = math.min(num(KEYS[4], '~reset|' .. name), need)
      if take > 0 then redis.call('HINCRBYFLOAT', KEYS[4], '~reset|' .. name, fmt(-take)) end
      if need > take then redis.call('HINCRBYFLOAT', KEYS[2], name, fmt(take - need)) end
    end
    redis.call('HSET', KEYS[4], holder .. '|' .. name, fmt(h))
  end
  if first then
    redis.call('HSET', KEYS[7], 'restored', '1')
    redis.call('HSET', KEYS[5], '~reset', fmt(now + ttl))
  end
  redis.call('HSET', KEYS[5], holder, fmt(now + ttl))
end
"""

_SYNC = """
local holder, now, ttl, fraction = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local release, K, mine, tokpos, base, capblock = ARGV[5] == '1', tonumber(ARGV[6]), ARGV[7], 8, 8, 3
""" + _CREATE + _RESTORE + """
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
local first = base + 7 * K + 1
for i = first, #ARGV, 2 do redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1]) end
out[#out + 1] = epoch
return out
"""


@dataclass(frozen=True)
class LeaseState:
    """What one sync left in Redis for the caller's constraints."""

    held: np.ndarray  # (K,) capacity the holder may still spend
    pool: np.ndarray  # (K,) capacity nobody holds
    used: np.ndarray  # (K,) consumption reported so far by everyone
    epoch: str = ""  # the budget store's epoch (a new one after a reset)


class BudgetStore:
    """The scenario's budget keys in Redis; receives its client (never builds or closes one)."""

    def __init__(self, client, scenario: str, namespace: str = "raygate"):
        self.client = client
        self.scenario = scenario
        tag = scenario_tag(namespace, scenario)
        self.keys = [f"{tag}:budget:cap", f"{tag}:budget:pool", f"{tag}:budget:used", f"{tag}:budget:leases",
                     f"{tag}:budget:expiry", f"{tag}:arrivals", f"{tag}:budget:meta"]
        self._sync = client.register_script(_SYNC)
        self._ensure = client.register_script(_ENSURE)

    def ensure(self, names, capacities) -> str:
        """Create each constraint's counters at full capacity and an epoch unless they exist (idempotent, atomic);
        returns the epoch."""
        args = [str(len(names)), uuid.uuid4().hex, *map(str, names), *(repr(float(c)) for c in capacities)]
        return _text(self._ensure(keys=self.keys, args=args))

    def sync(self, holder: str, now: float, ttl_s: float, fraction: float, names, spent, min_chunk,
             arrivals: dict[int, int] | None = None, release: bool = False, *, capacity=None,
             last: LeaseState | None = None) -> LeaseState:
        """The sync script (module docstring); raises what redis-py raises when Redis is unreachable. `last` is the
        holder's previous state (what it brings when the store was reset since); `capacity` creates the counters
        if the store has none."""
        K = len(names)
        last = last or LeaseState(np.zeros(K), np.zeros(K), np.zeros(K))
        capacity = np.zeros(K) if capacity is None else capacity
        floats = (repr(float(x)) for block in (spent, min_chunk, capacity, last.used, last.pool, last.held)
                  for x in block)
        args = [holder, repr(float(now)), repr(float(ttl_s)), repr(float(fraction)), "1" if release else "0",
                str(K), last.epoch, uuid.uuid4().hex, *map(str, names), *floats]
        for bucket, count in (arrivals or {}).items():
            args += [str(int(bucket)), str(int(count))]
        out = self._sync(keys=self.keys, args=args)
        raw = np.asarray([float(x) for x in out[:-1]]).reshape(-1, 3)
        return LeaseState(held=raw[:, 0], pool=raw[:, 1], used=raw[:, 2], epoch=_text(out[-1]))

    def epoch(self) -> str | None:
        """The store's epoch token (None before the counters exist, or after a reset)."""
        value = self.client.hget(self.keys[6], "epoch")
        return None if value is None else _text(value)

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
        """Lease holders and when their leases expire (the reserve of a restore, '~reset', included)."""
        return {_text(k): float(v) for k, v in self.client.hgetall(self.keys[4]).items()}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        self.last_state: LeaseState | None = None  # what the last successful sync left (brought after a reset)
        self.resets = 0  # budget store resets this lease recovered from

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
            last = self.last_state
        started = self.clock()
        try:
            state = self.store.sync(self.holder, started, self.ttl_s, self.fraction, self.names, spent, min_chunk,
                                    arrivals, release, capacity=self.capacity, last=last)
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
            self.resets += bool(last is not None and last.epoch and state.epoch != last.epoch)
            self.last_state = state
        return True

    def release(self) -> bool:
        """Report what is pending and give the unused lease back to the pool (shutdown)."""
        return self.sync(release=True)
