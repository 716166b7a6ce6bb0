"""The Dockerfile lints clean and the KubeRay manifest carries a valid spec."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from deploy.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]


def test_dockerfile_lints_clean_with_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kuberay_manifest_runs_a_valid_spec_on_a_raycluster():
    documents = list(yaml.safe_load_all((REPO / "deploy/k8s/raycluster.yaml").read_text()))
    kinds = {d["kind"] for d in documents}
    assert {"RayCluster", "ConfigMap", "Service", "Deployment"} <= kinds
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    spec = parse_spec(yaml.safe_load(config_map["data"]["app.yaml"]), "raycluster.yaml")
    assert spec.apps[0].route_prefix == "/linear"
    driver = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "raygate-driver")
    env = {e["name"] for e in driver["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"RAY_ADDRESS", "REDIS_URL", "RAYGATE_ADMIN_TOKEN"} <= env
    redis = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "raygate-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert "--requirepass" in container["args"]  # the password comes from a Secret, and so does the driver's URL
    url = next(e["value"] for e in driver["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "REDIS_URL")
    assert url.startswith("redis://:$(REDIS_PASSWORD)@")
