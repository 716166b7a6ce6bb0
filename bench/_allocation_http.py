"""`bench/allocation.py --mode http`: the campaign replayed over HTTP against a raygate started here.

Embedded Redis (its own port), a local Ray on loopback, the Platform with the shipped gateway settings and one
scenario (its allocator app and its nearline planner actor). The campaign runs in real time: request i is sent at
start + times[i] (open loop, at most `--in-flight` outstanding), so `--users / --horizon` is the mean rate. The
client records each decision's latency, the answer (item, prices_version, prices_age_s, stale) and the value it
realises; the planner actor's cycle counts are read from its status before and after the campaign.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

__all__ = ["HttpResult", "run_http", "steady_p99_ms"]


@dataclass
class HttpResult:
    value: float = 0.0
    consumption: np.ndarray | None = None  # (K,) reported in Redis after the last request
    decision_s: list = field(default_factory=list)  # client latency of each decision
    sent_s: list = field(default_factory=list)  # when each of those was sent, seconds into the campaign
    price_lag_s: list = field(default_factory=list)  # per prices version: the youngest age an answer showed
    price_age_s: list = field(default_factory=list)  # prices_age_s of each answer (age of the prices used)
    decision_cpu_s: list = field(default_factory=list)  # not measurable from outside: left empty
    cycles: list = field(default_factory=list)  # (the in-process replay's reports; the planner's counts below)
    planner: dict = field(default_factory=dict)  # cycles, published, refused, failed during the campaign
    stale_answers: int = 0
    errors: dict = field(default_factory=dict)  # status -> count
    sent: int = 0
    youngest: dict = field(default_factory=dict)  # prices version -> smallest prices_age_s seen
    cpu: list = field(default_factory=list)  # (role, CPU s, cores) per process role over the campaign
    wall_s: float = 0.0  # the campaign's wall time (replay start to last answer)


async def _replay(url: str, requests: list[dict], times: np.ndarray, start: float, in_flight: int,
                  out: HttpResult) -> None:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    limit = asyncio.Semaphore(in_flight)
    origin = time.perf_counter() + (start - time.time())  # the campaign's start on the perf_counter clock

    async def one(session, body: dict) -> None:
        async with limit:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=orjson.dumps(body),
                                        headers={"Content-Type": "application/json"}) as response:
                    raw = await response.read()
                    status = response.status
            except Exception as exc:  # noqa: BLE001 - counted, the replay goes on
                out.errors[type(exc).__name__] = out.errors.get(type(exc).__name__, 0) + 1
                return
            out.decision_s.append(time.perf_counter() - t0)
            out.sent_s.append(t0 - origin)
            if status != 200:
                out.errors[str(status)] = out.errors.get(str(status), 0) + 1
                return
            answer = orjson.loads(raw)
            out.stale_answers += bool(answer["stale"])
            age, version = answer.get("prices_age_s"), answer.get("prices_version")
            if age is not None and version:
                out.price_age_s.append(float(age))
                out.youngest[version] = min(float(age), out.youngest.get(version, float("inf")))
            if answer["item"] is not None:
                out.value += next(c["value"] for c in body["candidates"] if c["item"] == answer["item"])

    async with ClientSession(connector=TCPConnector(limit=in_flight), timeout=ClientTimeout(total=30)) as session:
        tasks = []
        for i in np.argsort(times, kind="stable"):
            delay = start + float(times[i]) - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, requests[int(i)])))
            out.sent += 1
        await asyncio.gather(*tasks)


class _PlanTrace:
    """`--trace PATH`: every prices version's plan as the replicas got it (polled every 0.1 s), for diagnosis."""

    def __init__(self, store, begin: float):
        import threading

        self.store, self.begin, self.rows, self.stop = store, begin, {}, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.wait(0.1):
            prices = self.store.read("bench")
            if prices is not None and prices.version not in self.rows:
                self.rows[prices.version] = {"version": prices.version, "at": prices.computed_at - self.begin,
                                             "published": prices.published_at - self.begin,
                                             "lam": prices.as_array().round(5).tolist(), **prices.plan}

    def dump(self, path: str, times: np.ndarray) -> None:
        self.stop.set()
        self.thread.join()
        with open(path, "w") as f:
            for row in self.rows.values():
                row["true_remaining"] = int(times.size - np.searchsorted(times, row["at"]))
                f.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")


def steady_p99_ms(out: HttpResult, mean_rate: float, slack: float = 1.25) -> float:
    """p99 latency of the requests sent in whole seconds of the campaign that saw at most `slack` x the mean rate
    (the latency "at the mean rate": the diurnal peak and the surprise spike reach ~5x it and queue on 2 cores)."""
    sent = np.asarray(out.sent_s)
    if sent.size == 0:
        return float("nan")
    second = np.floor(sent).astype(int) - int(np.floor(sent.min()))
    per_second = np.bincount(second)
    steady = per_second[second] <= slack * mean_rate
    return float(np.percentile(np.asarray(out.decision_s)[steady] * 1e3, 99)) if steady.any() else float("nan")


def run_http(args, prior, campaign, scenario_knobs: dict, times: np.ndarray) -> tuple[HttpResult, object]:
    """Start everything, seed yesterday's traffic, replay the campaign over HTTP, stop everything."""
    import ray
    import redis

    from bench._cpu_share import cpu_attribution, cpu_snapshot
    from deploy.embedded import EmbeddedRedis, free_port, start_local_ray
    from deploy.gateways import gateway_config
    from deploy.names import CONTROLLER_NAME, NAMESPACE
    from deploy.platform import Platform
    from deploy.policy import ControllerConfig
    from deploy.spec import GatewaySpec, parse_spec
    from planner.allocation.actor import planner_actor_name
    from planner.allocation.budget import BudgetStore
    from planner.allocation.campaign import (
        request_of,
        scenario_from_instance,
        seed_history,
    )
    from planner.store import DualPriceStore

    work = tempfile.mkdtemp(prefix="rga-", dir="/tmp")
    server = EmbeddedRedis(data_dir=os.path.join(work, "redis"), appendonly=False).start()
    client = redis.Redis(host=server.host, port=server.port)
    platform = None
    try:
        start_local_ray(temp_dir=os.path.join(work, "r"), num_cpus=8, log_to_driver=False)
        port = free_port()
        gateway = gateway_config(GatewaySpec(port=port), admin_token="bench-" + os.urandom(8).hex(),
                                 metrics_dir=os.path.join(work, "metrics"), log_dir=os.path.join(work, "logs"),
                                 controller_name=CONTROLLER_NAME, namespace=NAMESPACE)
        platform = Platform(ControllerConfig(redis_url=server.url, gateway=gateway)).start()
        start = time.time() + args.warmup
        scenario = scenario_from_instance(campaign, name="bench", starts_at=start, **scenario_knobs)
        seed_history(client, scenario, prior, start, seasons=2, n_per_season=args.history_n, shape=args.shape)
        platform.apply(parse_spec({"scenarios": [scenario.model_dump(mode="json")]}))
        deadline = start + args.warmup
        while DualPriceStore(client).read("bench") is None and time.time() < deadline:
            time.sleep(0.2)
        usage = scenario.usage_types
        requests = [request_of(campaign, i, usage) for i in range(campaign.n)]
        out = HttpResult()
        url = f"http://127.0.0.1:{port}{scenario.route_prefix}"
        planner = ray.get_actor(planner_actor_name("bench", NAMESPACE), namespace=NAMESPACE)
        begin = max(start, time.time() + 1.0)
        print(f"campaign begins {begin - start:.2f} s after the scenario's starts_at")
        time.sleep(max(0.0, begin - time.time() - 0.2))
        before = ray.get(planner.status.remote(), timeout=30)  # cycles from here on are the campaign's
        # The client must not time its own collector: a full collection over the campaign's request bodies
        # (~10^6 objects) paused this process for 0.1-0.5 s, which showed as the allocator's p99.
        gc.collect()
        gc.freeze()
        cpu_before, wall0 = cpu_snapshot(), time.perf_counter()
        tracer = _PlanTrace(DualPriceStore(client), begin) if getattr(args, "trace", None) else None
        try:
            asyncio.run(_replay(url, requests, times, begin, args.in_flight, out))
        finally:
            gc.unfreeze()
            if tracer is not None:
                tracer.dump(args.trace, np.sort(times))
        out.wall_s = time.perf_counter() - wall0
        out.cpu = cpu_attribution(cpu_before, cpu_snapshot(), out.wall_s)
        after = ray.get(planner.status.remote(), timeout=30)
        out.planner = {k: after[k] - before[k] for k in ("cycles", "published", "refused", "failed")}
        # The price refresh lag: from a cycle's data snapshot to the first answer that used its prices (solve,
        # publish, announcement, replica refresh; plus up to one inter-arrival gap, ~2 ms at 500 req/s).
        out.price_lag_s = sorted(out.youngest.values())
        time.sleep(3 * scenario.sync_interval_s + 1.0)  # the replicas report what they consumed
        out.consumption = BudgetStore(client, "bench").used(scenario.constraint_names)
        return out, scenario
    finally:
        if platform is not None:
            try:
                platform.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"platform.stop failed: {exc!r}")
        if ray.is_initialized():
            ray.shutdown()
        client.close()
        server.stop()
