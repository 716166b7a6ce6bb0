"""The gateway's request path alone, for two source trees, interleaved: did a refactor cost anything?

For each tree (a checkout of this repository) and each round, one process serves the quickstart's model the
way a gateway does, without Ray: a replica process (the real channel server) and, in the serving process, the
router and the gateway's aiohttp app from that tree (its `build_app`, access log on, load reports counted
where the tree has them, as the platform's gateways do; uvloop). wrk sends the
quickstart body at `--connections` for `--duration` seconds. Trees alternate (A B A B ...), so a machine whose
load drifts hurts both alike; the table shows every run and the other processes' CPU meanwhile.

The serving process imports the project from the tree under test only (this script's own tree is taken off
its path), so a tree from before issue 7 (98d65a8) is served by its own router and app.

Per run: req/s, p50/p99, and the serving process's CPU time (user + system, from /proc) over the requests wrk
completed: CPU-us per request, the figure least moved by other processes' load. Last line: one JSON object with
per-tree medians (and the CPU figure's min/max), the later trees' ratios to the first, the baseline (ratio_rps,
ratio_p99, ratio_cpu_per_request), the load average and every run.

    .venv/bin/python bench/gateway_hotpath.py --baseline-tree /tmp/gw-base --rounds 5
    .venv/bin/python bench/gateway_hotpath.py --trees /tmp/gw-base,/work/main,. --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
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
POST_LUA = BENCH / "post.lua"
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]


# ------------------------------------------------------------------------------------- in the serving process
# These run in a process of their own whose sys.path starts with the tree under test (`_use_tree`), and import
# the project only inside functions, so every project module comes from that tree. The module locations moved in
# issue 7 (gateway/router.py -> replicas/routing/, gateway/server.py -> gateway/http_app.py); the ImportError
# branches serve a tree from before it (98d65a8 and earlier).

def _use_tree(tree: str) -> None:
    """Put `tree` first on sys.path, drop this file's own tree (unless it is the same) and the venv's editable
    install of the project: its finder would fill a module the tree lacks (replicas.routing in an old tree) from
    the checkout it was installed from, mixing two trees in one process."""
    root = Path(tree).resolve()
    sys.path[:] = [str(root)] + [p for p in sys.path if "__editable__" not in p
                                 and Path(p or ".").resolve() not in (root, ROOT, BENCH)]
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]


async def _replica_port() -> int:
    from deploy.examples.models import Linear
    from replicas.callable import UserCallable

    try:
        from replicas.channel.server import ChannelServerProtocol, ReplicaCore
    except ImportError:
        from replicas.server import ChannelServerProtocol, ReplicaCore

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


# The quickstart deployment's settings (deploy/examples/quickstart.yaml, the spec's defaults for the rest), given
# in full: since issue 7 the table has no defaults of its own.
QUICKSTART_DEPLOYMENT = {"max_ongoing_requests": 64, "max_queued_requests": 256, "request_timeout_s": 10.0,
                         "idempotent": True, "allow_pinning": True, "max_retries": 3, "hedge_after_s": None}


def _routing():
    """(Router, its table's classes) from the tree under test."""
    try:
        from replicas.routing import table
        from replicas.routing.router import Router
    except ImportError:
        from gateway import table
        from gateway.router import Router
    return Router, table


async def _serve(replica_port: int, log_dir: str) -> int:
    from prometheus_client import CollectorRegistry

    from gateway.config import GatewayConfig
    from gateway.metrics import GatewayMetrics

    Router, table = _routing()
    router = Router(asyncio.get_running_loop())
    replica = table.ReplicaInfo("r1", "quickstart", "linear", "v1", "127.0.0.1", replica_port)
    route = table.DeploymentRoute("quickstart", "linear", (table.VersionRoute("v1", 100, (replica,)),),
                                  **QUICKSTART_DEPLOYMENT)
    router.update_table(table.RoutingTable(
        version=1, apps=(table.AppRoute("quickstart", "/linear", "linear"),),
        deployments={("quickstart", "linear"): route}, channel_token=b"bench-token"))
    config = GatewayConfig(port=0, access_log=True, log_dir=log_dir)
    metrics = GatewayMetrics(CollectorRegistry())
    try:  # cleanup contexts and the Listener (issue 7 and later), as gateway/actor.py serves
        from gateway.app_state import ADMIN, ROUTER
        from gateway.http_app import build_app
        from gateway.lifecycle import Listener, access_log_context, provide
    except ImportError:  # before: build_app(config, router, metrics, admin, access_log) on a TCPSite
        return await _serve_before(config, router, metrics, log_dir)
    app = build_app(config, metrics, [access_log_context(log_dir), provide(ROUTER, router), provide(ADMIN, None),
                                      *_load_reports(router)])
    return await Listener(app, config).start("127.0.0.1", 0)


def _load_reports(router) -> list:
    """The per-second load reports the platform's gateways make (trees with gateway/load_report.py): every request
    is counted for the scaler, and once a second the rows are built (not sent: there is no scaler here)."""
    try:
        from gateway.load_report import LOAD_REPORTER, LoadReporter
    except ImportError:
        return []

    async def context(app):
        reporter = app[LOAD_REPORTER] = LoadReporter("bench")

        async def every_second():
            while True:
                await asyncio.sleep(1.0)
                reporter.rows(int(time.time()) - 1, router.load_by_version())

        task = asyncio.get_running_loop().create_task(every_second())
        yield
        task.cancel()

    return [context]


async def _serve_before(config, router, metrics, log_dir: str) -> int:
    from aiohttp import web

    from gateway.logs import open_access_log
    from gateway.server import build_app

    access_log, _ = open_access_log(os.path.join(log_dir, f"access-{os.getpid()}.jsonl"))
    runner = web.AppRunner(build_app(config, router, metrics, None, access_log), access_log=None,
                           handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, reuse_port=True, backlog=4096)
    await site.start()
    return runner.addresses[0][1]


def serve_main(tree: str) -> None:
    import uvloop

    replica = subprocess.Popen([sys.executable, __file__, "--replica", "--tree", tree], stdout=subprocess.PIPE,
                               text=True)
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


def _wrk(url: str, connections: int, duration_s: int) -> str:
    return subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(POST_LUA),
                           url], capture_output=True, text=True, check=False).stdout


def run_tree(tree: Path, connections: int, duration_s: int) -> dict:
    """One run of one tree: its serving process under wrk; the serving process's CPU over wrk's request count.

    The CPU figure is the serving process's own (user + system, all its threads, read from /proc before and after
    the measured wrk run), divided by the requests wrk completed in that run: other processes' load moves it far
    less than req/s (it still rises a little on a loaded machine: caches, fewer requests per loop pass)."""
    from bench.gateway import _cpu_ticks_by_pid, foreign_cpu, parse_wrk

    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, str(BENCH / "gateway_hotpath.py"), "--serve", "--tree", str(tree)],
                              cwd=tree, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = int(server.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}/linear"
        _wrk(url, connections, 2)  # warm-up: connections to the replica, caches, the first access-log writes
        children = [int(pid) for pid in subprocess.run(["pgrep", "-s", str(server.pid)], capture_output=True,
                                                       text=True, check=False).stdout.split()]
        replica = next(pid for pid in children if pid != server.pid)
        before, started = _cpu_ticks_by_pid(), time.monotonic()
        cpu_before, replica_before = _cpu_seconds(server.pid), _cpu_seconds(replica)
        out = _wrk(url, connections, duration_s)
        cpu, replica_cpu = _cpu_seconds(server.pid) - cpu_before, _cpu_seconds(replica) - replica_before
        wall = time.monotonic() - started
        parsed = parse_wrk(out)
        requests = parsed["requests"]
        parsed["gateway_cpu_us_per_request"] = round(cpu / requests * 1e6, 2) if requests else None
        parsed["replica_cpu_us_per_request"] = round(replica_cpu / requests * 1e6, 2) if requests else None
        parsed["other_cpu_pct"] = foreign_cpu(before, _cpu_ticks_by_pid(), {server.pid, *children}, wall)
        parsed["load1"] = round(os.getloadavg()[0], 2)
        return parsed
    finally:
        os.killpg(server.pid, 9)
        server.wait()


_RUN_KEYS = ("rps", "p50_ms", "p99_ms", "requests", "errors", "gateway_cpu_us_per_request",
             "replica_cpu_us_per_request", "other_cpu_pct", "load1")


def summarise(trees: list[Path], runs: list[dict], args) -> dict:
    """Per-tree medians (and the CPU figure's spread), and the later trees' ratios to the first (the baseline)."""
    summary: dict = {"trees": [str(t) for t in trees], "connections": args.connections,
                     "duration_s": args.duration, "rounds": args.rounds}
    for index in range(len(trees)):
        mine = [r for r in runs if r["tree"] == index]
        cpu = [r["gateway_cpu_us_per_request"] for r in mine]
        summary[f"tree{index}_rps_median"] = round(statistics.median(r["rps"] for r in mine), 1)
        summary[f"tree{index}_p99_ms_median"] = round(statistics.median(r["p99_ms"] for r in mine), 3)
        summary[f"tree{index}_cpu_us_per_request_median"] = round(statistics.median(cpu), 2)
        summary[f"tree{index}_cpu_us_per_request_min_max"] = [min(cpu), max(cpu)]
        summary[f"tree{index}_replica_cpu_us_per_request_median"] = round(statistics.median(
            r["replica_cpu_us_per_request"] for r in mine), 2)
    for index in range(1, len(trees)):
        suffix = "" if index == 1 else f"_tree{index}"
        for key, name in (("rps_median", "ratio_rps"), ("p99_ms_median", "ratio_p99"),
                          ("cpu_us_per_request_median", "ratio_cpu_per_request")):
            summary[name + suffix] = round(summary[f"tree{index}_{key}"] / summary[f"tree0_{key}"], 3)
    summary["load_average"] = [round(x, 2) for x in os.getloadavg()]
    summary["runs"] = runs
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", default=None, help="comma-separated checkouts; the first is the baseline "
                        "(default: this tree twice, or --baseline-tree then this tree)")
    parser.add_argument("--baseline-tree", default=None, help="a checkout to compare this tree with "
                        "(e.g. `git worktree add /tmp/gw-base 98d65a8`): same as --trees BASELINE,.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replica", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica or args.serve:
        _use_tree(args.tree)
        replica_main() if args.replica else serve_main(args.tree)
        return 0
    if args.trees:
        trees = [Path(t).resolve() for t in args.trees.split(",")]
    else:
        trees = [Path(args.baseline_tree).resolve() if args.baseline_tree else ROOT, ROOT]
    runs = []
    for round_ in range(args.rounds):
        for index, tree in enumerate(trees):
            parsed = run_tree(tree, args.connections, args.duration)
            runs.append({"tree": index, "round": round_, **{k: parsed.get(k) for k in _RUN_KEYS}})
            print(f"round {round_} tree {index} ({tree}): {parsed['rps']:.0f} req/s, p50 {parsed['p50_ms']:.2f} ms, "
                  f"p99 {parsed['p99_ms']:.2f} ms, gateway CPU {parsed['gateway_cpu_us_per_request']} us/request "
                  f"(replica {parsed['replica_cpu_us_per_request']}), "
                  f"other processes {parsed['other_cpu_pct']:.0f}% CPU, load {parsed['load1']}", flush=True)
    summary = summarise(trees, runs, args)
    for index, tree in enumerate(trees[1:], 1):
        suffix = "" if index == 1 else f"_tree{index}"
        print(f"tree {index} / tree 0: CPU per request {summary['ratio_cpu_per_request' + suffix]:.3f} "
              f"({summary[f'tree{index}_cpu_us_per_request_median']} / {summary['tree0_cpu_us_per_request_median']} "
              f"us, medians of {args.rounds}), req/s {summary['ratio_rps' + suffix]:.3f}", flush=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
