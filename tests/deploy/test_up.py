"""`raygate up` as a user runs it: embedded Redis (with a password) and Ray, the quickstart on HTTP,
`raygate deploy` with progress, secrets in 0600 files, and `raygate down` stopping everything it started."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from deploy.embedded import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _post(url: str, doc: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_for_line(process: subprocess.Popen, needle: str, timeout_s: float) -> list[str]:
    lines = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed; output so far:\n" + "\n".join(lines))


def test_up_serves_deploys_and_sigterm_leaves_no_process(tmp_path):
    port = free_port()
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    env["RAYGATE_RUN_DIR"] = str(run_dir)
    up = subprocess.Popen([sys.executable, "-m", "deploy.cli", "up", "--port", str(port), "--num-cpus", "2"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_line(up, "serving on", 180)
        tree = {p.pid for p in psutil.Process(up.pid).children(recursive=True)}
        assert any("redis-server" in " ".join(psutil.Process(p).cmdline()) for p in tree if psutil.pid_exists(p))
        answer = _post(f"http://127.0.0.1:{port}/linear", {"x": [1.0] * 16})
        assert isinstance(answer["y"], float)

        # Nothing listens beyond loopback: every TCP listener of the process tree is on 127.0.0.1.
        listeners = []
        for pid in tree | {up.pid}:
            try:
                listeners += [c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
                              if c.status == psutil.CONN_LISTEN]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        assert listeners and all(addr.ip in ("127.0.0.1", "::ffff:127.0.0.1") for addr in listeners), listeners

        deploy = subprocess.run([sys.executable, "-m", "deploy.cli", "deploy", "deploy/examples/ensemble.yaml"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert "replicas running" in deploy.stdout and "deployed" in deploy.stdout
        answer = _post(f"http://127.0.0.1:{port}/ensemble", {"x": [1.0] * 16})
        assert len(answer["members"]) == 2

        # Secrets: created 0600; the embedded Redis answers nothing without its password.
        for name in ("admin-token", "redis-password", "up.json"):
            assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        redis_process = next(psutil.Process(p) for p in tree
                             if psutil.pid_exists(p) and "redis-server" in " ".join(psutil.Process(p).cmdline()))
        redis_port = next(c.laddr.port for c in redis_process.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN)
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=2, retry=None).keys("*")  # no back-off
        password = (run_dir / "redis-password").read_text()
        assert redis.Redis(host="127.0.0.1", port=redis_port, password=password).exists(
            "raygate:raygate-controller:state")
        assert password not in " ".join(" ".join(psutil.Process(p).cmdline()) for p in tree if psutil.pid_exists(p))

        tree |= {p.pid for p in psutil.Process(up.pid).children(recursive=True)}
        # SIGTERM to the `up` process found in up.json; `down` waits until that process is gone, so this
        # test (its parent) reaps it meanwhile.
        down = subprocess.Popen([sys.executable, "-m", "deploy.cli", "down"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_for_line(up, "stopped", 90)
        assert up.wait(60) == 0
        said, _ = down.communicate(timeout=120)
        assert down.returncode == 0 and "stopped" in said, said
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, [" ".join(psutil.Process(p).cmdline())[:120] for p in alive]
    assert not (run_dir / "up.json").exists()


def test_up_refuses_an_invalid_spec_naming_the_field(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("apps:\n  - name: a\n    route_prefix: /a\n    ingress: d\n    deployments:\n"
                    "      - name: d\n        import_path: m:f\n        max_ongoing_requests: 0\n")
    result = subprocess.run([sys.executable, "-m", "deploy.cli", "--run-dir", str(tmp_path / "run"), "up", str(spec)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{spec}: apps[0].deployments[0].max_ongoing_requests" in result.stderr
