"""The serving path on a real Ray, a real Redis and real HTTP: quickstart, ensemble, error answers,
backpressure, status, applies (failed, weight-only, count-only, rolling), scaling, gateway and controller
restarts. Every test leaves the platform as it found it (restored in `finally`)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time

import orjson
import psutil
import pytest
import ray
from aiohttp import ClientSession, TCPConnector
from prometheus_client.parser import text_string_to_metric_families

from deploy.examples.models import WEIGHTS
from deploy.replica_ops import ApplyError
from deploy.spec import parse_spec
from tests.deploy.platform_checks import (
    admin_post,
    gateway_ejections,
    replica_ids,
    version_of,
    wait_for,
    wait_settled,
)

pytestmark = pytest.mark.integration


def expected_y(x, scale=1.0, bias=0.0):
    return bias + sum(w * scale * v for w, v in zip(WEIGHTS, x))


async def _post(session, url, body: bytes, **headers):
    async with session.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as response:
        return response.status, response.headers.copy(), await response.read()


async def _linear_metrics(url: str) -> tuple[float, dict[tuple[str, str], float]]:
    """One scrape of the node: (requests quickstart/linear answered, its version fallbacks by (wanted, used))."""
    async with ClientSession() as session:
        async with session.get(url + "/metrics") as response:
            text = await response.text()
    answered, fallbacks = 0.0, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("app") != "quickstart" or labels.get("deployment") != "linear":
                continue
            if sample.name == "raygate_requests_total":
                answered += sample.value
            elif sample.name == "raygate_version_fallbacks_total":
                key = (labels["wanted"], labels["used"])
                fallbacks[key] = fallbacks.get(key, 0.0) + sample.value
    return answered, fallbacks


async def test_quickstart_answers_1000_requests_with_the_90_10_split(platform):
    """1,000 requests all answer the right y; the split chose v2 for a share within 4 standard deviations of 10%.
    A request whose chosen version had no usable replica at that moment (one ejected under load) is served by the
    other version and counted as a fallback (`raygate_version_fallbacks_total`): the split is judged on the
    version chosen, the served version plus those fallbacks."""
    rng = random.Random(5)
    inputs = [[rng.uniform(-5, 5) for _ in range(16)] for _ in range(1000)]
    semaphore = asyncio.Semaphore(32)
    answered_before, fallbacks_before = await _linear_metrics(platform.url)
    async with ClientSession(connector=TCPConnector(limit=32)) as session:
        async def one(x):
            async with semaphore:
                return await _post(session, platform.url + "/linear", orjson.dumps({"x": x}))
        results = await asyncio.gather(*(one(x) for x in inputs))
    versions = {"v1": 0, "v2": 0}
    for x, (status, headers, body) in zip(inputs, results):
        assert status == 200, body
        assert orjson.loads(body)["y"] == pytest.approx(expected_y(x), rel=1e-9, abs=1e-9)
        versions[headers["X-Raygate-Version"]] += 1
        assert headers["X-Raygate-Replica"].startswith("quickstart.linear." + headers["X-Raygate-Version"])

    async def counted() -> tuple[float, dict] | None:  # a scrape taken after every gateway counted the 1,000
        answered, fallbacks = await _linear_metrics(platform.url)
        return (answered, fallbacks) if answered >= answered_before + 1000 else None

    _, fallbacks = await wait_for(counted, 10, "the 1,000 requests in a scrape", period_s=0.05)
    moved = {key: n - fallbacks_before.get(key, 0.0) for key, n in fallbacks.items()}
    chosen_v2 = versions["v2"] + moved.get(("v2", "v1"), 0.0) - moved.get(("v1", "v2"), 0.0)
    assert abs(chosen_v2 / 1000 - 0.10) < 4 * (0.1 * 0.9 / 1000) ** 0.5, (
        versions, moved, gateway_ejections(platform.platform, "quickstart.linear."))


async def test_ensemble_averages_two_deployments(platform):
    """The ensemble calls model_a (scale 1) and model_b (scale 3) through handles and averages them."""
    x = [float(i) for i in range(16)]
    async with ClientSession() as session:
        status, _, body = await _post(session, platform.url + "/ensemble", orjson.dumps({"x": x}))
    answer = orjson.loads(body)
    assert status == 200, answer
    assert answer["members"] == pytest.approx([expected_y(x, 1.0), expected_y(x, 3.0)])
    assert answer["y"] == pytest.approx((expected_y(x, 1.0) + expected_y(x, 3.0)) / 2)


async def test_error_answers(platform):
    """Bad JSON 400, unknown route 404, oversize body 413; all JSON errors with a request id."""
    async with ClientSession() as session:
        status, headers, body = await _post(session, platform.url + "/linear", b'{"x": [1, 2', **{"X-Request-Id": "req-7"})
        assert status == 400 and orjson.loads(body)["error"]["code"] == "bad_request"
        assert headers["X-Request-Id"] == "req-7"
        status, _, body = await _post(session, platform.url + "/linear", b'{"x": [1, 2]}')
        error = orjson.loads(body)["error"]
        assert status == 400 and error["code"] == "bad_input" and "16 numbers" in error["message"]
        status, _, body = await _post(session, platform.url + "/does-not-exist", b"{}")
        assert status == 404 and orjson.loads(body)["error"]["code"] == "route_not_found"
        status, _, body = await _post(session, platform.url + "/linear", b"[" + b"1," * (1 << 20) + b"1]")
        assert status == 413 and orjson.loads(body)["error"]["code"] == "payload_too_large"


async def test_raising_model_answers_500_and_keeps_serving(platform):
    async with ClientSession() as session:
        status, _, body = await _post(session, platform.url + "/flaky", b'{"fail": true}', **{"X-Request-Id": "boom-1"})
        error = orjson.loads(body)["error"]
        assert status == 500 and error["request_id"] == "boom-1" and "asked to fail" in error["message"]
        for _ in range(5):
            status, _, body = await _post(session, platform.url + "/flaky", b"{}")
            assert status == 200 and orjson.loads(body) == {"ok": True}


async def test_saturated_deployment_answers_503_instead_of_queueing_without_bound(platform):
    """/slow runs one request at a time and queues two per gateway: of 16 concurrent requests, the excess
    is refused at once with 503 and Retry-After, and the rest succeed."""
    async with ClientSession() as session:
        results = await asyncio.gather(*(_post(session, platform.url + "/slow", b'{"seconds": 0.3}')
                                         for _ in range(16)))
    codes = [status for status, _, _ in results]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) >= 16 - 2 * 3, codes  # at most (1 running + 2 queued) per gateway accepted
    assert codes.count(200) >= 1
    refused = [headers for status, headers, _ in results if status == 503]
    assert all(h["Retry-After"] == "1" for h in refused)


def test_status_lists_every_replica(platform):
    """Status names each replica's actor id, node, pid, version and state; `raygate status --json` agrees."""
    status = platform.platform.status()
    quickstart = next(a for a in status["apps"] if a["name"] == "quickstart")
    versions = {v["name"]: v for v in quickstart["deployments"][0]["versions"]}
    assert versions["v1"]["weight"] == 90 and versions["v2"]["weight"] == 10
    for version in versions.values():
        assert version["running"] == version["target"] >= 1
    for replica in versions["v1"]["replicas"] + versions["v2"]["replicas"]:
        assert replica["state"] == "RUNNING" and replica["pid"] > 0
        assert len(replica["actor_id"]) > 8 and len(replica["node_id"]) > 8
    cli = subprocess.run([sys.executable, "-m", "deploy.cli", "--url", platform.url, "--token", platform.admin_token,
                          "status", "--json"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    data = orjson.loads(cli.stdout)
    pids = {r["pid"] for a in data["apps"] for d in a["deployments"] for v in d["versions"] for r in v["replicas"]}
    assert {r["pid"] for r in versions["v1"]["replicas"]} <= pids
    table = subprocess.run([sys.executable, "-m", "deploy.cli", "--url", platform.url, "--token",
                            platform.admin_token, "status"], capture_output=True, text=True, timeout=60)
    assert "quickstart" in table.stdout and "RUNNING" in table.stdout and "WEIGHT" in table.stdout


def test_status_shows_each_gateway_process(platform):
    """Contract 7: per gateway process its pid, index, state, requests served, in flight and table version; the
    node's warm spare (deploy/gateways.py) is listed too, as state "spare" with index -1."""
    deadline = time.monotonic() + 60  # a gateway killed by an earlier test: Ray restarts it as the spare
    everyone = platform.platform.status()["gateways"]
    while not any(g["state"] == "spare" for g in everyone):
        assert time.monotonic() < deadline, everyone
        time.sleep(0.2)
        everyone = platform.platform.status()["gateways"]
    assert [g["index"] for g in everyone if g["state"] == "spare"] == [-1]
    gateways = [g for g in everyone if g["state"] != "spare"]
    assert sorted(g["index"] for g in gateways) == [0, 1]
    for gateway in gateways:
        assert gateway["state"].lower() == "serving" and gateway["pid"] > 0, gateway
        assert {"served", "in_flight", "table_version", "traffic", "ejections"} <= set(gateway)
    assert len({g["pid"] for g in gateways}) == 2


@pytest.mark.parametrize("breakage", ["import", "init"])
async def test_failed_apply_leaves_running_apps_untouched(platform, breakage):
    """A spec whose code cannot be imported, or whose __init__ raises, is refused naming the error; every
    replica that ran before still runs (same ids), with the same weights, and the apps still answer."""
    before = await wait_settled(platform.platform)
    doc = platform.spec.to_dict()
    if breakage == "import":
        doc["apps"][0]["deployments"][0]["versions"][0]["import_path"] = "no_such_module_here:Model"
        expected = "no_such_module_here"
    else:  # Flaky has no __init__ arguments: TypeError in __init__
        errors = next(a for a in doc["apps"] if a["name"] == "errors")
        errors["deployments"][0]["init_kwargs"] = {"unexpected": 1}
        expected = r"Flaky\(\) takes no arguments"
    with pytest.raises(ApplyError, match=expected):
        platform.platform.apply(parse_spec(doc))
    after = platform.platform.status()
    assert after["apply"]["state"] == "failed"
    assert replica_ids(after) == replica_ids(before)
    assert after["apps"] == before["apps"]
    assert after["table_version"] >= before["table_version"]
    async with ClientSession() as session:
        code, _, body = await _post(session, platform.url + "/linear", orjson.dumps({"x": [1.0] * 16}))
        assert code == 200 and orjson.loads(body)["y"] == pytest.approx(expected_y([1.0] * 16))
        code, _, _ = await _post(session, platform.url + "/flaky", b"{}")
        assert code == 200


def test_gateway_serves_on_uvloop(platform):
    gateways = platform.platform.gateways()
    assert len(gateways) == 2
    assert ray.get([g.loop_type.remote() for g in gateways]) == ["uvloop.Loop", "uvloop.Loop"]


def _thread_niceness(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a niceness needs root or CAP_SYS_NICE")
async def test_serving_processes_run_at_niceness_zero(platform):
    """design.md "Actors, loops and priority": Ray starts workers at niceness 15; every gateway (the warm spare
    included) and replica raises all its threads to 0 once ready, where permitted."""
    def serving():  # a gateway killed by an earlier test may still be coming back; the spare is not serving
        status = platform.platform.status()
        gateways = [g for g in status["gateways"] if g["state"].lower() != "spare"]
        return status if gateways and all(g["state"].lower() == "serving" and g["pid"] > 0
                                          for g in gateways) else None

    status = await wait_for(serving, 60, "every gateway serving", period_s=0.2)
    pids = [g["pid"] for g in status["gateways"] if g["pid"] > 0]  # the spare too: it takes over under load
    pids += [r["pid"] for a in status["apps"] if a["name"] == "quickstart" for d in a["deployments"]
             for v in d["versions"] for r in v["replicas"] if r["state"] == "RUNNING"]
    assert len(pids) >= 4 and all(pid > 0 for pid in pids), pids
    assert {pid: _thread_niceness(pid) for pid in pids} == {pid: {0} for pid in pids}


def _errors_total(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('raygate_requests_total{app="errors"'))


async def _scrape_errors_total(url: str) -> float:
    async with ClientSession(connector=TCPConnector(force_close=True)) as session:
        async with session.get(url + "/metrics") as r:
            return _errors_total(await r.text())


async def _at_least(url: str, value: float) -> bool:
    return await _scrape_errors_total(url) >= value


async def test_metrics_scrape_sees_the_whole_node(platform):
    """With two gateway processes on one port, every scrape (whichever process answers) counts all requests,
    and both processes served some of the 40 requests sent here (deltas, not totals since the session)."""
    before = await _scrape_errors_total(platform.url)
    served_before = {s["pid"]: s["served"] for s in ray.get([g.stats.remote() for g in platform.platform.gateways()])}
    # new connections each time, so SO_REUSEPORT spreads them over both processes
    for _ in range(40):
        async with ClientSession(connector=TCPConnector(force_close=True)) as session:
            status, _, _ = await _post(session, platform.url + "/flaky", b"{}")
            assert status == 200
    served_after = {s["pid"]: s["served"] for s in ray.get([g.stats.remote() for g in platform.platform.gateways()])}
    deltas = {pid: served_after[pid] - served_before.get(pid, 0) for pid in served_after}
    assert all(n > 0 for n in deltas.values()) and sum(deltas.values()) >= 40, deltas
    # Each process writes its samples to the node's files a few times a second: wait (bounded) until they show.
    await wait_for(lambda: _at_least(platform.url, before + 40), 10, "the 40 requests in a scrape", period_s=0.05)
    seen = [await _scrape_errors_total(platform.url) for _ in range(8)]
    assert all(value >= before + 40 for value in seen), (before, seen)
    async with ClientSession() as session:
        async with session.get(platform.url + "/metrics") as r:
            text = await r.text()
    assert 'raygate_replicas{app="chaos",deployment="chaos",state="RUNNING",version="v1"} 3.0' in text


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection of its own (so a failure names the connection it happened on)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None
        self.local_port = 0

    async def connect(self) -> None:
        """Open the connection if there is none (a failure here sent nothing: safe to retry)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.local_port = self.writer.get_extra_info("sockname")[1]

    async def post(self, path: str, body: bytes) -> int:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.local_port = 0


async def test_a_killed_gateway_costs_only_its_in_flight_requests_and_no_counts(platform):
    """SIGKILL one gateway process under load (16 keep-alive connections): every failed request was on a
    connection to the killed process, at most one per such connection (the one in flight, or the next one
    sent on it before the reset arrived); Ray brings a new process back (new pid, serving), and
    reconnections made then all succeed; and the node's request counters never go back."""
    await wait_settled(platform.platform)
    gateways = [g for g in platform.platform.status()["gateways"] if g["index"] >= 0]  # not the spare
    assert all(g["state"].lower() == "serving" and g["pid"] > 0 for g in gateways), gateways
    victim = gateways[0]["pid"]
    port = int(platform.url.rsplit(":", 1)[1])
    counted_before = await _scrape_errors_total(platform.url)
    ok, failed_on = [0], []  # failed_on: the client port of each failed request's connection
    refused_connects = [0]  # new connections that failed before anything was sent (retried)
    stop, gone = asyncio.Event(), asyncio.Event()

    async def client():
        connection = KeepAliveClient("127.0.0.1", port)
        while not stop.is_set():
            try:
                await connection.connect()
            except OSError:
                refused_connects[0] += 1
                connection.close()
                await gone.wait()
                continue
            try:
                status = await connection.post("/flaky", b"{}")
                assert status == 200, status
                ok[0] += 1
            except (OSError, asyncio.IncompleteReadError):
                failed_on.append(connection.local_port)
                connection.close()
                # Reconnect once the killed process is replaced (as a client retrying after a back-off
                # would); meanwhile the other connections keep the surviving process busy.
                await gone.wait()
        connection.close()

    def victim_gone() -> bool:
        try:
            return psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    tasks = [asyncio.create_task(client()) for _ in range(16)]
    await wait_for(lambda: ok[0] > 200, 60, "traffic before the kill")
    ok_before_kill = ok[0]
    victim_ports = {c.raddr.port for c in psutil.Process(victim).net_connections(kind="tcp")
                    if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED}
    os.kill(victim, signal.SIGKILL)
    killed_at = ok[0]
    await wait_for(victim_gone, 30, "the killed process to exit", period_s=0.005)

    async def replaced():
        states = (await asyncio.get_running_loop().run_in_executor(None, platform.platform.status))["gateways"]
        return all(g["state"].lower() == "serving" and g["pid"] not in (0, victim) for g in states
                   if g["index"] == gateways[0]["index"])
    await wait_for(replaced, 60, "a new gateway process for the killed one", period_s=0.2)
    gone.set()
    await wait_for(lambda: ok[0] > killed_at + 300, 60, "traffic after the kill")
    stop.set()
    await asyncio.gather(*tasks)
    assert set(failed_on) <= victim_ports and len(failed_on) == len(set(failed_on)), (
        failed_on, victim_ports, refused_connects)
    await wait_for(lambda: _at_least(platform.url, counted_before + ok_before_kill), 10, "the counts in a scrape",
                   period_s=0.05)
    seen = [await _scrape_errors_total(platform.url) for _ in range(8)]
    assert all(value >= counted_before + ok_before_kill for value in seen), (counted_before, ok_before_kill, seen)


async def test_killed_replica_is_replaced_and_traffic_keeps_flowing(platform):
    """SIGKILL of a quickstart replica: requests keep succeeding (retried on a live replica, of another
    version when it was its version's only one), and the controller brings the version back to its count; status
    counts the replacement by its reason (`replaced`: "dead" when the probe found the actor gone, "unhealthy"
    when Ray was slower to tell than two probe timeouts)."""
    status = await wait_settled(platform.platform)
    v1 = version_of(status, "quickstart", "linear", "v1")
    victim, target, replaced = v1["replicas"][0], v1["target"], v1["replaced"]
    assert victim["state"] == "RUNNING" and victim["pid"] > 0, victim
    os.kill(victim["pid"], signal.SIGKILL)
    failures = 0
    async with ClientSession() as session:
        for _ in range(200):
            code, _, _ = await _post(session, platform.url + "/linear", orjson.dumps({"x": [1.0] * 16}))
            failures += code != 200
    assert failures == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        v1 = next(a for a in platform.platform.status()["apps"] if a["name"] == "quickstart")["deployments"][0]["versions"][0]
        ids = {r["replica_id"] for r in v1["replicas"] if r["state"] == "RUNNING"}
        if len(ids) == target and victim["replica_id"] not in ids:
            break
        await asyncio.sleep(0.25)
    else:
        pytest.fail(f"v1 not restored to {target} replicas: {v1}")
    grown = {reason: n - replaced.get(reason, 0) for reason, n in v1["replaced"].items()}
    assert {reason: n for reason, n in grown.items() if n} in ({"dead": 1}, {"unhealthy": 1}), (replaced, v1)


async def test_restarted_controller_picks_up_where_it_was(platform):
    """Kill the controller process: Ray restarts it, it reloads the spec and the runtime overrides (a split,
    a scale) from Redis, adopts exactly the running replicas (same ids) and gateways keep serving."""
    await wait_settled(platform.platform)
    url, token = platform.url, platform.admin_token
    try:
        code, answer = await admin_post(url, token, "/-/admin/split",
                                        {"app": "rolling", "deployment": "linear", "weights": {"v1": 7}})
        assert code == 200, answer
        code, answer = await admin_post(url, token, "/-/admin/scale", {"app": "rolling", "deployment": "linear",
                                                                        "version": "v1", "num_replicas": 1})
        assert code == 200, answer
        before = await wait_settled(platform.platform)
        ray.kill(platform.platform.controller, no_restart=False)
        async with ClientSession() as session:
            for _ in range(20):
                code, _, _ = await _post(session, url + "/linear", orjson.dumps({"x": [0.5] * 16}))
                assert code == 200

        def back():
            try:
                after = ray.get(platform.platform.controller.status.remote(), timeout=10)
            except Exception:
                return None
            return after if after["apps"] else None
        await wait_for(back, 60, "the restarted controller", period_s=0.5)
        ray.get(platform.platform.controller.start.remote(), timeout=30)
        after = platform.platform.status()
        assert replica_ids(after) == replica_ids(before)
        assert after["table_version"] > before["table_version"]
        rolling = version_of(after, "rolling", "linear", "v1")
        assert rolling["weight"] == 7 and rolling["target"] == 1
    finally:
        await admin_post(url, token, "/-/admin/split", {"app": "rolling", "deployment": "linear",
                                                        "weights": {"v1": 100}})
        await admin_post(url, token, "/-/admin/scale", {"app": "rolling", "deployment": "linear", "version": "v1",
                                                        "num_replicas": 2})
        await wait_settled(platform.platform)


async def test_access_log_lines_are_json_with_the_request_fields(platform):
    async with ClientSession() as session:
        status, _, _ = await _post(session, platform.url + "/linear", orjson.dumps({"x": [2.0] * 16}),
                                   **{"X-Request-Id": "access-log-check-1"})
    assert status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for path in platform.log_dir.glob("access-*.jsonl")
                 for line in path.read_bytes().splitlines() if b"access-log-check-1" in line]
        if lines:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("no access log line for the request")
    entry = orjson.loads(lines[0])
    assert entry["event"] == "access" and entry["status"] == 200 and entry["app"] == "quickstart"
    assert entry["version"] in ("v1", "v2") and entry["replica"].startswith("quickstart.linear.")
    assert entry["ms"] > 0 and entry["ts"] > 0


async def test_function_deployment_runs_in_its_own_runtime_env(platform):
    """A `module:function` deployment sees the env vars of its spec's runtime_env; the same function
    deployed without that runtime_env (another app, another process) does not."""
    async with ClientSession() as session:
        status, _, body = await _post(session, platform.url + "/env",
                                      orjson.dumps({"names": ["RAYGATE_TEST_COLOUR"]}))
        assert status == 200 and orjson.loads(body) == {"RAYGATE_TEST_COLOUR": "teal"}
        status, _, body = await _post(session, platform.url + "/plain-env",
                                      orjson.dumps({"names": ["RAYGATE_TEST_COLOUR"]}))
        assert status == 200 and orjson.loads(body) == {"RAYGATE_TEST_COLOUR": None}
