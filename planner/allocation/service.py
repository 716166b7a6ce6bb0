"""The allocator deployment's code: one scenario's decisions, in well under a millisecond, never waiting on the
planner.

`Allocator(scenario=..., redis_url=...)` is user code like any deployment's class. Per request it parses the body
(400 naming the field on anything wrong, nothing consumed), calibrates the values, decides with its local copy of the
prices and its budget lease (`decide.py`), corrects the prices by one dual step, and answers
`{"item", "score", "prices_version", "prices_age_s", "stale"}`. Redis is touched only by background threads:
the price reader (pub/sub announcement, polling as a fallback) and the sync loop (lease renewal, consumption,
arrivals and the `sample_rate` share of requests for the planner). `POST <route>/feedback` teaches calibration; the
replica passes the request path so one class serves both (`__call__(payload, path=...)`).
"""

from __future__ import annotations

import gc
import os
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable

import numpy as np

from planner.allocation.budget import BudgetLease, BudgetStore
from planner.allocation.calibration import Calibration
from planner.allocation.decide import (
    ConstraintMatrix,
    consumption_unit,
    decide,
    dmd_step,
)
from planner.allocation.requests import parse_decision, parse_feedback
from planner.allocation.samples import SampleStore
from planner.allocation.sampling import ItemStratifiedSampler
from planner.allocation.scenario import ScenarioSpec
from planner.store import DualPriceReader, DualPrices, DualPriceStore
from planner.ties import break_ties
from replicas import Reply

__all__ = ["Allocator"]


def _freeze_heap() -> None:
    """Collect once, then move everything alive (imports, the scenario, Ray's own objects) out of the cyclic
    collector's sight: a full collection then scans only what came later. Measured in a replica at 500 req/s: the
    first full collections paused decisions 37-195 ms (a p99 at the client); frozen, 0.03 ms."""
    gc.collect()
    gc.freeze()


class Allocator:
    """One scenario's allocator (see the module docstring). Thread-safe."""

    wants_request_path = True  # the replica passes `path=` (the request path) to __call__

    def __init__(self, scenario, redis_url: str | None = None, namespace: str = "raygate",
                 replica_id: str | None = None, *, client=None, clock: Callable[[], float] = time.time,
                 background: bool = True, poll_s: float | None = None, seed: int | None = None,
                 remember: int = 100_000, freeze_heap: bool = False):
        self.scenario = scenario if isinstance(scenario, ScenarioSpec) else ScenarioSpec.model_validate(scenario)
        self.clock = clock
        if client is None:
            import redis

            if not redis_url:
                raise ValueError("Allocator needs redis_url (or a client)")
            client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        sc = self.scenario
        self.matrix = ConstraintMatrix(sc)
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.reader = DualPriceReader(DualPriceStore(client, namespace), sc.name, clock=clock,
                                      stale_after_s=sc.stale_after_s)
        self.lease = BudgetLease(BudgetStore(client, sc.name, namespace), self.replica_id, sc.constraint_names,
                                 sc.capacities, bucket_s=sc.bucket_s, ttl_s=sc.lease_ttl_s,
                                 fraction=sc.lease_fraction, min_fraction=sc.lease_min_fraction, clock=clock)
        self.sample_store = SampleStore(client, sc.name, namespace)
        self.calibration = Calibration(sc.calibration, sc.calibration_half_life, sc.calibration_min_feedback)
        self._lock = threading.Lock()
        self._sampler = ItemStratifiedSampler(sc.sample_rate, sc.solver_sample_size, sc.min_item_samples,
                                              random.Random(seed))
        self._lam = np.zeros(self.matrix.K)  # the local prices: last published, then corrected per request
        self._version, self._computed_at, self._epoch = 0, None, ""
        self._rate: np.ndarray | None = None  # per-request budget rates of the plan (None: no correction)
        self._value_scale = 0.0
        self._unit = np.zeros(self.matrix.K)  # typical consumption of one allocation, per constraint
        self._samples: deque = deque(maxlen=50_000)  # sampled requests not yet written
        self._predictions: OrderedDict = OrderedDict()  # (user, item) -> raw value decided on, for feedback
        self._remember = remember
        self.counters = {"decisions": 0, "allocated": 0, "exhausted": 0, "bad_prices": 0, "feedback": 0}
        self.reader.on_change(self._anchor)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ensured = False  # the budget counters exist in Redis (created by whoever comes first)
        if background:
            self.start(poll_s)
        if freeze_heap:  # the platform's replicas: this process serves this allocator and nothing else
            _freeze_heap()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, poll_s: float | None = None) -> Allocator:
        """Start the price reader (polling every `poll_s`, default the scenario's price_poll_s) and the sync loop."""
        self.reader.start(poll_s or self.scenario.price_poll_s)
        # The first lease before the first request: a replica that answered before its first sync would hand
        # out nothing (the hard stop on an empty lease) until the sync thread came round. Never raises; with
        # Redis down it returns after one socket timeout with no lease, which is all a replica could have then.
        self.sync()
        thread = threading.Thread(target=self._sync_loop, name=f"alloc-sync-{self.scenario.name}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        """Stop the threads, write what is buffered and give the unused lease back."""
        self._stop.set()
        self._wake.set()
        self.reader.stop()
        for thread in self._threads:
            thread.join(5.0)
        self._flush_samples()
        self.lease.release()
        if self._owns_client:
            self.client.close()

    def _sync_loop(self) -> None:
        interval = self.scenario.sync_interval_s
        while not self._stop.is_set():
            self.sync()
            if self._wake.wait(interval):  # woken by a short lease: once the pool is empty every request would
                self._stop.wait(interval / 10)  # wake it, so at most ten extra syncs per interval

    @property
    def wants_sync(self) -> bool:
        """A lease ran short since the last sync (the sync thread is woken at once)."""
        return self._wake.is_set()

    def sync(self) -> bool:
        """Renew the lease, write consumption, arrivals and samples. Never raises; False if Redis failed."""
        if not self._ensured:
            try:
                self.lease.store.ensure(self.scenario.constraint_names, self.scenario.capacities)
                self._ensured = True
            except Exception:  # Redis down at start: decide from nothing (no lease) until it is back
                pass
        self._wake.clear()
        ok = self.lease.sync()
        return self._flush_samples() and ok

    def _flush_samples(self) -> bool:
        with self._lock:
            batch = list(self._samples)
            self._samples.clear()
        try:
            self.sample_store.append(batch)
            return True
        except Exception:  # Redis down: keep them (bounded; the oldest go first)
            with self._lock:
                self._samples = deque(batch + list(self._samples), maxlen=self._samples.maxlen)
            return False

    def _anchor(self, prices: DualPrices) -> None:
        """New published prices replace the locally corrected ones (called by the reader)."""
        if tuple(prices.names) != self.scenario.constraint_names:
            self.counters["bad_prices"] += 1
            return
        rate = prices.plan.get("rate")
        with self._lock:
            self._lam = prices.as_array().copy()
            self._version, self._computed_at, self._epoch = prices.version, prices.computed_at, prices.epoch
            self._rate = np.asarray(rate, dtype=np.float64) if rate and len(rate) == self.matrix.K else None
            self._value_scale = float(prices.plan.get("value_scale", 0.0))

    # -- requests -----------------------------------------------------------------------------------
    def __call__(self, payload, path: str | None = None) -> dict | Reply:
        """Dispatch on the request path: `.../feedback` -> feedback, anything else -> a decision."""
        if path and path.rstrip("/").endswith("/feedback"):
            return Reply(self.feedback(payload), status=202)  # accepted: learnt asynchronously to decisions
        return self.decide(payload)

    def decide(self, payload) -> dict:
        req = parse_decision(payload, self.matrix.usage_index, self.scenario.calibration != "off")
        values = self.calibration.apply(req.items, req.value)
        # The planner certified the rule on tie-broken values (planner/ties.py): decide on the same ones, so a
        # group of users with equal margins splits at a cap as the solve planned; samples keep the plain values.
        scored = break_ties(values, req.user, req.items)
        consumption = self.matrix.consumption(req.items, req.usage)
        with self._lock:
            choice = decide(scored, consumption, self._lam, self.lease.remaining())
            if choice.index >= 0 and not self.lease.try_spend(choice.consumption):
                choice = decide(scored, consumption, self._lam, self.lease.remaining())  # raced: once more
                if choice.index >= 0 and not self.lease.try_spend(choice.consumption):
                    choice = type(choice)(-1, choice.score, np.zeros(self.matrix.K), True, choice.consumption)
            # The answer's score is the plain value's (the tie-break's raise is the rule's, not the caller's).
            plain = values - consumption @ self._lam
            score = plain[choice.index] if choice.index >= 0 else (plain.max() if plain.size else 0.0)
            if choice.index >= 0:
                self._unit = consumption_unit(self._unit, choice.consumption)
            if self._rate is not None:
                self._lam = dmd_step(self._lam, choice.consumption, self._rate, self.scenario.dmd_step,
                                     self._value_scale, self._unit)
            version, computed_at = self._version, self._computed_at
            weight = self._sampler.offer(req.items)
            if weight is not None:
                self._samples.append({"t": self.clock(), "items": list(req.items), "value": values.tolist(),
                                      "usage": req.usage.tolist(), "w": weight})
            item = req.items[choice.index] if choice.index >= 0 else None
            if item is not None and self.scenario.calibration != "off":
                self._predictions[(req.user, item)] = float(req.value[choice.index])
                if len(self._predictions) > self._remember:
                    self._predictions.popitem(last=False)
            self.counters["decisions"] += 1
            self.counters["allocated"] += item is not None
            self.counters["exhausted"] += choice.exhausted
        self.lease.count_arrival()
        if choice.exhausted:
            if choice.need is not None:
                self.lease.note_need(choice.need)
            self._wake.set()  # a lease ran short: top it up now rather than at the next tick
        return {"item": item, "score": float(score), "prices_version": int(version),
                "prices_age_s": float(max(0.0, self.clock() - computed_at)) if computed_at is not None else 0.0,
                "stale": bool(self.stale)}

    def feedback(self, payload) -> dict:
        """Learn from an outcome; uses the prediction this replica decided on (or `value` sent back)."""
        req = parse_feedback(payload)
        with self._lock:
            predicted = req.value if req.value is not None else self._predictions.pop((req.user, req.item), None)
            self.counters["feedback"] += 1
        if predicted is not None:
            self.calibration.observe(req.item, predicted, req.outcome)
        return {"accepted": True, "learned": predicted is not None}

    # -- state --------------------------------------------------------------------------------------
    @property
    def stale(self) -> bool:
        """Prices unreachable, reset, missing or too old, or the budget sync failing."""
        return self.reader.stale or not self.lease.healthy

    @property
    def prices(self) -> np.ndarray:
        with self._lock:
            return self._lam.copy()

    def metrics(self) -> dict:
        """What the platform's metrics should show for this replica."""
        age = self.reader.age_s()
        return {"scenario": self.scenario.name, "replica": self.replica_id, **self.counters,
                "prices_version": self._version, "prices_age_s": age, "stale": self.stale,
                "redis_ok": self.lease.healthy and not self.reader.unreachable, "price_resets": self.reader.resets,
                "lease_held": self.lease.held.tolist(), "pending_consumption": self.lease.pending.tolist(),
                "calibration": self.calibration.metrics()}
