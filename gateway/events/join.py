"""The join window as a pure core: events in, (outputs, dead letters, held and released ids) out; the clock passed in.

A group is the first event of each joined source with one key value. An event joins the oldest open group of its
key that lacks its source and whose first event is at most `window_s` older or newer (event time: the stream entry's
timestamp); otherwise it opens a new group. A complete group is emitted at once; a partial group expires at
`max(first_ts, opened_at) + window_s` (opened_at: the clock when the group was opened) and meets the unmatched
policy. `now` is the join's notion of time: the consumer passes a watermark (the event time up to which every
joined source has been read and handed to the join), so a backlog read at any pace joins exactly as live traffic
would; called without one, the stage's clock stands in. For live events first_ts and opened_at agree; for events
replayed after a crash (old timestamps, possibly into a fresh replica that lost its window) the partner gets a full
window to be replayed too, instead of the group expiring the moment it opens.

Ids make replays harmless. An event whose id is already held is reported as held again and otherwise ignored; an
event whose id was resolved in the last `remember_s` is reported as released again and its group's output (if any)
is emitted again, unchanged. The output id is the member ids joined with '+', so the sink's deduplication absorbs
the repeat; and an output whose delivery failed before the consumer acknowledged comes back on the replay.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

__all__ = ["JoinWindow", "JoinStep", "JoinSettings"]


@dataclass(frozen=True)
class JoinSettings:
    sources: tuple[str, ...]  # joined sources; sources[0] is the "left" one for emit_left
    key: str  # data field compared across sources
    window_s: float  # largest distance in event time between members; also the expiry of a partial group
    unmatched: str = "drop"  # emit_left | emit | drop | dead_letter
    max_pending: int = 100_000  # open groups held at most; beyond, the oldest expire early
    stage: str = "join"  # name stamped on dead letters and outputs
    remember_s: float = 300.0  # resolved ids are remembered this long (event time, at least 2 * window_s) so a
    #                            replay re-emits the same output; keep above the consumer's claim_idle_s
    max_remembered: int = 1_000_000  # resolved ids remembered at most (oldest forgotten first)


@dataclass
class JoinStep:
    """What one call produced: emitted events, dead letters, and the ids the caller may / may not acknowledge."""

    events: list[dict] = field(default_factory=list)  # joined outputs
    dead: list[dict] = field(default_factory=list)  # dead letters with a reason
    held: list[str] = field(default_factory=list)  # input ids of this call now held in an open group
    released: list[str] = field(default_factory=list)  # ids resolved by this call (emitted, dropped or dead)


@dataclass
class _Group:
    key: object
    first_ts: float
    deadline: float  # clock time at which the group expires if still partial
    members: dict[str, dict]  # source -> event
    seq: int
    closed: bool = False


_KEY_TYPES = (str, int, float)


class JoinWindow:
    """Open groups of one join stage. Not thread-safe: one caller at a time (a replica's loop or a lock)."""

    def __init__(self, settings: JoinSettings) -> None:
        self.settings = settings
        self._open: dict[object, list[_Group]] = {}  # key -> open groups, oldest first
        self._by_id: dict[str, _Group] = {}  # held event id -> its group
        self._expiry: list[tuple[float, int, _Group]] = []  # heap by deadline (closed groups skipped lazily)
        self._recent: dict[str, tuple[float, dict | None]] = {}  # resolved id -> (event ts, group output or None)
        self._seq = itertools.count()
        self.open_groups = 0  # partial groups held now



    def held_ids(self) -> set[str]:
        return set(self._by_id)

    def step(self, events: list[dict], now: float) -> JoinStep:
        """Add `events` (those of joined sources), then expire what is due at `now`."""
        out = JoinStep()
        for event in events:
            self._add(event, out, now)
        self._expire(now, out)
        self._forget(now)
        held_now = set(self._by_id)
        out.held = [i for i in out.held if i in held_now]
        return out

    def _add(self, event: dict, out: JoinStep, now: float) -> None:
        event_id, source = event["id"], event["source"]
        if event_id in self._by_id:
            out.held.append(event_id)  # a replay of an event we hold: keep holding, nothing new
            return
        if event_id in self._recent:
            out.released.append(event_id)  # a replay of an event already resolved: the same output again
            output = self._recent[event_id][1]
            if output is not None and all(e["id"] != output["id"] for e in out.events):
                out.events.append(output)
            return
        data = event.get("data")
        key = data.get(self.settings.key) if isinstance(data, dict) else None
        if key is None or isinstance(key, bool) or not isinstance(key, _KEY_TYPES):
            reason = (f"missing join key {self.settings.key!r}" if key is None
                      else f"join key {self.settings.key!r} must be a string or number")
            out.dead.append(_dead(event, self.settings.stage, reason))
            return
        ts = float(event.get("ts", 0.0))
        groups = self._open.setdefault(key, [])
        group = next((g for g in groups if source not in g.members and abs(ts - g.first_ts) <= self.settings.window_s),
                     None)
        if group is None:
            group = _Group(key=key, first_ts=ts, deadline=max(ts, now) + self.settings.window_s, members={},
                           seq=next(self._seq))
            groups.append(group)
            self.open_groups += 1
            heapq.heappush(self._expiry, (group.deadline, group.seq, group))
        group.members[source] = event
        self._by_id[event_id] = group
        out.held.append(event_id)
        if len(group.members) == len(self.settings.sources):
            self._close(group, out, emit=True)
        elif self.open_groups > self.settings.max_pending:
            self._expire_oldest(out)

    def _expire(self, now: float, out: JoinStep) -> None:
        while self._expiry and (self._expiry[0][2].closed or now > self._expiry[0][0]):
            _, _, group = heapq.heappop(self._expiry)
            if not group.closed:
                self._resolve_unmatched(group, out)

    def _expire_oldest(self, out: JoinStep) -> None:
        while self._expiry:
            _, _, group = heapq.heappop(self._expiry)
            if not group.closed:
                self._resolve_unmatched(group, out, reason="join window full (max_pending); expired early")
                return

    def _resolve_unmatched(self, group: _Group, out: JoinStep, reason: str = "join window expired unmatched") -> None:
        policy = self.settings.unmatched
        if policy == "emit" or (policy == "emit_left" and self.settings.sources[0] in group.members):
            self._close(group, out, emit=True)
        elif policy == "dead_letter":
            for event in group.members.values():
                out.dead.append(_dead(event, self.settings.stage, reason))
            self._close(group, out, emit=False)
        else:
            self._close(group, out, emit=False)

    def _close(self, group: _Group, out: JoinStep, emit: bool) -> None:
        group.closed = True
        self.open_groups -= 1
        groups = self._open.get(group.key, [])
        if group in groups:
            groups.remove(group)
        if not groups:
            self._open.pop(group.key, None)
        members = [group.members[s] for s in self.settings.sources if s in group.members]
        last_ts = max(float(m.get("ts", 0.0)) for m in members)
        output = None
        if emit:
            data = {self.settings.key: group.key}
            data.update({m["source"]: m.get("data") for m in members})
            output = {"id": "+".join(m["id"] for m in members), "source": self.settings.stage, "ts": last_ts,
                      "data": data}
            out.events.append(output)
        for m in members:
            self._by_id.pop(m["id"], None)
            self._recent[m["id"]] = (last_ts, output)
            out.released.append(m["id"])

    def _forget(self, now: float) -> None:
        horizon = now - max(2 * self.settings.window_s, self.settings.remember_s)
        while self._recent:
            first_id = next(iter(self._recent))
            if self._recent[first_id][0] >= horizon and len(self._recent) <= self.settings.max_remembered:
                break
            del self._recent[first_id]


def _dead(event: dict, stage: str, reason: str) -> dict:
    return {"id": event.get("id"), "source": event.get("source"), "stage": stage, "reason": reason,
            "data": event.get("data")}
