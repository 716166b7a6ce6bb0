"""The router's failover knobs, in one frozen policy: every timing is a named field with its default here."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FailoverPolicy"]


@dataclass(frozen=True)
class FailoverPolicy:
    monitor_interval_s: float = 0.05  # how often connections are checked (pings, stalls, deadlines, probes)
    ping_interval_s: float = 0.2  # data-plane ping period per open connection
    ping_timeout_s: float = 0.5  # an unanswered ping this old ejects the replica (reason ping_timeout)
    stall_min_s: float = 0.2  # an unanswered request older than max(this, stall_factor x peer median) ejects
    stall_factor: float = 20.0  # ... so a replica far slower than its peers is taken out (reason stalled)
    consecutive_errors: int = 5  # 5xx answers in a row, while its peers have none, that eject a replica
    base_ejection_s: float = 1.0  # first ejection; doubles for each ejection in a row
    max_ejection_s: float = 30.0  # longest ejection
    good_behaviour_s: float = 10.0  # back this long without an ejection: the next one starts short again
    max_ejected_share: float = 0.5  # never eject more than this share of a deployment's replicas (lost
    #                                 connections are exempt: a dead replica is out whatever the share)
    probe_timeout_s: float = 0.5  # re-admission: a fresh connection must answer a ping within this
    connect_timeout_s: float = 1.0  # opening a channel connection (TCP and handshake)
    busy_backoff_s: float = 0.002  # every replica answered BUSY: wait this long before trying them again
    requeue_check_s: float = 0.05  # a queued request looks again this often while a replica is ejected
    retry_ratio: float = 0.2  # retry budget: retries per request over the window
    retry_min_per_s: float = 10.0  # retry budget floor
    retry_window_s: float = 10.0  # retry budget window
