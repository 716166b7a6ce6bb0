"""Shared fixtures: one real Redis server and one real local Ray per test session, both on loopback.

Integration tests ask for `redis_url` or `ray_cluster`; unit tests ask for neither and never start them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "raygate-numba-cache"))


@pytest.fixture(scope="session")
def run_root() -> Path:
    """A short private directory for this session's Ray and Redis files (Ray's socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="rgt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(run_root):
    """A redis-server started for this test session on a free loopback port."""
    from deploy.embedded import EmbeddedRedis

    server = EmbeddedRedis(data_dir=run_root / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_url):
    """A redis-py client on a flushed database."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def ray_cluster(run_root):
    """One local Ray for the whole session, bound to 127.0.0.1, with its own temp dir."""
    import ray

    from deploy.embedded import start_local_ray

    context = start_local_ray(temp_dir=run_root / "ray", num_cpus=4, log_to_driver=False)
    yield context
    ray.shutdown()
