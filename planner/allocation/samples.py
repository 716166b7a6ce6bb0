"""Sampled decisions in a Redis Stream, and the LP instance the nearline solve builds from them.

Key: {ns:scenario}:samples (a stream, trimmed to about `maxlen` entries). Each entry has one field `d`: JSON
{"t": unix seconds, "items": [J names], "value": [J floats, calibrated], "usage": [[R floats] x J]}.
"""

from __future__ import annotations

import json

import numpy as np

from planner.allocation.decide import ConstraintMatrix
from planner.instance import Instance
from planner.store import scenario_tag

__all__ = ["SampleStore", "samples_instance"]


class SampleStore:
    """The scenario's sample stream; receives its client."""

    def __init__(self, client, scenario: str, namespace: str = "raygate", maxlen: int = 200_000):
        self.client = client
        self.key = f"{scenario_tag(namespace, scenario)}:samples"
        self.maxlen = maxlen

    def append(self, records: list[dict]) -> None:
        """Add records in one round trip (a transaction)."""
        if not records:
            return
        pipe = self.client.pipeline(transaction=True)
        for rec in records:
            pipe.xadd(self.key, {"d": json.dumps(rec)}, maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def read_since(self, last_id: str = "-", count: int = 100_000) -> tuple[str, list[dict]]:
        """Entries after `last_id` ("-": from the start); returns the id to continue from and the records."""
        start = "-" if last_id == "-" else f"({last_id}"
        entries = self.client.xrange(self.key, min=start, max="+", count=count)
        if not entries:
            return last_id, []
        records = [json.loads(fields[b"d"] if b"d" in fields else fields["d"]) for _, fields in entries]
        last = entries[-1][0]
        return (last.decode() if isinstance(last, bytes) else last), records


def samples_instance(records, matrix: ConstraintMatrix, capacities: np.ndarray) -> Instance:
    """The factored LP of the sampled requests (users = requests) with the given capacities."""
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
        c[i, :k] = rec["value"]
        mask[i, :k] = True
        item[i, :k] = [catalog[x] for x in rec["items"]]
        w[i, :k] = rec["usage"]
    A = np.zeros((matrix.R, P, matrix.K))
    for name, p in catalog.items():
        A[:, p, :] = matrix.weights(name)
    return Instance(c=c, mask=mask, item=item, w=w, A=A, b=np.asarray(capacities, dtype=np.float64),
                    ctype=tuple("scenario" for _ in matrix.names), cname=tuple(matrix.names))
