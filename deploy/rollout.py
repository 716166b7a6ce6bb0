"""Applying a spec and rolling a version, as sequences of controller actions.

An apply starts every new version in full and one replica (a canary) of every version whose code or
config changed, and waits until all of them are ready. Any start failure stops what was started and leaves
the running apps as they were (ApplyError). Otherwise the switch happens under the controller's change lock:
the new spec, the overrides that survive it (deploy/changes.py), one new table; versions no longer in the
spec leave the table and are drained once every router acknowledged it. Changed versions then roll one
replica at a time: start one with the new code, wait until it is ready and routed, take one old replica out
of the table, wait for the routers' acknowledgements, drain it, stop it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from deploy.changes import carry_overrides
from deploy.records import ReplicaRecord, VersionState
from deploy.replica_ops import ApplyError
from deploy.spec import ResolvedVersion, Spec, resolve_versions

if TYPE_CHECKING:
    from deploy.controller import Controller

__all__ = ["apply_spec", "roll_version"]

log = structlog.get_logger("raygate.controller")

VersionKey = tuple[str, str, str]


async def apply_spec(ctl: Controller, spec: Spec, generation: int) -> None:
    """Apply `spec` (one apply at a time) and record the outcome in `ctl.apply_status`."""
    async with ctl.apply_lock:
        try:
            await _apply(ctl, spec)
        except Exception as exc:
            if generation == ctl.generation:
                ctl.apply_status.update(state="failed", error=str(exc), finished_at=time.time())
            log.warning("apply_failed", generation=generation, error=str(exc))
            return
        if generation == ctl.generation:
            ctl.apply_status.update(state="applied", finished_at=time.time())
        log.info("apply_done", generation=generation)


def _stage(ctl: Controller, desired: dict[VersionKey, ResolvedVersion]) -> tuple[dict, dict]:
    """Start new versions in full and a canary of each changed version; nothing is routed yet."""
    staged: dict[VersionKey, VersionState] = {}
    canaries: dict[VersionKey, VersionState] = {}
    for key, resolved in desired.items():
        current = ctl.versions.get(key)
        if current is None:
            staged[key] = VersionState(resolved)
            for _ in range(resolved.num_replicas):
                ctl.start_replica(staged[key], publish=False)
        elif current.resolved.fingerprint != resolved.fingerprint and ctl.scales.get(key, resolved.num_replicas):
            canaries[key] = VersionState(resolved)
            ctl.start_replica(canaries[key], publish=False)
    return staged, canaries


async def _wait_started(ctl: Controller, started: list[VersionState]) -> None:
    records: list[ReplicaRecord] = [r for s in started for r in list(s.replicas.values())]
    results = await asyncio.gather(*(r.ready for r in records), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for record in records:
            ctl.ops.kill(record)
            ctl.launching.pop(record.replica_id, None)
        ctl.persistence.mark_dirty()
        raise ApplyError(f"spec not applied, running apps left unchanged: {errors[0]}")


def _switch(ctl: Controller, spec: Spec, desired: dict, staged: dict, canaries: dict) -> list[ReplicaRecord]:
    """Make `spec` the applied one; return the replicas of versions it no longer has."""
    old = ctl.versions
    ctl.weights, ctl.scales = carry_overrides({k: s.resolved for k, s in old.items()}, desired,
                                              ctl.weights, ctl.scales)
    new: dict[VersionKey, VersionState] = {}
    for key, resolved in desired.items():
        if key in staged:
            new[key] = staged[key]
            continue
        state = old[key]
        state.resolved = resolved
        if key in canaries:
            state.replicas.update(canaries[key].replicas)
        new[key] = state
    for state in (*staged.values(), *canaries.values()):
        for replica_id in state.replicas:
            ctl.launching.pop(replica_id, None)
    ctl.versions, ctl.spec = new, spec
    return [r for k, s in old.items() if k not in new for r in s.replicas.values()]


async def _apply(ctl: Controller, spec: Spec) -> None:
    await ctl.persistence.accept_empty()  # a deploy is the instruction to move a rejected saved state aside
    desired = resolve_versions(spec)
    staged, canaries = _stage(ctl, desired)
    await _wait_started(ctl, [*staged.values(), *canaries.values()])
    async with ctl.change_lock:
        retired = _switch(ctl, spec, desired, staged, canaries)
        ctl.publish()
        await ctl.persistence.save()
    ctl.spawn(ctl.retire(retired))
    ctl.spawn(ctl.features.ensure(spec))  # a planner per scenario (decisions never wait for it)
    # "applied" means every router runs the new table: a client's next request sees the new routes.
    await ctl.wait_for_acks(ctl.table.version, ctl.policy.ack_timeout_s)
    rolls = [roll_version(ctl, ctl.versions[key]) for key in canaries]
    if rolls:
        await asyncio.gather(*rolls)


async def roll_version(ctl: Controller, state: VersionState) -> None:
    """Replace replicas running an older fingerprint one at a time: start one (if that keeps the count
    within target + 1), wait until it is ready and routed, then retire one old replica. A roll already under way
    (the control loop's) is waited for, then the check is made again: an apply that returns has rolled."""
    while state.rolling:
        await asyncio.sleep(ctl.policy.loop_min_sleep_s)
    state.rolling = True
    key = state.resolved.key
    try:
        while True:
            live = state.live()
            old = [r for r in live if r.fingerprint != state.resolved.fingerprint]
            if not old:
                return
            if len(live) <= ctl.target(key):
                record = ctl.start_replica(state)
                try:
                    await record.ready
                except ApplyError as exc:
                    log.warning("rolling_update_paused", version="/".join(key), error=str(exc))
                    return  # the control loop resumes it after the start back-off
            victim = old[0]
            state.replicas.pop(victim.replica_id, None)
            ctl.publish()
            await ctl.retire([victim])
            log.info("rolling_update_step", version="/".join(key), replaced=victim.replica_id)
    finally:
        state.rolling = False
