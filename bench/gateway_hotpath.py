"""The gateway's request path alone, for two source trees, interleaved: did a refactor cost anything?

For each tree (a checkout of this repository) and each round, one process serves the quickstart's model the
way a gateway does, without Ray: a replica process (the real channel server) and, in the serving process, the
router and the gateway's aiohttp app from that tree (its `build_app`, access log on, uvloop). wrk sends the
quickstart body at `--connections` for `--duration` seconds. Trees alternate (A B A B ...), so a machine whose
load drifts hurts both alike; the table shows every run and the other processes' CPU meanwhile.

Last line: one JSON object with per-tree medians of req/s, p99 and the serving process's CPU time per request
(the figure least moved by other processes' load), the second tree's ratios to the first (ratio_rps,
ratio_p99, ratio_cpu_per_request), and every run.

    .venv/bin/python bench/gateway_hotpath.py --trees /tmp/gw-base,. --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]


# ------------------------------------------------------------------------------------- in the serving process

async def _replica_port() -> int:
    from deploy.examples.models import Linear
    from replicas.callable import UserCallable
    from replicas.channel.server import ChannelServerProtocol, ReplicaCore

    loop = asyncio.get_running_loop()
    core = ReplicaCore(loop, UserCallable(Linear(), False, None, None), 64, b"bench-token")
    server = await loop.create_server(lambda: ChannelServerProtocol(core), "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1]


def replica_main() -> None:
    import uvloop

    async def run():
        print(f"PORT {await _replica_port()}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(run())


async def _serve(replica_port: int, log_dir: str) -> int:
    from prometheus_client import CollectorRegistry

    from gateway.config import GatewayConfig
    from gateway.http_app import build_app
    from gateway.metrics import GatewayMetrics
    from replicas.routing.router import Router
    from replicas.routing.table import (
        AppRoute,
        DeploymentRoute,
        ReplicaInfo,
        RoutingTable,
        VersionRoute,
    )

    router = Router(asyncio.get_running_loop())
    replica = ReplicaInfo("r1", "quickstart", "linear", "v1", "127.0.0.1", replica_port)
    route = DeploymentRoute("quickstart", "linear", (VersionRoute("v1", 100, (replica,)),))
    router.update_table(RoutingTable(version=1, apps=(AppRoute("quickstart", "/linear", "linear"),),
                                     deployments={("quickstart", "linear"): route}, channel_token=b"bench-token"))
    config = GatewayConfig(port=0, access_log=True, log_dir=log_dir)
    metrics = GatewayMetrics(CollectorRegistry())
    if "resources" in inspect.signature(build_app).parameters:  # cleanup contexts (after issue 7)
        from gateway.app_state import ADMIN, ROUTER
        from gateway.lifecycle import Listener, access_log_context, provide

        app = build_app(config, metrics, [access_log_context(log_dir), provide(ROUTER, router), provide(ADMIN, None)])
        return await Listener(app, config).start("127.0.0.1", 0)
    from aiohttp import (
        web,  # the earlier build_app(config, router, metrics, admin, access_log)
    )

    from gateway.access_log import open_access_log

    access_log, _ = open_access_log(os.path.join(log_dir, f"access-{os.getpid()}.jsonl"))
    runner = web.AppRunner(build_app(config, router, metrics, None, access_log), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, reuse_port=True, backlog=4096)
    await site.start()
    return runner.addresses[0][1]


def serve_main() -> None:
    import uvloop

    replica = subprocess.Popen([sys.executable, __file__, "--replica"], stdout=subprocess.PIPE, text=True)
    port = int(replica.stdout.readline().split()[1])
    log_dir = tempfile.mkdtemp(prefix="rghp-")

    async def run():
        print(f"READY {await _serve(port, log_dir)}", flush=True)
        await asyncio.Event().wait()

    try:
        uvloop.run(run())
    finally:
        replica.kill()


# ----------------------------------------------------------------------------------------------- the driver

def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_tree(tree: Path, connections: int, duration_s: int) -> dict:
    from bench.gateway import POST_LUA, _cpu_ticks_by_pid, foreign_cpu, parse_wrk

    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, str(BENCH / "gateway_hotpath.py"), "--serve"], cwd=tree, env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = int(server.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}/linear"
        subprocess.run(["wrk", "-t2", "-c16", "-d2s", "-s", str(POST_LUA), url], capture_output=True, check=False)
        before, started, cpu_before = _cpu_ticks_by_pid(), time.monotonic(), _cpu_seconds(server.pid)
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s",
                              str(POST_LUA), url], capture_output=True, text=True, check=False).stdout
        wall = time.monotonic() - started
        cpu = _cpu_seconds(server.pid) - cpu_before
        children = subprocess.run(["pgrep", "-s", str(server.pid)], capture_output=True, text=True,
                                  check=False).stdout.split()
        parsed = parse_wrk(out)
        requests = parsed["rps"] * duration_s
        parsed["gateway_cpu_us_per_request"] = round(cpu / requests * 1e6, 1) if requests else None
        parsed["other_cpu_pct"] = foreign_cpu(before, _cpu_ticks_by_pid(), {server.pid, *map(int, children)}, wall)
        return parsed
    finally:
        os.killpg(server.pid, 9)
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", default=f"{ROOT},{ROOT}", help="two comma-separated checkouts (first: baseline)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replica", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica:
        replica_main()
        return 0
    if args.serve:
        serve_main()
        return 0
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    runs = []
    for round_ in range(args.rounds):
        for index, tree in enumerate(trees):
            parsed = run_tree(tree, args.connections, args.duration)
            runs.append({"tree": index, "round": round_, **{k: parsed.get(k) for k in
                                                            ("rps", "p50_ms", "p99_ms", "errors", "gateway_cpu_us_per_request",
                                                             "other_cpu_pct")}})
            print(f"round {round_} tree {index} ({tree}): {parsed['rps']:.0f} req/s, p50 {parsed['p50_ms']:.2f} ms, "
                  f"p99 {parsed['p99_ms']:.2f} ms, gateway CPU {parsed['gateway_cpu_us_per_request']} us/request, other processes {parsed['other_cpu_pct']:.0f}% CPU", flush=True)
    summary = {"trees": [str(t) for t in trees], "connections": args.connections, "duration_s": args.duration}
    for index in range(len(trees)):
        mine = [r for r in runs if r["tree"] == index]
        summary[f"tree{index}_rps_median"] = round(statistics.median(r["rps"] for r in mine), 1)
        summary[f"tree{index}_p99_ms_median"] = round(statistics.median(r["p99_ms"] for r in mine), 3)
        summary[f"tree{index}_cpu_us_per_request_median"] = round(statistics.median(
            r["gateway_cpu_us_per_request"] for r in mine), 1)
    summary["ratio_rps"] = round(summary["tree1_rps_median"] / summary["tree0_rps_median"], 3)
    summary["ratio_cpu_per_request"] = round(summary["tree1_cpu_us_per_request_median"]
                                             / summary["tree0_cpu_us_per_request_median"], 3)
    summary["ratio_p99"] = round(summary["tree1_p99_ms_median"] / summary["tree0_p99_ms_median"], 3)
    summary["runs"] = runs
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
