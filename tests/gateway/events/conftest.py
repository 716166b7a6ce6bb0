"""Fixtures of the event-pipeline integration tests: Redis database 3 of the session's server, a key namespace per
test, and helpers to build pipelines and read what came out."""

from __future__ import annotations

import uuid

import pytest

EVENTS_DB = 3  # other suites use database 0; flushing ours never touches theirs


@pytest.fixture
def events_redis_url(redis_url) -> str:
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/{EVENTS_DB}"


@pytest.fixture
async def events_redis(events_redis_url):
    """A redis.asyncio client on the events database (not flushed: tests use their own namespace)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(events_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def namespace() -> str:
    """A key prefix of this test alone."""
    return f"t{uuid.uuid4().hex[:8]}"
