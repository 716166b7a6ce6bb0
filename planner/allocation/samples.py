"""Sampled decisions in a Redis Stream, and the LP instance the nearline solve builds from them.

Key: {ns:scenario}:samples (a stream, trimmed to about `maxlen` entries). Each entry has one field `d`: JSON
{"t": unix seconds, "items": [J names], "value": [J floats, calibrated], "usage": [[R floats] x J], "w": weight}
(the weight: how many requests this record stands for relative to a uniform sample, sampling.py; 1 if absent).
"""

from __future__ import annotations

import numpy as np
import orjson

from planner.allocation.decide import ConstraintMatrix
from planner.instance import Instance
from planner.store import scenario_tag

__all__ = ["SampleStore", "SampleWindow", "sample_weight", "samples_instance"]


# One call adds a whole batch (atomic; the allocator's sync thread packs one command, not one per record).
_APPEND = """
for i = 2, #ARGV do redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i]) end
return #ARGV - 1
"""


class SampleStore:
    """The scenario's sample stream; receives its client."""

    def __init__(self, client, scenario: str, namespace: str = "raygate", maxlen: int = 200_000):
        self.client = client
        self.key = f"{scenario_tag(namespace, scenario)}:samples"
        self.maxlen = maxlen
        self._append = client.register_script(_APPEND)

    def append(self, records: list[dict]) -> None:
        """Add records in one round trip (one script call, atomic)."""
        if records:
            self._append(keys=[self.key], args=[self.maxlen, *map(orjson.dumps, records)])

    def read_since(self, last_id: str = "-", count: int = 100_000) -> tuple[str, list[dict]]:
        """Entries after `last_id` ("-": from the start); returns the id to continue from and the records."""
        start = "-" if last_id == "-" else f"({last_id}"
        entries = self.client.xrange(self.key, min=start, max="+", count=count)
        if not entries:
            return last_id, []
        records = [orjson.loads(fields[b"d"] if b"d" in fields else fields["d"]) for _, fields in entries]
        last = entries[-1][0]
        return (last.decode() if isinstance(last, bytes) else last), records


def sample_weight(records) -> float:
    """How many uniformly sampled requests the records stand for (the sum of their weights)."""
    return float(sum(rec.get("w", 1.0) for rec in records))


def samples_instance(records, matrix: ConstraintMatrix, capacities: np.ndarray) -> Instance:
    """The factored LP of the sampled requests (users = requests) with the given capacities; a request of weight w
    has its value and usage scaled by w (w identical users)."""
    window = SampleWindow(max(len(records), 1), matrix)
    window.extend(records)
    return window.instance(capacities)


class SampleWindow:
    """The newest `maxlen` sampled requests, parsed once into padded arrays (a ring): each cycle parses only the
    records it read, and the solve's instance is a gather of the rows (oldest first), not a rebuild of the whole
    window from dicts (that rebuild was ~45% of a cycle's CPU at 20,000 samples). Items get a column of A the
    first time they are seen and keep it (an item no longer in the window is a column nobody uses)."""

    def __init__(self, maxlen: int, matrix: ConstraintMatrix, width: int = 1):
        self.maxlen, self.matrix = int(maxlen), matrix
        self.catalog: dict[str, int] = {}
        self._A: list[np.ndarray] = []  # per item: (R, K) weights
        self._next, self.count = 0, 0  # ring position of the next record; rows held
        self._alloc(max(int(width), 1))

    def _alloc(self, J: int) -> None:
        """(Re)allocate the ring for up to J candidates per request, keeping what it holds."""
        old = getattr(self, "c", None)
        n, R = self.maxlen, self.matrix.R
        c, mask, item = np.zeros((n, J)), np.zeros((n, J), dtype=bool), np.zeros((n, J), dtype=np.int32)
        w, weight = np.zeros((n, J, R)), np.zeros(n)
        if old is not None:
            j = old.shape[1]
            c[:, :j], mask[:, :j], item[:, :j], w[:, :j], weight[:] = old, self.mask, self.item, self.w, self.weight
        self.c, self.mask, self.item, self.w, self.weight = c, mask, item, w, weight

    def __len__(self) -> int:
        return self.count

    def extend(self, records) -> None:
        for rec in records:
            k = len(rec["items"])
            if k > self.c.shape[1]:
                self._alloc(k)
            i, wt = self._next, rec.get("w", 1.0)
            self.c[i], self.mask[i], self.w[i] = 0.0, False, 0.0
            self.c[i, :k] = rec["value"]
            self.w[i, :k] = rec["usage"]
            if wt != 1.0:
                self.c[i, :k] *= wt
                self.w[i, :k] *= wt
            self.mask[i, :k] = True
            self.item[i, :k] = [self._column(x) for x in rec["items"]]
            self.weight[i] = wt
            self._next = (i + 1) % self.maxlen
            self.count = min(self.count + 1, self.maxlen)

    def _column(self, name: str) -> int:
        p = self.catalog.get(name)
        if p is None:
            p = self.catalog[name] = len(self.catalog)
            self._A.append(self.matrix.weights(name))
        return p

    def rows(self) -> np.ndarray:
        """Ring positions of the held records, oldest first."""
        return (self._next - self.count + np.arange(self.count)) % self.maxlen

    def total_weight(self) -> float:
        """How many uniformly sampled requests the window stands for (`sample_weight` of its records)."""
        return float(self.weight[self.rows()].sum())

    def instance(self, capacities: np.ndarray) -> Instance:
        rows = self.rows()
        width = max(1, int(self.mask[rows].sum(axis=1).max())) if rows.size else 1
        A = np.stack(self._A, axis=1) if self._A else np.zeros((self.matrix.R, 1, self.matrix.K))
        return Instance(c=self.c[rows, :width], mask=self.mask[rows, :width], item=self.item[rows, :width],
                        w=self.w[rows, :width], A=A, b=np.asarray(capacities, dtype=np.float64),
                        ctype=tuple("scenario" for _ in self.matrix.names), cname=tuple(self.matrix.names))
