"""Processes that `raygate up` and the integration tests start themselves: a Redis server and a local Ray.

Everything binds 127.0.0.1 unless told otherwise; nothing here assumes a port is free.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from replicas.runtime import can_raise_priority

__all__ = [
    "EmbeddedRedis",
    "RedisNotInstalled",
    "free_port",
    "loopback_ray_env",
    "start_local_ray",
    "write_private_file",
]


def write_private_file(path: str | os.PathLike, text: str) -> Path:
    """Write a secret readable by its owner only, from the instant it exists (mode 0600 at creation, never
    chmod-ed after). An older file at `path` is removed first, so O_EXCL never meets a file of another mode."""
    path = Path(path)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


class RedisNotInstalled(RuntimeError):
    """redis-server is not on PATH."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedRedis:
    """A redis-server child process with its append-only file under `data_dir`.

    The port is picked at start (never 6379 by assumption). With `appendonly`, counters written
    before a stop are there again after the next start on the same `data_dir`.
    """

    data_dir: Path  # where dump/AOF files and the log live; created if missing
    host: str = "127.0.0.1"  # bind address; loopback unless the operator asks for more
    port: int = 0  # 0: choose a free port at start
    appendonly: bool = True  # fsync'd every second, so counters survive a restart
    password: str | None = None  # `requirepass`, given in a 0600 config file (never on the command line)
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """URL of database `db`, with the password when there is one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisNotInstalled(
                "redis-server was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install "
                "redis-server`, macOS: `brew install redis`) or set REDIS_URL to a running Redis."
            )
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        args = [
            binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if self.password:  # in a private config file: the command line is visible to every local user
            config = write_private_file(self.data_dir / "redis-auth.conf", f"requirepass {self.password}\n")
            args.insert(1, str(config))
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see "
                                   f"{self.data_dir / 'redis.log'}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                    auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
                    sock.sendall(auth + b"PING\r\n")
                    answer = sock.recv(64)
                    if answer.endswith(b"+PONG\r\n"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on {self.host}:{self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: Redis flushes the AOF and exits
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def loopback_ray_env() -> dict[str, str]:
    """Environment that keeps a local Ray's sockets on loopback, with a deliberate worker priority.

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 together with `_node_ip_address="127.0.0.1"` keeps every agent on
    127.0.0.1. Ray starts workers at niceness 15, which starves a gateway or replica whenever anything else
    runs. Where serving processes can raise their own priority once they are ready (`serving_priority`),
    workers keep 15: a worker booting (imports, model load) then never takes CPU from the ones serving, which
    is what keeps p99 flat while a killed replica is replaced or a version rolls. Elsewhere every worker
    runs at 0.
    """
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_worker_niceness": "15" if can_raise_priority() else "0"}


def start_local_ray(temp_dir: str | os.PathLike | None = None, num_cpus: float | None = None,
                    host: str = "127.0.0.1", namespace: str = "raygate",
                    runtime_env: dict | None = None, **kwargs) -> dict:
    """Start a new local Ray (never joins another cluster on the machine) bound to `host`.

    No dashboard: its job API on a network has been an attack path, and raygate has its own admin API.
    """
    os.environ.update(loopback_ray_env())  # read by every Ray process this call starts
    import ray
    from ray._private import ray_constants

    # The driver read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it first imported Ray; if that was before
    # this call, align the value it keeps so that it, too, picks the loopback address.
    ray_constants.ENABLE_RAY_CLUSTER = False
    init_kwargs = dict(
        address="local",
        namespace=namespace,
        include_dashboard=False,
        _node_ip_address=host,
        configure_logging=False,
        log_to_driver=kwargs.pop("log_to_driver", True),
        runtime_env=runtime_env,
    )
    if temp_dir is not None:
        # Ray's socket paths must stay under 107 bytes: keep the temp dir short.
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        init_kwargs["_temp_dir"] = str(temp_dir)
    if num_cpus is not None:
        init_kwargs["num_cpus"] = num_cpus
    init_kwargs.update(kwargs)
    return ray.init(**init_kwargs)
