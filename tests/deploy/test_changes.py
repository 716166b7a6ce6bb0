"""Admin documents validated with the spec's own types, and the override rule across deploys."""

from __future__ import annotations

import pytest

from deploy.changes import (
    carry_overrides,
    merged_weights,
    parse_apply_document,
    parse_scale,
    parse_weights,
)
from deploy.spec import SpecError, parse_spec, resolve_versions

VERSIONS = {"v1": 90.0, "v2": 10.0}


@pytest.mark.parametrize("bad", ["nan", "inf", None, [1], True, "2", float("nan"), float("inf"), -1, 1e7])
def test_weights_must_be_finite_bounded_numbers(bad):
    """NaN, infinities, null, lists, booleans, strings, negatives and huge values: refused naming the field."""
    with pytest.raises(ValueError, match=r"weights\.v2"):
        parse_weights({"v2": bad}, VERSIONS, "linear")


def test_weights_accept_ints_and_floats_and_name_unknown_versions():
    assert parse_weights({"v1": 50, "v2": 50.5}, VERSIONS, "linear") == {"v1": 50.0, "v2": 50.5}
    with pytest.raises(KeyError, match="no version.*v3"):
        parse_weights({"v3": 1}, VERSIONS, "linear")
    for bad in ({}, [], None, "v1=1"):
        with pytest.raises(ValueError, match="weights"):
            parse_weights(bad, VERSIONS, "linear")


def test_merged_weights_refuse_all_zero():
    assert merged_weights(VERSIONS, {"v2": 0}) == {"v1": 90.0, "v2": 0.0}
    with pytest.raises(ValueError, match="positive"):
        merged_weights(VERSIONS, {"v1": 0, "v2": 0})


@pytest.mark.parametrize("bad", [10**9, 2.5, True, "2", None, -1, 65])
def test_scale_is_an_int_within_the_cap(bad):
    with pytest.raises(ValueError, match="num_replicas"):
        parse_scale(bad, cap=64)


def test_scale_accepts_zero_to_the_cap():
    assert parse_scale(0, 64) == 0 and parse_scale(64, 64) == 64


APP = {"name": "a", "route_prefix": "/a", "ingress": "d", "deployments": [{"name": "d", "import_path": "m:f"}]}


@pytest.mark.parametrize("doc", [None, "", {}, {"apps": []}, {"gateway": {"port": 8000}}])
def test_an_empty_deploy_is_refused_unless_removing_everything_is_explicit(doc):
    with pytest.raises(ValueError, match="remove_all"):
        parse_apply_document(doc)


def test_remove_all_must_be_a_boolean_and_go_with_no_apps():
    assert parse_apply_document({"apps": [], "remove_all": True}).apps == ()
    with pytest.raises(ValueError, match="remove_all"):
        parse_apply_document({"apps": [], "remove_all": "yes"})
    with pytest.raises(ValueError, match="remove_all"):
        parse_apply_document({"apps": [APP], "remove_all": True})
    with pytest.raises(SpecError, match="mapping"):
        parse_apply_document([APP])
    assert parse_apply_document({"apps": [APP]}).apps[0].name == "a"


def _spec(v1_weight=90, v2_weight=10, v2_replicas=1, v1_kwargs=None):
    return resolve_versions(parse_spec({"apps": [{**APP, "deployments": [{
        "name": "d", "import_path": "m:f", "versions": [
            {"name": "v1", "weight": v1_weight, "init_kwargs": v1_kwargs or {}},
            {"name": "v2", "weight": v2_weight, "num_replicas": v2_replicas}]}]}]}))


def test_overrides_survive_a_deploy_that_leaves_their_field_alone():
    """A code change to v1 keeps both the split and the scale override."""
    weights, scales = carry_overrides(_spec(), _spec(v1_kwargs={"x": 1}), {("a", "d"): {"v1": 50, "v2": 50}},
                                      {("a", "d", "v2"): 4})
    assert weights == {("a", "d"): {"v1": 50, "v2": 50}} and scales == {("a", "d", "v2"): 4}


def test_a_deploy_that_changes_the_field_wins():
    """The spec changes v2's weight and replica count: those overrides go, v1's weight override stays."""
    weights, scales = carry_overrides(_spec(), _spec(v2_weight=20, v2_replicas=2),
                                      {("a", "d"): {"v1": 50, "v2": 50}}, {("a", "d", "v2"): 4})
    assert weights == {("a", "d"): {"v1": 50}} and scales == {}


def test_surviving_weights_that_leave_no_positive_version_are_dropped():
    weights, _ = carry_overrides(_spec(), _spec(v2_weight=0), {("a", "d"): {"v1": 0, "v2": 100}}, {})
    assert weights == {}


def test_overrides_of_removed_versions_go():
    new = {k: v for k, v in _spec().items() if k[2] == "v1"}
    weights, scales = carry_overrides(_spec(), new, {("a", "d"): {"v2": 5}}, {("a", "d", "v2"): 3})
    assert weights == {} and scales == {}
