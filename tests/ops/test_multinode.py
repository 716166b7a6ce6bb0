"""raygate on a real two-node Ray cluster started with `ray start` (a head and a worker node on this machine):
replicas on both nodes, the controller's gateways on each node (it places them itself, pinned per node), then
the worker node's raylet is killed under load.

Loopback and Ray 2.60: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 `ray start` refuses worker nodes, and with it
on, Ray rewrites 127.0.0.1 (node address and --address) to the machine's outward IP. So the nodes get their own
loopback addresses (head 127.0.0.2, worker 127.0.0.3), which Ray leaves alone: every node address stays on
loopback, but Ray's C++ servers (GCS, raylets) then listen on all interfaces (Ray binds 127.0.0.1 only for a
node whose address is exactly 127.0.0.1); the cluster has token authentication (a token made here, passed in
RAY_AUTH_TOKEN; nothing is written to ~/.ray). raygate's own sockets (gateways, replicas' channels, Redis) stay
on loopback.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from tests.ops.cluster_procs import REPO, Started, kill_tree, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
SPEC = {"apps": [{"name": "lin", "route_prefix": "/lin", "ingress": "linear", "deployments": [
    {"name": "linear", "import_path": "deploy.examples.models:Linear", "num_replicas": 4, "idempotent": True,
     "request_timeout_s": 10, "max_retries": 3, "resources": {"num_cpus": 0.5}}]}],
    "gateway": {"num_gateways": 1}}


def _ray_start(args: list[str], log, env) -> subprocess.Popen:
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.Popen([ray, "start", "--block", "--disable-usage-stats", *args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _status(url: str, token: str) -> dict:
    request = urllib.request.Request(url + "/-/admin/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _replica_nodes(status: dict) -> list[str]:
    return [r["node_id"] for a in status["apps"] for d in a["deployments"] for v in d["versions"]
            for r in v["replicas"] if r["state"] == "RUNNING"]


def _gateway_nodes(status: dict) -> dict | None:
    """{"head": node id, "worker": node id} once each node has a serving and a spare gateway, else None."""
    by_ip: dict[str, set] = {}
    ids = {}
    for g in status["gateways"]:
        by_ip.setdefault(g["node_ip"], set()).add(g["state"])
        ids[g["node_ip"]] = g["node_id"]
    if by_ip != {HEAD_IP: {"serving", "spare"}, WORKER_IP: {"serving", "spare"}}:
        return None
    return {"head": ids[HEAD_IP], "worker": ids[WORKER_IP]}


def test_worker_node_lost_under_load_costs_no_idempotent_request():
    from deploy.embedded import free_port
    root = Path(tempfile.mkdtemp(prefix="rgmn-", dir="/tmp"))  # Ray's socket paths must stay short
    token, admin = secrets.token_hex(16), "multinode-admin-token"
    gcs_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               RAYGATE_ADMIN_TOKEN=admin, RAY_scheduler_spread_threshold="0.0",
               # the GCS declares the killed raylet's node dead after 3 failed checks 1 s apart, not Ray's default
               # 5 checks 3 s apart: the same path (node death -> actors lost -> controller replaces), sooner
               RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    logs = {name: open(root / f"{name}.log", "w") for name in ("head", "worker")}
    procs: dict[str, subprocess.Popen] = {}
    up = None
    try:
        procs["head"] = _ray_start(["--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs_port}",
                                    f"--temp-dir={root / 'h'}", "--num-cpus=2", '--resources={"head": 1}',
                                    "--include-dashboard=false"], logs["head"], env)
        wait_until(lambda: "Ray runtime started" in (root / "head.log").read_text(), 120, "the head node")
        procs["worker"] = _ray_start([f"--address={HEAD_IP}:{gcs_port}", f"--node-ip-address={WORKER_IP}",
                                      f"--temp-dir={root / 'w'}", "--num-cpus=2", '--resources={"worker": 1}'],
                                     logs["worker"], env)
        wait_until(lambda: "Ray runtime started" in (root / "worker.log").read_text(), 120, "the worker node")
        joined = dict(env, RAY_ADDRESS=f"{HEAD_IP}:{gcs_port}", RAYGATE_RUN_DIR=str(root / "run"))
        up = Started(["-m", "deploy.cli", "up", str(root / "spec.yaml"), "--port", str(http_port)],
                     root / "up.log", joined)
        up.wait_for("serving on", 300)
        url = f"http://127.0.0.1:{http_port}"
        # the controller started a gateway per node: one serving (num_gateways: 1) and a spare on each
        nodes = wait_until(lambda: _gateway_nodes(_status(url, admin)), 120, "a serving gateway on each node")
        placed = wait_until(lambda: len(_replica_nodes(_status(url, admin))) == 4 and _replica_nodes(
            _status(url, admin)), 120, "four running replicas")
        assert set(placed) == {nodes["head"], nodes["worker"]}, (placed, nodes)

        load = _Load(url)
        load.start()
        wait_until(lambda: len(load.answers) >= 50, 60, "calls answered before the kill")
        raylet = next(p for p in psutil.Process(procs["worker"].pid).children(recursive=True)
                      if p.name() == "raylet")
        raylet.kill()
        killed_at = len(load.answers)
        replaced = wait_until(lambda: (lambda n: len(n) == 4 and set(n) == {nodes["head"]} and n)(
            _replica_nodes(_status(url, admin))), 240, "four running replicas, all on the head node")
        wait_until(lambda: len(load.answers) >= killed_at + 100, 60, "calls answered after the kill")
        load.stop()
        assert load.failures == [], load.failures[:5]
        assert len(replaced) == 4
        # the worker node left: the controller forgot its gateways and keeps the head node's
        wait_until(lambda: {g["node_ip"] for g in _status(url, admin)["gateways"]} == {HEAD_IP}, 60,
                   "gateways on the head node only")
    finally:
        # Every check is done: SIGKILL what this test started (`up` and its Redis, then both nodes' process
        # trees) instead of a graceful `up` shutdown, which waits on a cluster that is about to go anyway.
        if up is not None:
            up.kill()
        for name in ("worker", "head"):
            if name in procs:
                kill_tree(procs[name].pid)
                procs[name].wait(10)
        for log in logs.values():
            log.close()
        shutil.rmtree(root, ignore_errors=True)


class _Load:
    """Four threads calling through one blocking Client (idempotent POSTs) until stopped."""

    def __init__(self, url: str) -> None:
        from raygate import Client, ClientConfig

        self.client = Client([url], config=ClientConfig(timeout_s=5, deadline_s=30, max_attempts=6,
                                                         backoff_base_s=0.05, backoff_max_s=0.5))
        self.answers: list[str] = []  # replica that answered each call
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self.client.close()

    def _run(self) -> None:
        x = {"x": [float(i) for i in range(16)]}
        while not self._stop.is_set():
            try:
                answer = self.client.post("/lin", json=x, idempotent=True)
                self.answers.append(answer.replica)
            except Exception as exc:
                self.failures.append(repr(exc))
            time.sleep(0.01)
