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

__all__ = ["SampleStore", "sample_weight", "samples_instance"]


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
    n = len(records)
    J = max(1, max(len(r["items"]) for r in records))
    catalog: dict[str, int] = {}
    for rec in records:
        for item in rec["items"]:
            catalog.setdefault(item, len(catalog))
    P = max(1, len(catalog))
    c = np.zeros((n, J))
    mask = np.zeros((n, J), dtype=bool)
    item = np.zeros((n, J), dtype=np.int32)
    w = np.zeros((n, J, matrix.R))
    for i, rec in enumerate(records):
        k = len(rec["items"])
        weight = rec.get("w", 1.0)
        c[i, :k] = rec["value"]
        mask[i, :k] = True
        item[i, :k] = [catalog[x] for x in rec["items"]]
        w[i, :k] = rec["usage"]
        if weight != 1.0:
            c[i, :k] *= weight
            w[i, :k] *= weight
    A = np.zeros((matrix.R, P, matrix.K))
    for name, p in catalog.items():
        A[:, p, :] = matrix.weights(name)
    return Instance(c=c, mask=mask, item=item, w=w, A=A, b=np.asarray(capacities, dtype=np.float64),
                    ctype=tuple("scenario" for _ in matrix.names), cname=tuple(matrix.names))
