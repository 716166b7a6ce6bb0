"""The ejection rules as pure functions of (state, event, now)."""

from __future__ import annotations

import math

from replicas.routing.ejection import (
    PING_TIMEOUT,
    SEND_PING,
    STALLED,
    after_probe,
    closes_connection,
    connection_verdict,
    decide_ejection,
    ejection_allowed,
    errors_outlier,
    probe_due,
    stall_threshold,
)
from replicas.routing.policy import FailoverPolicy

POLICY = FailoverPolicy()


def test_the_cap_holds_for_every_reason_but_lost_connections():
    assert ejection_allowed("stalled", 0, 2, POLICY) and not ejection_allowed("stalled", 1, 2, POLICY)
    assert not ejection_allowed("ping_timeout", 0, 1, POLICY)  # a lone replica is never ejected by a ping
    assert ejection_allowed("connection_lost", 1, 2, POLICY) and ejection_allowed("unreachable", 2, 3, POLICY)
    assert not ejection_allowed("connection_lost", 0, 1, POLICY)


def test_ejections_double_up_to_the_max_and_reset_after_good_behaviour():
    now, in_a_row, until, durations = 100.0, 0, -math.inf, []
    for _ in range(7):
        ejection = decide_ejection("errors", in_a_row=in_a_row, last_until=until, ejected=0, total=4, now=now,
                                   policy=POLICY)
        durations.append(ejection.duration_s)
        in_a_row, until = ejection.in_a_row, ejection.until
        now = until + 1.0  # back for a second, then ejected again
    assert durations == [1, 2, 4, 8, 16, 30, 30]
    later = decide_ejection("errors", in_a_row=in_a_row, last_until=until, ejected=0, total=4,
                            now=until + POLICY.good_behaviour_s, policy=POLICY)
    assert (later.in_a_row, later.duration_s) == (1, 1.0)
    assert decide_ejection("errors", in_a_row=0, last_until=-math.inf, ejected=2, total=4, now=0,
                           policy=POLICY) is None


def test_errors_outlier_needs_five_in_a_row_and_quiet_peers():
    assert not errors_outlier(4, [0, 0], POLICY)
    assert errors_outlier(5, [0, 0], POLICY)
    assert not errors_outlier(9, [0, 1], POLICY)


def test_stall_threshold_from_peer_median_with_a_floor():
    assert stall_threshold([0.0, 0.0], POLICY) is None  # nothing answered yet
    assert stall_threshold([0.001, 0.002, 0.5], POLICY) == POLICY.stall_min_s
    assert stall_threshold([0.1, 0.1, 0.2], POLICY) == 2.0


def test_connection_verdicts():
    def verdict(**kw):
        args = dict(pending_age=0.0, ping_age=0.0, since_ping=0.0, stall_after=0.25, policy=POLICY)
        return connection_verdict(**{**args, **kw})

    assert verdict() is None
    assert verdict(pending_age=0.3) == STALLED
    assert verdict(ping_age=0.51) == PING_TIMEOUT
    assert verdict(pending_age=0.3, stall_after=None) is None
    assert verdict(since_ping=0.2) == SEND_PING


def test_closing_and_probing():
    assert closes_connection(True)  # idempotent: its calls are retried elsewhere
    assert not closes_connection(None) and not closes_connection(False)  # they may have reached the model
    assert probe_due(probation=True, probing=False, ejected_until=5.0, now=5.0)
    assert not probe_due(probation=True, probing=True, ejected_until=5.0, now=6.0)
    assert not probe_due(probation=True, probing=False, ejected_until=5.0, now=4.9)
    assert after_probe(True, 7.0, POLICY) == (False, 7.0)
    assert after_probe(False, 7.0, POLICY) == (True, 8.0)
