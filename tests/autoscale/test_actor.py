"""The controller contract without Ray: rows in, versions and resource demands out, targets sent back."""

import pytest

from autoscale.actor import (
    ControllerLink,
    ScalerActor,
    demands_from_rows,
    versions_from_rows,
)
from autoscale.config import AutoscalingConfigError

ROWS = [
    {"app": "shop", "deployment": "ranker", "version": "v1", "autoscaling": {"min_replicas": 1, "max_replicas": 4},
     "replicas": 2, "ready": 2, "starting": 0, "startup_samples_s": [12.5], "resources": {"num_cpus": 1}},
    {"app": "shop", "deployment": "ranker", "version": "v2", "autoscaling": None, "replicas": 3, "ready": 1,
     "starting": 1, "resources": {"num_cpus": 0.5}},
]


class Remote:
    def __init__(self, fn):
        self.remote = fn


class FakeController:
    def __init__(self, rows):
        self.rows, self.targets = rows, []
        self.autoscaled_versions = Remote(lambda: list(self.rows))
        self.set_autoscale_target = Remote(lambda *args: self.targets.append(args))


def test_rows_become_autoscaled_versions():
    versions = versions_from_rows(ROWS)
    assert list(versions) == [("shop", "ranker", "v1")]
    version = versions[("shop", "ranker", "v1")]
    assert version.config.max_replicas == 4
    assert (version.replicas.ready, version.replicas.startup_samples_s) == (2, (12.5,))


def test_a_bad_autoscaling_block_names_the_version_and_field():
    with pytest.raises(AutoscalingConfigError, match=r"shop/ranker/v1\.autoscaling: max_replicas"):
        versions_from_rows([{**ROWS[0], "autoscaling": {"min_replicas": 3, "max_replicas": 2}}])


def test_demands_cover_targets_fixed_versions_and_existing_replicas():
    demands = demands_from_rows(ROWS, {("shop", "ranker", "v1"): 4})
    assert [(d.resources, d.count) for d in demands] == [({"num_cpus": 1}, 4), ({"num_cpus": 0.5}, 3)]
    shrinking = demands_from_rows(ROWS, {("shop", "ranker", "v1"): 1})
    assert shrinking[0].count == 2  # the two running replicas keep their room until they are gone


def test_the_actor_body_ticks_sends_targets_and_requests_room():
    controller = FakeController(ROWS)
    requests = []
    actor = ScalerActor(controller, request_resources=lambda bundles: requests.append(bundles),
                        resolve=lambda ref, timeout: ref, start=False)
    try:
        actor.tick(now=1000.0)
        assert controller.targets == [("shop", "ranker", "v1", 2, "no_data")]
        assert sorted(map(str, requests[-1])) == sorted(map(str, [{"CPU": 1.0}] * 2 + [{"CPU": 0.5}] * 3))
        assert actor.report([]) == 0
        assert actor.last_decisions()[0]["reason"] == "no_data"
    finally:
        actor.stop()


def test_the_link_reports_nothing_itself():
    assert ControllerLink(FakeController(ROWS), resolve=lambda ref, timeout: ref).poll_reports() == []
