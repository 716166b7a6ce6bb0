"""Which decisions the planner sees: sampling stratified by item.

A uniform `sample_rate` leaves an item that few requests list with a handful of records in the planner's window
(the newest `solver_sample_size` sampled requests), and its budget with a noisy price. Here a request is kept with
probability pi = min(1, sample_rate * boost), boost = max(1, max over its items j of
min_item_samples / (window * f_j)), where f_j is the share of recent requests listing item j (counted by this
replica): every item is then listed by about `min_item_samples` records of the window at least. A kept request
weighs sample_rate / pi (a boosted one stands for fewer requests), so weighted sums over the sample estimate the
traffic without bias; the planner scales each sampled request by its weight (in the LP a user of weight w is w
identical users). Items that few requests list cost nothing extra: their requests are few.

Counts are halved every `10 * window` requests (recent frequencies; names clients stop sending fade out), and at
most `max_items` names are counted (the rarest go first): item names come from clients.
"""

from __future__ import annotations

import random

__all__ = ["ItemStratifiedSampler"]


class ItemStratifiedSampler:
    """`offer(items)` -> the weight of the kept request, or None when it is not sampled. Not thread-safe (the
    allocator calls it under its lock)."""

    def __init__(self, sample_rate: float, window: int, min_item_samples: int, rng: random.Random | None = None,
                 max_items: int = 100_000):
        self.sample_rate = sample_rate
        self.window = max(int(window), 1)
        self.min_item_samples = min_item_samples
        self.rng = rng or random.Random()
        self.max_items = max_items
        self.seen = 0.0  # requests counted (halved with the counts)
        self.counts: dict[str, float] = {}  # item -> requests listing it
        self._halve_every = 10 * self.window
        self._since_halving = 0

    def offer(self, items) -> float | None:
        """Count the request's items; keep it with its stratified probability."""
        self.seen += 1.0
        counts = self.counts
        rarest = self.seen
        for item in items:
            n = counts.get(item, 0.0) + 1.0
            counts[item] = n
            if n < rarest:
                rarest = n
        self._since_halving += 1
        if self._since_halving >= self._halve_every or len(counts) > self.max_items:
            self._halve()
        # min_item_samples / (window * f_j) with f_j = n_j / seen, for the rarest item listed
        boost = max(1.0, self.min_item_samples * self.seen / (self.window * rarest)) if self.min_item_samples else 1.0
        keep = min(1.0, self.sample_rate * boost)
        if self.rng.random() >= keep:
            return None
        return self.sample_rate / keep

    def _halve(self) -> None:
        self._since_halving = 0
        self.seen /= 2.0
        kept = {k: v / 2.0 for k, v in self.counts.items() if v >= 2.0}
        if len(kept) > self.max_items:  # still too many names: keep the most listed
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1], reverse=True)[: self.max_items // 2])
        self.counts = kept
