"""/-/openapi.json is true: schemathesis generates requests for every operation it lists and checks that no
answer is a 5xx and every answer matches the document (status, content type, headers, body schema).

Unit tier: the gateway app with in-process replicas and the fake admin backend, every operation (admin
ones with and without the token). Integration tier: a small run against the live platform, on the operations
that change nothing (control paths, admin reads, the quickstart's route).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from replicas.routing.table import VersionRoute
from tests.gateway.test_http_app import Harness

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# What the document promises; the data-acceptance checks are left out on purpose: the document describes a
# spec body loosely (the controller validates it with the spec's own models) and a model's input as any JSON.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


class Echo:
    def __call__(self, payload):
        return {"echo": payload}


def run_schemathesis(base_url: str, token: str, operations: set[str] | None, examples: int) -> list[str]:
    """Drive every (selected) operation of the served document; returns the labels that were exercised."""
    document = requests.get(base_url + "/-/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    exercised = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operations is not None and operation.label not in operations:
            continue
        auth = {"Authorization": f"Bearer {token}"} if operation.path.startswith("/-/admin/") else {}

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:
            for headers in ({}, auth) if auth else ({},):
                case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=CHECKS,
                                       timeout=10)

        check()
        exercised.append(operation.label)
    return exercised


@pytest.fixture
def served_app():
    """The gateway app on a loop in a thread of its own (schemathesis calls it synchronously)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    harness = Harness()

    async def start():
        replica = await harness.replica(Echo(), "r1")
        await harness.start([VersionRoute("v1", 100, (replica,))], request_timeout_s=5.0)

    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield harness
    asyncio.run_coroutine_threadsafe(harness.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_every_operation_answers_as_documented(served_app):
    exercised = run_schemathesis(f"http://127.0.0.1:{served_app.port}", "adm", None, examples=10)
    assert {"GET /-/healthz", "GET /-/ready", "GET /metrics", "POST /api", "POST /-/admin/deploy",
            "POST /-/admin/split", "POST /-/admin/scale", "GET /-/admin/status"} <= set(exercised)


@pytest.mark.integration
def test_live_platform_answers_as_documented(platform):
    read_only = {"GET /-/healthz", "GET /-/ready", "GET /-/routes", "GET /-/openapi.json", "GET /metrics",
                 "GET /-/admin/status", "GET /-/admin/apply", "POST /linear"}
    exercised = run_schemathesis(platform.url, platform.admin_token, read_only, examples=15)
    assert set(exercised) == read_only
