"""The cluster buffer: replicas wanted plus spare bundles, sent to Ray's autoscaler only when they change."""

import pytest

from autoscale.cluster import (
    ClusterResourceRequester,
    ReplicaDemand,
    ResourceBuffer,
    resource_bundles,
)


def test_one_bundle_per_replica_plus_headroom_and_buffer():
    bundles = resource_bundles(
        [ReplicaDemand({"num_cpus": 0.5}, 3), ReplicaDemand({"num_cpus": 1, "num_gpus": 1}, 1),
         ReplicaDemand({"num_cpus": 0}, 4)],
        ResourceBuffer(bundles=({"CPU": 2},), headroom=0.5))
    assert bundles.count({"CPU": 0.5}) == 5  # ceil(3 * 1.5)
    assert bundles.count({"CPU": 1.0, "GPU": 1.0}) == 2
    assert bundles[-1] == {"CPU": 2.0}
    assert len(bundles) == 8  # zero-resource replicas need nothing


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        resource_bundles([ReplicaDemand({"num_cpus": -1}, 1)])
    with pytest.raises(ValueError):
        ResourceBuffer(headroom=float("inf"))


def test_requests_only_on_change_or_refresh():
    sent, now = [], [0.0]
    requester = ClusterResourceRequester(ResourceBuffer(), request=lambda bundles: sent.append(bundles),
                                         clock=lambda: now[0], refresh_s=60)
    assert requester.apply([ReplicaDemand({"num_cpus": 1}, 2)])
    assert not requester.apply([ReplicaDemand({"num_cpus": 1}, 2)])
    assert requester.apply([ReplicaDemand({"num_cpus": 1}, 3)])
    now[0] = 61.0
    assert requester.apply([ReplicaDemand({"num_cpus": 1}, 3)])
    assert [len(b) for b in sent] == [2, 3, 3]


def test_a_failing_request_is_not_fatal():
    def broken(bundles):
        raise RuntimeError("no autoscaler")

    assert not ClusterResourceRequester(request=broken).apply([ReplicaDemand({"num_cpus": 1}, 1)])
