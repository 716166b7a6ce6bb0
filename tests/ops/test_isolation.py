"""Per-deployment runtime environments: a local working_dir uploaded from the driver, two deployments with two
versions of one package side by side, and per-replica CPU/memory reaching Ray."""

from __future__ import annotations

import json
import urllib.request

import pytest

from deploy.packaging import local_entries, upload_local_dirs

MODULE = '''
import importlib.metadata
import os

import ray


def report(payload):
    """What this replica runs with: the package version, its cwd's marker file, what Ray assigned."""
    with open("marker.txt") as marker:
        text = marker.read()
    return {"termcolor": importlib.metadata.version("termcolor"), "marker": text,
            "resources": ray.get_runtime_context().get_assigned_resources(), "pid": os.getpid()}
'''

MEMORY = 64 * 1024 * 1024


def _apps(working_dir: str) -> list[dict]:
    def app(name: str, pin: str, cpus: float) -> dict:
        return {"name": name, "route_prefix": f"/{name}", "ingress": "report", "deployments": [{
            "name": "report", "import_path": "isomod:report", "request_timeout_s": 20,
            "resources": {"num_cpus": cpus, "memory": MEMORY},
            "runtime_env": {"working_dir": working_dir, "pip": [f"termcolor=={pin}"],
                            "env_vars": {"RAYGATE_ISO": name}}}]}

    return [app("iso-old", "2.3.0", 0.05), app("iso-new", "2.4.0", 0.07)]


def test_local_entries_finds_local_paths_and_leaves_uris_alone():
    doc = {"apps": [{"deployments": [
        {"runtime_env": {"working_dir": "./app", "py_modules": ["gcs://_ray_pkg_x.zip", "lib"]},
         "versions": [{"name": "v2", "runtime_env": {"working_dir": "s3://bucket/app.zip"}}]}]}]}
    assert local_entries(doc) == ["./app", "lib"]
    assert upload_local_dirs({"apps": []}) == {"apps": []}  # nothing local: no Ray needed, unchanged


@pytest.mark.integration
def test_upload_names_a_missing_directory(ray_cluster, tmp_path):
    with pytest.raises(ValueError, match="working_dir.*does not exist"):
        upload_local_dirs({"apps": [{"deployments": [{"runtime_env": {"working_dir": str(tmp_path / "nope")}}]}]})


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_two_deployments_run_two_versions_of_one_package_from_a_local_working_dir(platform, tmp_path):
    """The local directory is uploaded once (gcs:// URI) and is each replica's cwd; each deployment has its
    own pip environment (termcolor 2.3.0 next to 2.4.0) and env vars; Ray assigned each replica exactly the
    CPUs and memory of its spec."""
    from deploy.spec import parse_spec

    code = tmp_path / "isoapp"
    code.mkdir()
    (code / "isomod.py").write_text(MODULE)
    (code / "marker.txt").write_text("shipped from the driver")
    doc = platform.spec.to_dict()
    doc["apps"] = list(doc["apps"]) + _apps(str(code))
    uploaded = upload_local_dirs(doc)
    dirs = {d["runtime_env"]["working_dir"] for a in uploaded["apps"][-2:] for d in a["deployments"]}
    assert len(dirs) == 1 and dirs.pop().startswith("gcs://_ray_pkg_")
    assert doc["apps"][-1]["deployments"][0]["runtime_env"]["working_dir"] == str(code)  # input untouched
    try:
        platform.platform.apply(parse_spec(uploaded), timeout_s=800)
        answers = {}
        for name in ("iso-old", "iso-new"):
            request = urllib.request.Request(f"{platform.url}/{name}", data=b"{}",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                answers[name] = json.loads(response.read())
        assert answers["iso-old"]["termcolor"] == "2.3.0" and answers["iso-new"]["termcolor"] == "2.4.0"
        assert {a["marker"] for a in answers.values()} == {"shipped from the driver"}
        assert answers["iso-old"]["resources"]["CPU"] == pytest.approx(0.05)
        assert answers["iso-new"]["resources"]["CPU"] == pytest.approx(0.07)
        assert all(a["resources"]["memory"] == pytest.approx(MEMORY) for a in answers.values())
    finally:
        platform.platform.apply(platform.spec)  # back to the session's apps
