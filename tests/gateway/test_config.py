"""Gateway settings: the spec's GatewaySpec and the runtime GatewayConfig share field names and defaults
(contract 5: one is derived from the other by name), and "auto" gateway counts resolve as documented."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from deploy.spec import GatewaySpec
from gateway.config import (
    MAX_AUTO_GATEWAYS,
    MIN_AUTO_GATEWAYS,
    GatewayConfig,
    resolve_gateway_count,
)


def test_every_spec_field_is_a_config_field_with_the_same_default():
    config_defaults = {f.name: f.default for f in dataclasses.fields(GatewayConfig)}
    for name, value in GatewaySpec().model_dump().items():
        assert name in config_defaults, name
        assert config_defaults[name] == value, name
    derived = GatewayConfig(**GatewaySpec(num_gateways=3, port=9000).model_dump(), admin_token="t")
    assert derived.num_gateways == 3 and derived.port == 9000 and derived.admin_token == "t"


def test_num_gateways_defaults_to_auto_and_takes_a_number():
    assert GatewaySpec().num_gateways == "auto"
    assert GatewaySpec(num_gateways=5).num_gateways == 5
    for bad in (0, 65, "2", "many", True, 2.5, None):
        with pytest.raises(ValidationError):
            GatewaySpec(num_gateways=bad)


@pytest.mark.parametrize(("cpus", "expected"), [(1, MIN_AUTO_GATEWAYS), (2, 2), (3, 3), (4, 4), (8, 8),
                                                (64, MAX_AUTO_GATEWAYS)])
def test_auto_is_one_per_core_within_the_documented_bounds(cpus, expected):
    assert (MIN_AUTO_GATEWAYS, MAX_AUTO_GATEWAYS) == (2, 8)  # what docs/design.md says
    assert resolve_gateway_count("auto", cpus) == expected


def test_an_explicit_count_wins_over_the_core_count():
    assert resolve_gateway_count(1, 16) == 1 and resolve_gateway_count(12, 2) == 12
    for bad in (0, -1, True, "3", 2.0):
        with pytest.raises(ValueError, match="num_gateways"):
            resolve_gateway_count(bad, 4)
