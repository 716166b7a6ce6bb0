"""AutoscalingConfig: defaults, bounds, and errors that name the field."""

import math

import pytest

from autoscale.config import (
    AutoscalingConfig,
    AutoscalingConfigError,
    parse_autoscaling,
)


def test_defaults_are_valid_and_documented():
    """Every field has a default and a description (the docs table is built from them)."""
    config = AutoscalingConfig()
    assert config.min_replicas == 1 and config.max_replicas == 8 and config.target_ongoing_requests == 8
    for name, field in AutoscalingConfig.model_fields.items():
        assert field.description, name


def test_the_issue_example_parses():
    config = parse_autoscaling({"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 8})
    assert config.start_replicas == 1


@pytest.mark.parametrize("data, field", [
    ({"min_replicas": 5, "max_replicas": 2}, "max_replicas"),
    ({"panic_window_s": 60, "stable_window_s": 30}, "panic_window_s"),
    ({"min_replicas": 0}, "scale_to_zero"),
    ({"downscale_delay_s": -1}, "downscale_delay_s"),
    ({"downscale_delay_s": 10**9}, "downscale_delay_s"),
    ({"target_ongoing_requests": math.inf}, "target_ongoing_requests"),
    ({"target_ongoing_requests": math.nan}, "target_ongoing_requests"),
    ({"max_scale_up_rate": 0.5}, "max_scale_up_rate"),
    ({"hysteresis": 1.0}, "hysteresis"),
    ({"target_cpu_utilization": 1.5}, "target_cpu_utilization"),
    ({"latency_quantile": "p95"}, "latency_quantile"),
    ({"initial_replicas": 20, "max_replicas": 8}, "initial_replicas"),
    ({"stable_windw_s": 30}, "stable_windw_s"),
])
def test_bad_config_names_the_field(data, field):
    """A bad value fails validation with a message naming the offending field."""
    with pytest.raises(AutoscalingConfigError) as info:
        parse_autoscaling(data, source="app.yaml: apps[0].deployments[0].autoscaling")
    message = str(info.value)
    assert field in message
    assert message.startswith("app.yaml: apps[0].deployments[0].autoscaling")


def test_scale_to_zero_allows_min_zero_and_is_frozen():
    config = AutoscalingConfig(min_replicas=0, scale_to_zero=True)
    assert config.start_replicas == 1
    with pytest.raises(Exception):
        config.min_replicas = 3
