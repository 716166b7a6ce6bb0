"""The numbers README.md and docs/design.md state, held to the code: the spec example, the quickstart's answer,
and each documented timing or limit is the default of the field that carries it (docs/claims.md maps every
other claim to its test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _readme_spec() -> dict:
    """The YAML block of README.md's "The app spec" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The app spec"):]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def test_the_readme_spec_example_is_valid_and_its_gateway_line_shows_the_defaults():
    from deploy.spec import GatewaySpec, parse_spec

    doc = _readme_spec()
    spec = parse_spec(doc)
    assert [v.name for v in spec.apps[0].deployments[0].versions] == ["v1", "v2"]
    defaults = GatewaySpec()
    for field, shown in doc["gateway"].items():
        assert getattr(defaults, field) == shown, field


def test_the_quickstart_answers_the_readme_curl_example():
    """`curl ... -d '{"x": [1..16]}'` -> `{"y": -13.6}` (both versions: v2 has scale 1.0, bias 0.0)."""
    from deploy.examples.models import Linear

    x = [float(i) for i in range(1, 17)]
    assert Linear()({"x": x})["y"] == pytest.approx(-13.6)
    assert Linear(scale=1.0, bias=0.0)({"x": x})["y"] == pytest.approx(-13.6)


def test_documented_failover_numbers_are_the_router_defaults():
    """README "Failover" and design "Failure detection": ping every 200 ms, ejected after 500 ms unanswered,
    stalled at 20x the peers' median (at least 200 ms), five 5xx in a row, at most half ejected, retry budget 20%
    over 10 s plus 10/s."""
    from replicas.routing.policy import FailoverPolicy

    policy = FailoverPolicy()
    assert (policy.ping_interval_s, policy.ping_timeout_s) == (0.2, 0.5)
    assert (policy.stall_factor, policy.stall_min_s) == (20.0, 0.2)
    assert policy.consecutive_errors == 5 and policy.max_ejected_share == 0.5
    assert (policy.retry_ratio, policy.retry_window_s, policy.retry_min_per_s) == (0.2, 10.0, 10.0)


def test_documented_controller_and_channel_numbers_are_the_defaults():
    """Probes every 0.5 s with a 1 s timeout, replaced after two failures; channel handshakes time out after
    2 s; durations capped at 3600 s; max_replicas 64; sticky keys over 10,000 buckets."""
    from deploy.policy import ControllerPolicy
    from deploy.spec import DEFAULT_MAX_REPLICAS, MAX_DURATION_S, DeploymentSpec
    from replicas.channel.server import ChannelLimits
    from replicas.routing.split import BUCKETS

    policy = ControllerPolicy()
    assert (policy.probe_period_s, policy.probe_timeout_s, policy.unhealthy_after) == (0.5, 1.0, 2)
    assert ChannelLimits().handshake_timeout_s == 2.0
    assert MAX_DURATION_S == 3600.0 and BUCKETS == 10_000
    deployment = DeploymentSpec(name="d", import_path="m:f")
    assert DEFAULT_MAX_REPLICAS == 64 and deployment.max_replicas == 64
    assert deployment.max_retries == 3 and deployment.max_queued_requests == 256


# Reading the environment: os.getenv(...), os.environ.get(...), os.environ[...] (not an assignment), dict(os.environ).
_ENV_READ = re.compile(r"os\.getenv\(|os\.environ\.get\(|os\.environ\[[^\]]+\](?!\s*=[^=])|dict\(os\.environ\)")
# Entry points (design.md: CLI, `up`, the planner's commands; the Keeper's command) and user example code.
_MAY_READ_ENV = {"deploy/cli.py", "deploy/up.py", "planner/commands.py", "deploy/keeper.py", "deploy/examples/models.py"}


def test_the_environment_is_read_only_by_entry_points():
    """design.md: "The environment is read only by entry points ...; library modules get their settings passed
    down." (Writing it for the processes Ray starts is allowed.)"""
    readers = []
    for package in ("deploy", "gateway", "replicas", "planner", "autoscale", "raygate"):
        for path in sorted((REPO / package).rglob("*.py")):
            name = str(path.relative_to(REPO))
            if name not in _MAY_READ_ENV and _ENV_READ.search(path.read_text()):
                readers.append(name)
    assert readers == []


def test_status_shows_redis_urls_without_their_password():
    """README "Event pipelines": status shows each pipeline's Redis URL without its password (the same helper
    feeds `feature_status`); the controller's Redis errors hide it too."""
    from deploy.features import redacted_url
    from deploy.persistence import redacted

    url = "redis://:s3cret-pw@127.0.0.1:6390/2"
    for shown in (redacted_url(url), redacted(url)):
        assert "s3cret-pw" not in shown and "127.0.0.1:6390" in shown
    assert redacted_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0" and redacted_url(None) is None
