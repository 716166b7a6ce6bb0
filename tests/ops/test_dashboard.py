"""The Grafana dashboard names only metrics the platform exports, and `/metrics` of a live gateway passes
`promtool check metrics` (Prometheus' own linter)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "raygate.json"

# The platform metrics the dashboard's scaling, price-age and pipeline panels read, exported by
# gateway/platform_metrics.py (from the controller's metrics_snapshot) and gateway/events/metrics.py. (They were
# a PENDING list while other branches built them; every one is exported now, so the list and its skip are gone.)
ANNOUNCED_METRICS = (
    "raygate_autoscale_desired_replicas", "raygate_autoscale_decisions_total", "raygate_allocation_price_age_seconds",
    "raygate_events_lag", "raygate_events_pending", "raygate_events_dead_lettered_total",
)

_METRIC = re.compile(r"\b(raygate_[a-z0-9_]+)\b")


def _queries(doc: dict) -> list[str]:
    queries = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    queries += [v["query"] for v in doc.get("templating", {}).get("list", []) if v.get("type") == "query"]
    return queries


def _exported() -> set[str]:
    """Every series name the platform's registries expose (counters as _total, histograms as _bucket...)."""
    from gateway.metrics import GatewayMetrics

    registry = CollectorRegistry()
    GatewayMetrics(registry)
    from gateway.events.metrics import EventMetrics
    from gateway.platform_metrics import PlatformCollector

    EventMetrics(registry)
    registry.register(PlatformCollector())
    return set(registry._names_to_collectors)


def test_dashboard_is_valid_grafana_json_with_the_required_panels():
    doc = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in doc["panels"]).lower()
    for needed in ("traffic by version", "latency", "error", "replicas", "scaling", "price age", "pipeline lag"):
        assert needed in titles, needed
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in doc["panels"])


def test_every_query_names_an_exported_metric():
    """A query naming a metric nobody exports (a typo, a rename) fails here."""
    exported = _exported()
    unknown = sorted({name for q in _queries(json.loads(DASHBOARD.read_text())) for name in _METRIC.findall(q)
                      if name not in exported})
    assert not unknown, f"dashboard queries name metrics nobody exports: {unknown}"


def test_announced_metrics_are_exported():
    """The scaling, price-age and pipeline panels query the platform metrics, and each is exported."""
    exported = _exported()
    used = {name for q in _queries(json.loads(DASHBOARD.read_text())) for name in _METRIC.findall(q)}
    assert set(ANNOUNCED_METRICS) <= used, sorted(set(ANNOUNCED_METRICS) - used)
    missing = sorted(name for name in ANNOUNCED_METRICS if name not in exported)
    assert not missing, f"not exported: {missing}"


@pytest.mark.integration
def test_live_gateway_metrics_pass_promtool(platform):
    """`promtool check metrics` on a scrape of a gateway that has served traffic (promtool: Debian's
    `prometheus` package; .ci/run installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus, or extract usr/bin/promtool "
                    "from its .deb)")
    request = urllib.request.Request(platform.url + "/linear", data=json.dumps({"x": [1.0] * 16}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    deadline = time.monotonic() + 10  # the answering process wrote its count within a flush period or two
    while True:
        with urllib.request.urlopen(platform.url + "/metrics", timeout=10) as response:
            scrape = response.read()
        if b"raygate_requests_total" in scrape or time.monotonic() > deadline:
            break
        time.sleep(0.25)  # poll interval, not synchronisation: the scrape decides
    assert b"raygate_requests_total" in scrape
    assert b"# TYPE raygate_autoscale_desired_replicas gauge" in scrape  # the platform collector renders too
    checked = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, timeout=60)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
