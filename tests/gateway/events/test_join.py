"""Join windows on a fake clock: matching by key, expiry policies, replays, bounds."""

from __future__ import annotations

import pytest

from gateway.events.join import JoinSettings, JoinWindow
from gateway.events.stages import Join


def ev(source, i, key, ts, **extra):
    return {"id": f"{source}:{i}-0", "source": source, "ts": ts, "data": {"user": key, **extra}}


def window(unmatched="drop", sources=("web", "app"), **kw):
    return JoinWindow(JoinSettings(sources=tuple(sources), key="user", window_s=30, unmatched=unmatched, **kw))


def test_pair_within_window_is_emitted_once_and_released():
    """Two sources with the same key within window_s become one output whose id names both members."""
    w = window()
    step = w.step([ev("web", 1, "u1", 100.0, a=1)], now=100.0)
    assert step.events == [] and step.held == ["web:1-0"]
    step = w.step([ev("app", 2, "u1", 110.0, b=2)], now=110.0)
    assert step.events == [{"id": "web:1-0+app:2-0", "source": "join", "ts": 110.0,
                            "data": {"user": "u1", "web": {"user": "u1", "a": 1}, "app": {"user": "u1", "b": 2}}}]
    assert sorted(step.released) == ["app:2-0", "web:1-0"] and step.held == []
    assert w.open_groups == 0


def test_events_too_far_apart_do_not_join():
    w = window(unmatched="emit")
    w.step([ev("web", 1, "u1", 100.0)], now=100.0)
    step = w.step([ev("app", 2, "u1", 131.0)], now=131.0)
    # the web event's group expired at now=131 (> 30 s) and was emitted alone; the app event waits
    assert [e["id"] for e in step.events] == ["web:1-0"]
    assert step.held == ["app:2-0"]


@pytest.mark.parametrize("policy, emitted, dead", [
    ("emit_left", ["web:1-0"], []),
    ("emit", ["web:1-0", "app:2-0"], []),
    ("drop", [], []),
    ("dead_letter", [], ["web:1-0", "app:2-0"]),
])
def test_unmatched_policy_on_expiry(policy, emitted, dead):
    """On expiry a partial group is emitted (emit_left only when the left source is in it), dropped or
    dead-lettered; every member is released either way."""
    w = window(unmatched=policy)
    w.step([ev("web", 1, "u1", 100.0), ev("app", 2, "u2", 100.0)], now=100.0)
    assert w.step([], now=129.0).released == []  # not yet
    step = w.step([], now=130.5)
    assert [e["id"] for e in step.events] == emitted
    assert [d["id"] for d in step.dead] == dead
    assert sorted(step.released) == ["app:2-0", "web:1-0"]
    if dead:
        assert step.dead[0]["reason"] == "join window expired unmatched"


def test_three_sources_need_all_three():
    w = window(sources=("web", "app", "pos"))
    w.step([ev("web", 1, "k", 1.0), ev("app", 2, "k", 2.0)], now=2.0)
    assert w.open_groups == 1
    step = w.step([ev("pos", 3, "k", 3.0)], now=3.0)
    assert [e["id"] for e in step.events] == ["web:1-0+app:2-0+pos:3-0"]


def test_missing_or_unhashable_key_goes_to_dead_letters():
    w = window()
    bad = {"id": "web:9-0", "source": "web", "ts": 1.0, "data": {"other": 1}}
    listy = {"id": "web:8-0", "source": "web", "ts": 1.0, "data": {"user": [1]}}
    step = w.step([bad, listy], now=1.0)
    assert [(d["id"], d["reason"]) for d in step.dead] == [
        ("web:9-0", "missing join key 'user'"), ("web:8-0", "join key 'user' must be a string or number")]


def test_replayed_held_event_is_held_again_not_duplicated():
    """A replay of an event already in an open group changes nothing and stays held (not acknowledged)."""
    w = window()
    w.step([ev("web", 1, "u1", 1.0)], now=1.0)
    step = w.step([ev("web", 1, "u1", 1.0)], now=2.0)
    assert step.held == ["web:1-0"] and w.open_groups == 1


def test_replay_after_resolution_re_emits_the_same_output():
    """Replays of already joined events (the consumer died before acknowledging) give the identical output id
    again, so a sink that missed it gets it and a sink that had it deduplicates it."""
    w = window()
    first = w.step([ev("web", 1, "u1", 1.0), ev("app", 2, "u1", 2.0)], now=2.0).events
    again = w.step([ev("web", 1, "u1", 1.0), ev("app", 2, "u1", 2.0)], now=50.0)
    assert again.events == first and sorted(again.released) == ["app:2-0", "web:1-0"]
    assert w.open_groups == 0


def test_resolved_ids_are_forgotten_after_remember_s():
    w = window(remember_s=60)
    w.step([ev("web", 1, "u1", 1.0), ev("app", 2, "u1", 2.0)], now=2.0)
    w.step([], now=63.0)
    step = w.step([ev("web", 1, "u1", 1.0)], now=63.0)
    assert step.released == [] and step.held == ["web:1-0"]  # seen as new: a fresh window for its partner
    assert w.step([], now=93.5).released == ["web:1-0"]


def test_replayed_old_events_get_a_fresh_window_to_pair():
    """After a crash, a replica that lost its window sees old events; the partner replayed a moment later
    still pairs with the same output id instead of the first expiring on arrival."""
    w = window()
    assert w.step([ev("web", 1, "u1", 1.0)], now=500.0).events == []
    step = w.step([ev("app", 2, "u1", 1.5)], now=501.0)
    assert [e["id"] for e in step.events] == ["web:1-0+app:2-0"]


def test_max_pending_bounds_memory():
    """Beyond max_pending open groups the oldest is resolved early with its policy."""
    w = window(unmatched="emit", max_pending=3)
    step = w.step([ev("web", i, f"u{i}", float(i)) for i in range(5)], now=5.0)
    assert w.open_groups == 3
    assert [e["id"] for e in step.events] == ["web:0-0", "web:1-0"]


def test_second_event_of_same_source_opens_its_own_group():
    w = window()
    w.step([ev("web", 1, "u", 1.0), ev("web", 2, "u", 2.0)], now=2.0)
    step = w.step([ev("app", 3, "u", 3.0), ev("app", 4, "u", 4.0)], now=4.0)
    assert [e["id"] for e in step.events] == ["web:1-0+app:3-0", "web:2-0+app:4-0"]


def test_join_stage_passes_other_sources_and_uses_its_clock():
    """The deployment class: other sources pass through; expiry follows the injected clock."""
    now = [100.0]
    stage = Join(["web", "app"], "user", 10, "emit_left", name="pair", clock=lambda: now[0])
    out = stage({"events": [ev("web", 1, "u", 100.0), ev("pos", 2, "u", 100.0)]})
    assert [e["id"] for e in out["events"]] == ["pos:2-0"] and out["held"] == ["web:1-0"]
    now[0] = 111.0
    out = stage({"events": []})
    assert [(e["id"], e["source"]) for e in out["events"]] == [("web:1-0", "pair")]
    assert out["released"] == ["web:1-0"]
