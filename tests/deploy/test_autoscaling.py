"""Autoscaling on the controller's side, on stubs (no Ray, no Redis): the spec's `autoscaling:` block, the
fingerprint it leaves alone, and the contract methods of autoscale/actor.py."""

from __future__ import annotations

import asyncio

import pytest

from autoscale.actor import versions_from_rows
from deploy.changes import carry_overrides
from deploy.controller import Controller
from deploy.gateways import gateway_config
from deploy.names import CONTROLLER_NAME, scaler_name
from deploy.policy import ControllerConfig, ControllerPolicy
from deploy.reconcile import (
    DRAINING,
    RUNNING,
    STARTING,
    DesiredVersion,
    ObservedVersion,
    ReplicaView,
    RetireReplica,
    plan,
)
from deploy.records import ReplicaRecord, VersionState
from deploy.replica_ops import ApplyError
from deploy.spec import GatewaySpec, SpecError, parse_spec, resolve_versions

AUTO = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}


def _spec(dep_extra=None, v1_extra=None, v2_extra=None):
    dep = {"name": "lin", "import_path": "m:f", "max_replicas": 8, "resources": {"num_cpus": 0.5},
           "versions": [{"name": "v1", **(v1_extra or {})}, {"name": "v2", **(v2_extra or {})}]}
    dep.update(dep_extra or {})
    return parse_spec({"apps": [{"name": "q", "route_prefix": "/q", "ingress": "lin", "deployments": [dep]}]})


# -- the spec ----------------------------------------------------------------------------------------------


def test_a_versions_block_overrides_the_deployments_and_sets_the_start_count():
    resolved = resolve_versions(_spec({"autoscaling": AUTO}, v2_extra={"autoscaling": {
        "min_replicas": 2, "max_replicas": 3}}))
    v1, v2 = resolved[("q", "lin", "v1")], resolved[("q", "lin", "v2")]
    assert (v1.autoscaling.min_replicas, v1.autoscaling.max_replicas, v1.autoscaling.target_ongoing_requests) == (
        1, 4, 2)
    assert (v2.autoscaling.min_replicas, v2.autoscaling.max_replicas) == (2, 3)
    assert (v1.num_replicas, v2.num_replicas) == (1, 2)  # start at min_replicas (no initial_replicas)
    fixed = resolve_versions(_spec({"num_replicas": 3}))[("q", "lin", "v1")]
    assert fixed.autoscaling is None and fixed.num_replicas == 3


def test_bad_autoscaling_blocks_are_refused_naming_the_field():
    with pytest.raises(SpecError, match=r"autoscaling: .*max_replicas \(2\) must be >= min_replicas \(3\)"):
        _spec({"autoscaling": {"min_replicas": 3, "max_replicas": 2}})
    with pytest.raises(SpecError, match=r"autoscaling.max_replicas of version\(s\) v2 above max_replicas \(8\)"):
        _spec(v2_extra={"autoscaling": {"max_replicas": 9}})
    with pytest.raises(SpecError, match=r"autoscaling.target_ongoing_request"):
        _spec({"autoscaling": {"target_ongoing_request": 2}})  # a typo is refused, not ignored


def test_autoscaling_knobs_do_not_change_the_fingerprint_or_drop_the_scalers_count():
    old = resolve_versions(_spec({"autoscaling": AUTO}))
    new = resolve_versions(_spec({"autoscaling": AUTO | {"target_ongoing_requests": 5, "downscale_delay_s": 10}}))
    fixed = resolve_versions(_spec())
    key = ("q", "lin", "v1")
    assert old[key].fingerprint == new[key].fingerprint == fixed[key].fingerprint
    assert old[key].autoscaling != new[key].autoscaling
    _, scales = carry_overrides(old, new, {}, {key: 3})
    assert scales == {key: 3}  # the count the scaler set survives a knob change


def test_the_scaler_is_named_after_its_controller_and_gateways_report_to_it():
    assert scaler_name(CONTROLLER_NAME) == "raygate-scaler"
    assert scaler_name("ctl-b") == "ctl-b-scaler"
    config = gateway_config(GatewaySpec(), admin_token="t", controller_name="ctl-b", namespace="n",
                            redis_url="redis://:pw@127.0.0.1:6390/0")
    assert (config.scaler_name, config.redis_url) == ("ctl-b-scaler", "redis://:pw@127.0.0.1:6390/0")
    assert gateway_config(GatewaySpec(), admin_token="t", controller_name="c", namespace="n").redis_url == ""


# -- the controller ----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _controller(spec) -> Controller:
    ctl = Controller(ControllerConfig(policy=ControllerPolicy(ack_timeout_s=1.0)), clock=FakeClock())
    started = asyncio.get_running_loop().create_future()
    started.set_result(None)
    ctl._started = started  # no gateways, no Redis, no scaler
    ctl.spec = spec
    for key, resolved in resolve_versions(spec).items():
        state = VersionState(resolved)
        record = ReplicaRecord(f"{key[2]}#1", key, object(), 0.0, resolved.fingerprint, state=RUNNING)
        state.replicas[record.replica_id] = record
        ctl.versions[key] = state
    ctl.publish()
    return ctl


async def test_autoscaled_versions_rows_follow_the_contract_and_hand_startup_samples_over_once():
    ctl = await _controller(_spec(v1_extra={"autoscaling": AUTO}))
    state = ctl.versions[("q", "lin", "v1")]
    record = ReplicaRecord("v1#2", state.resolved.key, object(), ctl.clock(), state.resolved.fingerprint)
    state.replicas[record.replica_id] = record
    ctl.launching[record.replica_id] = record

    async def ready(_record):
        ctl.clock.now += 7.5

    ctl.ops.wait_ready = ready
    await ctl._await_ready(state, record, publish=True)
    rows = {r["version"]: r for r in ctl.autoscaled_versions()}
    assert rows["v1"] == {"app": "q", "deployment": "lin", "version": "v1", "autoscaling": rows["v1"]["autoscaling"],
                          "replicas": 1, "ready": 2, "starting": 0, "startup_samples_s": [7.5],
                          "resources": {"num_cpus": 0.5, "num_gpus": 0.0}}
    assert rows["v1"]["autoscaling"]["target_ongoing_requests"] == 2
    assert rows["v2"]["autoscaling"] is None and rows["v2"]["replicas"] == 1
    assert ctl.autoscaled_versions()[0]["startup_samples_s"] == []  # handed over once
    scaled = versions_from_rows(rows.values())  # what the scaler makes of them
    assert list(scaled) == [("q", "lin", "v1")] and scaled[("q", "lin", "v1")].replicas.ready == 2


async def test_set_autoscale_target_clamps_is_idempotent_and_leaves_fixed_versions_alone():
    ctl = await _controller(_spec(v1_extra={"autoscaling": AUTO}))
    key = ("q", "lin", "v1")
    await ctl.set_autoscale_target("q", "lin", "v1", 3, "scale_up")
    assert ctl.target(key) == 3 and ctl.autoscale_decisions[key].reason == "scale_up"
    await ctl.set_autoscale_target("q", "lin", "v1", 3, "hold")
    assert ctl.target(key) == 3 and ctl.autoscale_decisions[key].reason == "hold"
    await ctl.set_autoscale_target("q", "lin", "v1", 50, "panic_scale_up")
    assert ctl.target(key) == 4 and ctl.autoscale_decisions[key].asked == 50  # clamped to max_replicas
    await ctl.set_autoscale_target("q", "lin", "v1", 0, "scale_down")
    assert ctl.target(key) == 1  # clamped to min_replicas
    await ctl.set_autoscale_target("q", "lin", "v2", 5, "scale_up")  # not autoscaled
    await ctl.set_autoscale_target("q", "lin", "gone", 5, "scale_up")  # removed since the scaler's read
    assert ctl.target(("q", "lin", "v2")) == 1 and set(ctl.scales) == {key}


async def test_status_shows_counts_the_applied_target_and_the_decision_only_when_the_scaler_answers():
    ctl = await _controller(_spec(v1_extra={"autoscaling": AUTO}))
    await ctl.set_autoscale_target("q", "lin", "v1", 2, "scale_up")

    def versions(status):
        return {v["name"]: v for v in status["apps"][0]["deployments"][0]["versions"]}

    out = versions(await ctl.status())  # no scaler: no decision
    assert (out["v1"]["current"], out["v1"]["target"], out["v1"]["ready"]) == (1, 2, 1)
    assert out["v1"]["autoscaling"]["applied"]["reason"] == "scale_up" and "decision" not in out["v1"]["autoscaling"]
    assert out["v2"]["autoscaling"] is None

    class Scaler:
        class last_decisions:
            @staticmethod
            async def remote():
                return [{"app": "q", "deployment": "lin", "version": "v1", "target": 2, "reason": "scale_up"}]

    ctl.scaler = Scaler()
    out = versions(await ctl.status())
    assert out["v1"]["autoscaling"]["decision"]["reason"] == "scale_up"


async def test_metrics_snapshot_counts_decisions_by_direction_and_renders_as_prometheus():
    """Contract 2: the snapshot lists autoscaled versions only, with the applied (desired) count, current and
    ready replicas and the target changes up and down (a repeated target counts nothing); the gateway's collector
    renders it as the three platform metrics, price ages from the scenarios' status."""
    from prometheus_client import CollectorRegistry, generate_latest

    from deploy.scaling import metrics_snapshot
    from gateway.platform_metrics import PlatformCollector

    ctl = await _controller(_spec(v1_extra={"autoscaling": AUTO}))
    for target in (3, 3, 4, 2):
        await ctl.set_autoscale_target("q", "lin", "v1", target, "test")
    snapshot = await ctl.metrics_snapshot()
    assert snapshot == {"autoscale": [{"app": "q", "deployment": "lin", "version": "v1", "desired": 2,
                                       "current": 1, "ready": 1, "decisions": {"up": 2, "down": 1}}],
                        "allocation": []}
    scenarios = [{"scenario": "ads", "prices_version": 7, "prices_age_s": 1.5, "stale": False},
                 {"scenario": "new", "prices_version": None, "prices_age_s": None, "stale": True},
                 {"scenario": "broken", "error": "no Redis"}]
    allocation = metrics_snapshot(ctl.versions, ctl.autoscale_decisions, scenarios)["allocation"]
    assert allocation[0] == {"scenario": "ads", "app": "alloc-ads", "prices_version": 7, "price_age_s": 1.5,
                             "stale": False} and len(allocation) == 3
    collector = PlatformCollector()
    collector.update(dict(snapshot, allocation=allocation))
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'raygate_autoscale_desired_replicas{app="q",deployment="lin",version="v1"} 2.0' in text
    assert 'raygate_autoscale_decisions_total{app="q",deployment="lin",direction="up",version="v1"} 2.0' in text
    assert 'raygate_autoscale_decisions_total{app="q",deployment="lin",direction="down",version="v1"} 1.0' in text
    assert 'raygate_allocation_price_age_seconds{app="alloc-ads",scenario="ads"} 1.5' in text
    assert 'scenario="new"' not in text  # no prices yet: no age


def test_scale_down_retires_starting_replicas_before_running_ones():
    replicas = (ReplicaView("old", RUNNING, "f", 1.0), ReplicaView("young", RUNNING, "f", 5.0),
                ReplicaView("new", STARTING, "f", 9.0))
    actions = plan({("a", "d", "v"): DesiredVersion(1, "f")}, {("a", "d", "v"): ObservedVersion(replicas)}, 10.0,
                   ControllerPolicy())
    assert actions == [RetireReplica(("a", "d", "v"), "new", "surplus"),
                       RetireReplica(("a", "d", "v"), "young", "surplus")]


async def test_a_starting_replica_retired_is_killed_at_once_and_its_failed_start_is_not_a_failure():
    ctl = await _controller(_spec(v1_extra={"autoscaling": AUTO}))
    state = ctl.versions[("q", "lin", "v1")]
    record = ReplicaRecord("v1#9", state.resolved.key, object(), ctl.clock(), state.resolved.fingerprint)
    killed, drained = [], []
    ctl.ops.kill = killed.append

    async def drain_and_kill(r):
        drained.append(r)

    ctl.ops.drain_and_kill = drain_and_kill
    await ctl.retire([record])
    assert killed == [record] and drained == [] and record.state == DRAINING

    async def died(_record):
        raise ApplyError("actor died")

    ctl.ops.wait_ready = died
    await ctl._await_ready(state, record, publish=True)
    assert state.start_failures == 0 and state.last_error == ""
