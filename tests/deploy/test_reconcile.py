"""The controller's reconciliation rules on plain values: no Ray, no clock but the `now` passed in."""

from __future__ import annotations

from deploy.policy import ControllerPolicy
from deploy.reconcile import (
    DRAINING,
    RUNNING,
    STARTING,
    DesiredVersion,
    ObservedVersion,
    ReplaceReplica,
    ReplicaView,
    RetireReplica,
    RollVersion,
    StartReplicas,
    plan,
)

KEY = ("app", "dep", "v1")
POLICY = ControllerPolicy(unhealthy_after=2)


def replica(rid: str, state: str = RUNNING, fingerprint: str = "f1", started_at: float = 0.0, **kw) -> ReplicaView:
    return ReplicaView(rid, state, fingerprint, started_at, **kw)


def test_starts_the_missing_replicas():
    """Two wanted, one running: start one."""
    actions = plan({KEY: DesiredVersion(2, "f1")}, {KEY: ObservedVersion((replica("a"),))}, 10.0, POLICY)
    assert actions == [StartReplicas(KEY, 1)]


def test_a_version_never_seen_starts_in_full():
    assert plan({KEY: DesiredVersion(3, "f1")}, {}, 0.0, POLICY) == [StartReplicas(KEY, 3)]


def test_no_start_before_the_back_off_has_passed_then_start():
    """After failed starts the version waits until next_start_at, then starts again."""
    observed = {KEY: ObservedVersion((), next_start_at=5.0)}
    assert plan({KEY: DesiredVersion(1, "f1")}, observed, 4.99, POLICY) == []
    assert plan({KEY: DesiredVersion(1, "f1")}, observed, 5.0, POLICY) == [StartReplicas(KEY, 1)]


def test_surplus_retires_starting_replicas_before_running_ones():
    """Four live, target one: both STARTING replicas go first, then the younger RUNNING one."""
    seen = (replica("old", started_at=1.0), replica("young", started_at=3.0),
            replica("s1", STARTING, started_at=4.0), replica("s2", STARTING, started_at=2.0))
    actions = plan({KEY: DesiredVersion(1, "f1")}, {KEY: ObservedVersion(seen)}, 10.0, POLICY)
    assert [a.replica_id for a in actions] == ["s1", "s2", "young"]
    assert all(isinstance(a, RetireReplica) and a.reason == "surplus" for a in actions)


def test_draining_replicas_do_not_count_toward_the_target():
    seen = (replica("a"), replica("d", DRAINING))
    assert plan({KEY: DesiredVersion(2, "f1")}, {KEY: ObservedVersion(seen)}, 0.0, POLICY) == [StartReplicas(KEY, 1)]


def test_an_older_fingerprint_rolls_the_version_instead_of_starting_or_retiring():
    seen = (replica("a", fingerprint="f0"), replica("b"))
    assert plan({KEY: DesiredVersion(5, "f1")}, {KEY: ObservedVersion(seen)}, 0.0, POLICY) == [RollVersion(KEY)]


def test_a_version_being_rolled_is_left_alone_but_its_dead_replicas_are_still_replaced():
    seen = (replica("a", fingerprint="f0"), replica("b", dead=True))
    actions = plan({KEY: DesiredVersion(5, "f1")}, {KEY: ObservedVersion(seen, rolling=True)}, 0.0, POLICY)
    assert actions == [ReplaceReplica(KEY, "b", "dead")]


def test_the_roll_waits_for_the_start_back_off():
    seen = (replica("a", fingerprint="f0"),)
    assert plan({KEY: DesiredVersion(1, "f1")}, {KEY: ObservedVersion(seen, next_start_at=9.0)}, 8.0, POLICY) == []


def test_unhealthy_after_the_policy_count_of_failed_probes_and_dead_at_once():
    """One failed probe is tolerated; two (unhealthy_after) replace; a dead actor is replaced at once.
    The replaced ones no longer count, so replacements start in the same plan."""
    seen = (replica("ok", failed_probes=1), replica("bad", failed_probes=2), replica("gone", dead=True))
    actions = plan({KEY: DesiredVersion(3, "f1")}, {KEY: ObservedVersion(seen)}, 0.0, POLICY)
    assert actions == [ReplaceReplica(KEY, "bad", "unhealthy"), ReplaceReplica(KEY, "gone", "dead"),
                       StartReplicas(KEY, 2)]


def test_a_version_no_longer_desired_retires_every_live_replica():
    other = ("app", "dep", "v0")
    seen = {other: ObservedVersion((replica("x"), replica("y", STARTING), replica("z", DRAINING)))}
    actions = plan({}, seen, 0.0, POLICY)
    assert actions == [RetireReplica(other, "x", "removed"), RetireReplica(other, "y", "removed")]


def test_at_target_nothing_happens():
    seen = (replica("a"), replica("b", STARTING))
    assert plan({KEY: DesiredVersion(2, "f1")}, {KEY: ObservedVersion(seen)}, 0.0, POLICY) == []
