"""The one derivation of GatewayConfig from the spec (how many processes: tests/gateway/test_config.py)."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from deploy.gateways import gateway_config
from deploy.spec import GatewaySpec
from gateway.config import GatewayConfig


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


# -- the fleet's bookkeeping (deploy/gateways.py), on fake handles -------------------------------------------------

class _Method:
    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def remote(self, *args):
        self.calls.append((self.name, args))


class _FakeGateway:
    def __init__(self) -> None:
        self.calls: list = []
        self.guard = _Method(self.calls, "guard")


def _node(states: list[tuple[str, int, int]]):
    from deploy.gateways import _Node, _Slot

    node = _Node("n" * 56, "10.0.0.1", count=2)
    node.slots = [_Slot(i, f"g-{i}", _FakeGateway(), state=state, index=index, pid=pid)
                  for i, (state, index, pid) in enumerate(states)]
    return node


def _fleet():
    from deploy.gateways import GatewayFleet

    return GatewayFleet(GatewayConfig(), "ns", 1.0)


def test_vacant_indices_are_those_no_slot_holds_or_claims():
    node = _node([("serving", 0, 10), ("starting", -1, 11), ("spare", -1, 12)])
    assert node.vacant() == [1]
    node.slots[1].index = 1  # a promotion that timed out keeps its index claimed until the gateway says
    assert node.vacant() == []


def test_a_spare_that_took_over_an_index_replaces_the_slot_thought_to_hold_it():
    fleet, node = _fleet(), _node([("serving", 0, 10), ("serving", 1, 11), ("spare", -1, 12)])
    changed = fleet._seen(node, node.slots[2], {"pid": 12, "state": "serving", "index": 0})
    assert changed
    assert [(s.state, s.index) for s in node.slots] == [("starting", -1), ("serving", 1), ("serving", 0)]
    assert node.vacant() == []


def test_a_restarted_process_comes_back_as_a_spare_and_frees_its_index():
    fleet, node = _fleet(), _node([("serving", 0, 10), ("serving", 1, 11), ("spare", -1, 12)])
    assert fleet._seen(node, node.slots[0], {"pid": 20, "state": "spare", "index": -1})
    assert (node.slots[0].state, node.slots[0].pid) == ("spare", 20) and node.vacant() == [0]


def test_only_the_first_spare_is_armed_with_the_serving_siblings():
    fleet = _fleet()
    node = _node([("serving", 0, 10), ("serving", 1, 11), ("spare", -1, 12), ("spare", -1, 13)])
    fleet._arm(node)
    assert node.slots[2].handle.calls == [("guard", ({10: 0, 11: 1},))]
    assert node.slots[3].handle.calls == [("guard", ({},))]
