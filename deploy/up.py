"""`raygate up`: start what is missing (Redis, Ray), the controller and gateways, apply a spec, serve
until SIGINT/SIGTERM, then stop everything that was started here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from deploy.embedded import (
    EmbeddedRedis,
    RedisNotInstalled,
    start_local_ray,
    write_private_file,
)
from deploy.gateways import gateway_config
from deploy.names import CONTROLLER_NAME, NAMESPACE
from deploy.policy import ControllerConfig
from deploy.replica_ops import ApplyError
from deploy.rundir import read_run_info
from deploy.spec import Spec, load_spec

__all__ = ["UpOptions", "run_up"]


@dataclass(frozen=True)
class UpOptions:
    spec_path: str | None  # spec to apply; None: the packaged quickstart
    run_dir: Path  # pid, admin token, Redis data (AOF) and gateway metrics live here
    redis_url: str | None  # join this Redis (REDIS_URL, password included); None: start one on loopback
    ray_address: str | None  # join this Ray cluster (RAY_ADDRESS); None: start a local Ray on loopback
    admin_token: str | None = None  # admin API token (RAYGATE_ADMIN_TOKEN); None: a fresh random one
    host: str | None = None  # gateway bind address (overrides the spec); loopback by default
    port: int | None = None  # gateway port (overrides the spec)
    num_gateways: int | str | None = None  # gateway processes, or "auto" (overrides the spec)
    num_cpus: float | None = None  # CPUs of a local Ray (default: the machine's)


def _quickstart_path() -> str:
    return str(Path(__file__).parent / "examples" / "quickstart.yaml")


def run_up(options: UpOptions, out=sys.stdout) -> int:
    def say(message: str) -> None:
        print(message, file=out, flush=True)

    spec: Spec = load_spec(options.spec_path or _quickstart_path())  # SpecError: caller prints it
    run_dir = Path(options.run_dir)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = read_run_info(run_dir)
    if info and _alive(info.get("pid", 0)):
        say(f"raygate is already running from {run_dir} (pid {info['pid']}); `raygate down` stops it")
        return 1

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    redis = None
    ray_temp = None
    platform = None
    try:
        redis_url = options.redis_url
        if not redis_url:
            try:
                redis = _start_redis(run_dir)
            except RedisNotInstalled as exc:
                say(f"error: {exc}")
                return 2
            redis_url = redis.url
            say(f"redis: started on {redis.host}:{redis.port} with a password (in {run_dir / 'redis-password'}; "
                f"data in {run_dir / 'redis'})")
        ray_temp = _start_ray(options, say)
        for signum in (signal.SIGINT, signal.SIGTERM):  # ray.init installs its own handlers
            signal.signal(signum, lambda *_: stop.set())

        gateway, token_file = _gateway_config(spec, options, run_dir, redis_url)
        from deploy.platform import Platform

        platform = Platform(ControllerConfig(redis_url=redis_url, gateway=gateway)).start()
        url_host = "127.0.0.1" if gateway.host in ("0.0.0.0", "::") else gateway.host
        url = f"http://{url_host}:{gateway.port}"
        write_private_file(run_dir / "up.json", orjson.dumps({
            "pid": os.getpid(), "url": url, "token_file": str(token_file)}).decode())
        if spec.apps or spec.scenarios or spec.pipelines:
            say(f"deploying {options.spec_path or 'the quickstart'} ...")
            try:
                platform.apply(spec)
            except ApplyError as exc:
                say(f"error: {exc}")
                return 1
        say(f"access logs: {run_dir / 'logs'}/access-<gateway pid>.jsonl")
        say(f"serving on {url} (routes: {', '.join(a.route_prefix for a in spec.apps) or 'none'}); "
            f"Ctrl-C or SIGTERM stops")
        while not stop.wait(0.5):
            pass
        say("stopping ...")
        return 0
    finally:
        _stop_everything(platform, redis, ray_temp, run_dir, say)


def _start_ray(options: UpOptions, say) -> str | None:
    """Join RAY_ADDRESS, or start a local Ray on loopback (returns its temp dir, removed at the end)."""
    import ray

    if options.ray_address:
        ray.init(address=options.ray_address, namespace=NAMESPACE, configure_logging=False)
        say(f"ray: joined {options.ray_address}")
        return None
    ray_temp = tempfile.mkdtemp(prefix="rg-", dir="/tmp")
    start_local_ray(temp_dir=ray_temp, num_cpus=options.num_cpus, log_to_driver=False)
    say("ray: started a local Ray on 127.0.0.1")
    return ray_temp


def _stop_everything(platform, redis, ray_temp: str | None, run_dir: Path, say) -> None:
    """Stop what `up` started, in reverse: the platform's actors, Ray, Redis; then forget the run."""
    import ray

    if platform is not None:
        try:
            platform.stop(forget=False)
        except Exception as exc:
            say(f"warning: controller shutdown: {exc!r}")
    if ray.is_initialized():
        ray.shutdown()
    if redis is not None:
        redis.stop()
    if ray_temp:
        shutil.rmtree(ray_temp, ignore_errors=True)
    (run_dir / "up.json").unlink(missing_ok=True)
    say("stopped")


def _start_redis(run_dir: Path) -> EmbeddedRedis:
    """The embedded Redis with a fresh password, kept in a 0600 file of the run directory."""
    password = secrets.token_urlsafe(24)
    write_private_file(run_dir / "redis-password", password)
    return EmbeddedRedis(data_dir=run_dir / "redis", password=password).start()


def _gateway_config(spec: Spec, options: UpOptions, run_dir: Path, redis_url: str | None = None):
    """GatewayConfig from the spec and the command line; the admin token in a 0600 file."""
    metrics_dir = run_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    admin_token = options.admin_token or secrets.token_urlsafe(24)
    token_file = write_private_file(run_dir / "admin-token", admin_token)
    gateway = gateway_config(spec.gateway, admin_token=admin_token, metrics_dir=str(metrics_dir),
                             log_dir=str(run_dir / "logs"), controller_name=CONTROLLER_NAME, namespace=NAMESPACE,
                             redis_url=redis_url,
                             host=options.host, port=options.port, num_gateways=options.num_gateways)
    return gateway, token_file


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
