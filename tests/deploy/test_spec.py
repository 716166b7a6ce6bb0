"""Spec validation: an invalid spec is refused with an error naming the file, the field and the reason."""

from __future__ import annotations

import pytest

from deploy.spec import SpecError, load_spec, parse_spec, resolve_versions


def _spec(**deployment):
    dep = {"name": "linear", "import_path": "deploy.examples.models:Linear"} | deployment
    return {"apps": [{"name": "quick", "route_prefix": "/linear", "ingress": "linear", "deployments": [dep]}]}


def test_quickstart_example_is_valid():
    """The shipped quickstart parses and has v1/v2 at 90/10."""
    spec = load_spec("deploy/examples/quickstart.yaml")
    versions = resolve_versions(spec)
    assert {k[2]: v.weight for k, v in versions.items()} == {"v1": 90, "v2": 10}


def test_error_names_file_field_and_reason(tmp_path):
    """A negative replica count is refused with the file path, the dotted field path and the bound."""
    path = tmp_path / "bad.yaml"
    path.write_text("apps:\n  - name: a\n    route_prefix: /a\n    ingress: d\n    deployments:\n"
                    "      - name: d\n        import_path: m:f\n        num_replicas: -2\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message
    assert "apps[0].deployments[0].num_replicas" in message
    assert "greater than or equal to 0" in message


@pytest.mark.parametrize("change, field, reason", [
    ({"import_path": "nocolon"}, "import_path", "must look like"),
    ({"max_ongoing_requests": 0}, "max_ongoing_requests", "greater than or equal to 1"),
    ({"request_timeout_s": 0}, "request_timeout_s", "greater than 0"),
    ({"versions": [{"name": "v1", "weight": 0}]}, "deployments[0]", "positive weight"),
    ({"versions": [{"name": "v1"}, {"name": "v1"}]}, "deployments[0]", "unique"),
    ({"resources": {"num_cpus": -1}}, "resources.num_cpus", "greater than or equal to 0"),
    ({"unknown_field": 1}, "unknown_field", "Extra inputs are not permitted"),
])
def test_field_errors(change, field, reason):
    """Each invalid field is named together with why it is invalid."""
    with pytest.raises(SpecError) as info:
        parse_spec(_spec(**change), "spec.yaml")
    assert field in str(info.value) and reason in str(info.value) and "spec.yaml" in str(info.value)


def test_ingress_must_be_a_deployment():
    doc = _spec()
    doc["apps"][0]["ingress"] = "missing"
    with pytest.raises(SpecError, match="ingress 'missing' is not one of the app's deployments"):
        parse_spec(doc)


def test_route_prefixes_are_unique_and_not_reserved():
    doc = _spec()
    doc["apps"].append(dict(doc["apps"][0], name="other"))
    with pytest.raises(SpecError, match="route prefixes must be unique"):
        parse_spec(doc)
    doc = _spec()
    doc["apps"][0]["route_prefix"] = "/-/admin"
    with pytest.raises(SpecError, match="must not be under /-/"):
        parse_spec(doc)


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec(["apps"], "x.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("apps: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "absent.yaml")


def test_versions_inherit_deployment_settings_and_fingerprint_tracks_code():
    """A version without its own settings takes the deployment's; only code/config changes the fingerprint."""
    spec = parse_spec(_spec(num_replicas=3, init_kwargs={"scale": 2.0},
                            versions=[{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50, "num_replicas": 1,
                                                                     "init_kwargs": {"scale": 3.0}}]))
    versions = resolve_versions(spec)
    v1, v2 = versions[("quick", "linear", "v1")], versions[("quick", "linear", "v2")]
    assert (v1.num_replicas, v1.init_kwargs) == (3, {"scale": 2.0})
    assert (v2.num_replicas, v2.init_kwargs) == (1, {"scale": 3.0})
    assert v1.fingerprint != v2.fingerprint
    reweighted = resolve_versions(parse_spec(_spec(num_replicas=5, init_kwargs={"scale": 2.0},
                                                   versions=[{"name": "v1", "weight": 10}])))
    assert reweighted[("quick", "linear", "v1")].fingerprint == v1.fingerprint


def _dep(**fields):
    return {"apps": [{"name": "a", "route_prefix": "/a", "ingress": "d",
                      "deployments": [{"name": "d", "import_path": "m:f", **fields}]}]}


@pytest.mark.parametrize(("field", "value"), [
    ("request_timeout_s", 5_000_000), ("request_timeout_s", float("inf")), ("request_timeout_s", "30"),
    ("hedge_after_s", 1e9), ("num_replicas", 65), ("num_replicas", 2.5), ("num_replicas", True),
    ("max_replicas", 5000), ("max_retries", 10**6), ("max_ongoing_requests", 10**9),
])
def test_durations_counts_and_caps_are_bounded_and_typed(field, value):
    """Every duration is bounded (deadlines travel as uint32 ms), counts are ints within their caps."""
    with pytest.raises(SpecError, match=field):
        parse_spec(_dep(**{field: value}))


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), None, [1], True, "2", -1])
def test_version_weights_are_finite_typed_numbers(weight):
    with pytest.raises(SpecError, match=r"versions\[0\]\.weight"):
        parse_spec(_dep(versions=[{"name": "v1", "weight": weight}]))


def test_max_replicas_caps_every_version_and_defaults_to_64():
    spec = parse_spec(_dep(num_replicas=64))
    assert spec.apps[0].deployments[0].max_replicas == 64
    assert resolve_versions(spec)[("a", "d", "v1")].max_replicas == 64
    with pytest.raises(SpecError, match="above max_replicas"):
        parse_spec(_dep(max_replicas=2, versions=[{"name": "v1", "num_replicas": 3}]))
