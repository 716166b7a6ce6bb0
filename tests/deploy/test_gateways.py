"""How many gateway processes, and the one derivation of GatewayConfig from the spec."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from deploy.gateways import (
    MAX_AUTO_GATEWAYS,
    MIN_AUTO_GATEWAYS,
    gateway_config,
    resolve_num_gateways,
)
from deploy.spec import GatewaySpec
from gateway.config import GatewayConfig


@pytest.mark.parametrize(("cores", "expected"), [(1, 2), (2, 2), (3, 3), (8, 8), (64, 8)])
def test_auto_is_one_per_core_between_the_bounds(cores, expected):
    assert (MIN_AUTO_GATEWAYS, MAX_AUTO_GATEWAYS) == (2, 8)
    assert resolve_num_gateways("auto", cores) == expected


def test_an_explicit_number_wins():
    assert resolve_num_gateways(1, 16) == 1 and resolve_num_gateways(12, 2) == 12
    for bad in (0, True, "3", 2.0):
        with pytest.raises(ValueError):
            resolve_num_gateways(bad, 4)


def test_gateway_config_carries_every_spec_field_by_name_and_the_runtime_fields():
    spec = GatewaySpec(port=8123, max_body_bytes=4096, access_log=False)
    config = gateway_config(spec, admin_token="t", metrics_dir="/m", log_dir="/l", controller_name="c",
                            namespace="n")
    for name, value in spec.model_dump().items():
        assert getattr(config, name) == value
    assert (config.admin_token, config.metrics_dir, config.log_dir, config.controller_name, config.namespace) == (
        "t", "/m", "/l", "c", "n")
    assert set(spec.model_dump()) <= {f.name for f in dataclasses.fields(GatewayConfig)}


def test_command_line_overrides_are_validated_like_the_spec():
    config = gateway_config(GatewaySpec(), admin_token="t", controller_name="c", namespace="n", port=9000, host=None)
    assert config.port == 9000 and config.host == "127.0.0.1"
    with pytest.raises(ValidationError):
        gateway_config(GatewaySpec(), admin_token="t", controller_name="c", namespace="n", port=70000)
