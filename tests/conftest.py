"""Shared fixtures: one real Redis server and one real local Ray per test session, both on loopback.

Integration tests ask for `redis_url` or `ray_cluster`; unit tests ask for neither and never start them.
Redis databases by concern: DB 0 holds the live platform's controller state (nothing else touches it);
`redis_url`/`redis_client` are DB 1, for store tests, flushed before each test.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

# Before anything imports Ray: keeps every Ray socket of the test cluster on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "raygate-numba-cache"))


# A test or fixture (not a `_helper`) with a `platform` argument: the session fixture, or a fixture built on it.
_TAKES_PLATFORM = re.compile(r"def (?!_)\w+\([^)]*\bplatform\b")
SESSION_PLATFORM_UNIT = "session-platform"


@functools.cache
def _work_unit(path: str) -> str:
    """The unit of work a test file belongs to under `make test`: its own path, or the session platform's."""
    try:
        text = (Path(__file__).resolve().parents[1] / path).read_text()  # `path`: from the rootdir, as in node ids
        return SESSION_PLATFORM_UNIT if _TAKES_PLATFORM.search(text) else path
    except OSError:
        return path


@pytest.hookimpl(tryfirst=True)  # ahead of pytest-xdist's own choice for `--dist loadfile`
def pytest_xdist_make_scheduler(config, log):
    """`make test` (`-n 2 --dist loadfile`): a test file stays whole on one xdist worker (module fixtures, own
    clusters), and the files that use the session `platform` go to one worker as one unit of work.

    So only that worker starts the session platform: about twenty replica and gateway processes whose boot and
    idle probing would otherwise run twice for the whole suite. (pytest-xdist's `loadgroup` marks cannot do this
    with pytest 9: it renames test ids through an attribute pytest no longer reads.) A file goes with the
    platform's when a test or fixture in it takes a `platform` argument; one the pattern misses still passes,
    on the other worker's own platform. Units are handed out in collection order (see
    `pytest_collection_modifyitems`)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the order the workers collected in, not most-tests-first

    class OneSessionPlatform(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid.split("::", 1)[0])

    return OneSessionPlatform(config, log)


def pytest_collection_modifyitems(config, items):
    """On an xdist worker, the order units are handed out in: the session platform's first; then the other
    integration units, fewer tests first (the few-test files are the scenarios that start clusters of their
    own: early, they run beside the platform's unit); then the unit tier, more tests first, so that the run ends
    on short files that even out the two workers. A stable sort: pytest-randomly's shuffle (before this hook)
    still decides the order inside a file and between units that tie."""
    if not hasattr(config, "workerinput"):
        return
    units = [_work_unit(str(item.path.relative_to(config.rootpath))) for item in items]
    size: dict[str, int] = {}
    integration: set[str] = set()
    for item, unit in zip(items, units):
        size[unit] = size.get(unit, 0) + 1
        if item.get_closest_marker("integration"):
            integration.add(unit)
    order = {id(item): (unit != SESSION_PLATFORM_UNIT, unit not in integration,
                        size[unit] if unit in integration else -size[unit]) for item, unit in zip(items, units)}
    items.sort(key=lambda item: order[id(item)])


@pytest.fixture(scope="session")
def run_root() -> Path:
    """A short private directory for this session's Ray and Redis files (Ray's socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="rgt-", dir="/tmp"))
    yield path
    # Removed by a detached `rm` after the session: Ray's files there include the pip runtime environments'
    # virtualenvs (tens of thousands of files: 15-45 s to delete), which no test waits for.
    subprocess.Popen(["rm", "-rf", str(path)], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PLATFORM_HEADER_TIMEOUT_S = 4.0  # the session platform's gateways close a connection with no complete request head
#                                  after this long (default 10 s): the slowloris test waits for it, so it is short
PLATFORM_DB = 0  # the session platform's controller state
STORE_DB = 1  # store tests (flushed per test)
SIDE_DB = 2  # side platforms (`side_platforms`): each has its own controller name, so its own key prefix
# DB 3: tests/autoscale/test_platform_autoscale.py's own platform


@pytest.fixture(scope="session")
def redis_server(run_root):
    """A redis-server started for this test session on a free loopback port, with a password as `up` runs it."""
    import secrets

    from deploy.embedded import EmbeddedRedis

    server = EmbeddedRedis(data_dir=run_root / "redis", password=secrets.token_urlsafe(16)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    """Database for store tests (never the platform's)."""
    return redis_server.url_for(STORE_DB)


@pytest.fixture(scope="session")
def platform_redis_url(redis_server) -> str:
    """Database of the session platform's controller."""
    return redis_server.url_for(PLATFORM_DB)


@pytest.fixture
def redis_client(redis_url):
    """A redis-py client on the store tests' database, flushed (the platform's database is left alone)."""
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

    # Logical CPUs: replicas and planner workers of every test module must fit side by side.
    context = start_local_ray(temp_dir=run_root / "ray", num_cpus=16, log_to_driver=False)
    yield context
    ray.shutdown()


TEST_APPS = """
apps:
  - name: errors
    route_prefix: /flaky
    ingress: flaky
    deployments:
      - name: flaky
        import_path: deploy.examples.models:Flaky
        resources: {num_cpus: 0.05}
  - name: slow
    route_prefix: /slow
    ingress: slow
    deployments:
      - name: slow
        import_path: deploy.examples.models:Slow
        max_ongoing_requests: 1
        max_queued_requests: 2
        request_timeout_s: 20
        resources: {num_cpus: 0.05}
  - name: env
    route_prefix: /env
    ingress: environment
    deployments:
      - name: environment
        import_path: deploy.examples.models:environment
        runtime_env: {env_vars: {RAYGATE_TEST_COLOUR: teal}}
        resources: {num_cpus: 0.05}
  - name: chaos
    route_prefix: /chaos
    ingress: chaos
    deployments:
      - name: chaos
        import_path: deploy.examples.models:Stallable
        init_kwargs: {flag_dir: FLAG_DIR, stall_s: 5.0}
        num_replicas: 3
        idempotent: true
        request_timeout_s: 10
        max_ongoing_requests: 32
        resources: {num_cpus: 0.05}
  - name: plain
    route_prefix: /plain-env
    ingress: environment
    deployments:
      - name: environment
        import_path: deploy.examples.models:environment
        request_timeout_s: 2  # the slow-body test waits for this deadline
        resources: {num_cpus: 0.05}
  - name: rolling
    route_prefix: /rolling
    ingress: linear
    deployments:
      - name: linear
        import_path: deploy.examples.models:Linear
        num_replicas: 2
        idempotent: true
        resources: {num_cpus: 0.05}
  - name: mirror
    route_prefix: /mirror
    ingress: echo
    deployments:
      - name: echo
        import_path: deploy.examples.models:Flaky
        resources: {num_cpus: 0.05}
        allow_pinning: false
        versions:
          - {name: v1, weight: 100}
          - {name: shadow, weight: 0, mirror_percent: 100, import_path: "deploy.examples.models:Slow",
             init_kwargs: {seconds: 1.5}, }
"""


def platform_spec(flag_dir: str = "/tmp"):
    """The quickstart and ensemble examples plus small apps for the error paths and chaos, as one spec."""
    import yaml

    from deploy.spec import parse_spec

    apps = []
    for path in ("deploy/examples/quickstart.yaml", "deploy/examples/ensemble.yaml"):
        apps += yaml.safe_load(Path(path).read_text())["apps"]
    apps += yaml.safe_load(TEST_APPS.replace("FLAG_DIR", flag_dir))["apps"]
    return parse_spec({"apps": apps})


class RunningPlatform:
    def __init__(self, platform, url: str, admin_token: str, spec, flag_dir) -> None:
        self.platform = platform
        self.url = url
        self.admin_token = admin_token
        self.spec = spec
        self.flag_dir = flag_dir  # Stallable replicas stall while flag_dir/stall-<pid> exists
        self.log_dir = flag_dir.parent / "logs"  # gateways' access logs


@pytest.fixture(scope="session")
def platform(ray_cluster, platform_redis_url, run_root):
    """raygate on the session's Ray: two gateway processes on one port, the apps of `platform_spec`."""
    from deploy.embedded import free_port
    from deploy.gateways import gateway_config
    from deploy.names import CONTROLLER_NAME, NAMESPACE
    from deploy.platform import Platform
    from deploy.policy import ControllerConfig
    from deploy.spec import GatewaySpec

    port = free_port()
    gateway = gateway_config(GatewaySpec(port=port, num_gateways=2, header_timeout_s=PLATFORM_HEADER_TIMEOUT_S),
                             admin_token="test-admin-token",
                             metrics_dir=str(run_root / "metrics"), log_dir=str(run_root / "logs"),
                             controller_name=CONTROLLER_NAME, namespace=NAMESPACE)
    running = Platform(ControllerConfig(redis_url=platform_redis_url, gateway=gateway)).start()
    flag_dir = run_root / "flags"
    flag_dir.mkdir()
    spec = platform_spec(str(flag_dir))
    running.apply(spec)
    yield RunningPlatform(running, f"http://127.0.0.1:{port}", "test-admin-token", spec, flag_dir)
    running.stop()


class SidePlatform:
    """A small extra platform on the session's Ray: its own controller name (so its own Redis keys), port,
    admin token and one gateway process."""

    def __init__(self, platform, url: str, admin_token: str, redis_url: str, name: str) -> None:
        self.platform = platform
        self.url = url
        self.admin_token = admin_token
        self.redis_url = redis_url
        self.name = name
        self.state_key = f"raygate:{name}:state"  # where its controller saves its state


@pytest.fixture
def side_platforms(ray_cluster, redis_server, run_root):
    """Start side platforms for one test (`start(spec_or_None)`); each is stopped after it unless the test
    already shut it down. Cheaper than a second Ray: destructive cases (a tampered state, a shutdown, a
    cluster the Keeper watches) get their own platform and leave the session's alone."""
    import secrets

    from deploy.embedded import free_port
    from deploy.gateways import gateway_config
    from deploy.platform import Platform
    from deploy.policy import ControllerConfig
    from deploy.spec import GatewaySpec

    started: list[SidePlatform] = []

    def start(spec=None) -> SidePlatform:
        name, port, token = f"raygate-side-{secrets.token_hex(3)}", free_port(), secrets.token_urlsafe(12)
        gateway = gateway_config(GatewaySpec(port=port, num_gateways=1), admin_token=token, controller_name=name,
                                 namespace="raygate", log_dir=str(run_root / "side-logs"))
        url = redis_server.url_for(SIDE_DB)
        running = Platform(ControllerConfig(redis_url=url, name=name, gateway=gateway)).start()
        side = SidePlatform(running, f"http://127.0.0.1:{port}", token, url, name)
        started.append(side)
        if spec is not None:
            running.apply(spec)
        return side

    yield start
    for side in started:
        try:
            side.platform.stop()
        except Exception:  # already shut down by the test
            pass
