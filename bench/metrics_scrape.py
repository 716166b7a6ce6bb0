"""Does scraping /metrics slow the requests? The quickstart at a steady request rate, with no scraper, with
/-/healthz polled at the scrape rate (the control: same connections and rate, nothing rendered), and with
/metrics scraped at that rate; one run, one machine, one platform.

Starts raygate as bench/gateway.py does (bench/_raygate_server.py: embedded Redis, local Ray, the quickstart;
`--gateways N`, default: the shipped default), then, for each phase, sends POST /linear open-loop at `--rps`
from this process while a second process polls the phase's path at `--scrape-rps`, each on its own connection.

Prints a table, then (last line) one JSON object: p99_ms_no_scrape, p99_ms_healthz, p99_ms_metrics,
ratio_metrics_to_healthz (request p99 with /metrics scraped over with /-/healthz polled), scrape_p99_ms, the
load of other processes on the machine during each phase (foreign_cpu_pct), and per-phase details.

    .venv/bin/python bench/metrics_scrape.py                    # 10 s phases, 100 req/s, 200 scrapes/s
    .venv/bin/python bench/metrics_scrape.py --duration 5 --gateways 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file lives next to bench/gateway.py, which would shadow the `gateway` package: bench/ off sys.path.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]

from bench._ready import BODY
from bench.gateway import Server, _cpu_ticks_by_pid, _pids_in, foreign_cpu


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _open_loop(url: str, rps: float, duration_s: float, method: str = "POST") -> tuple[list[float], int]:
    """Requests at a fixed rate whatever the answers' latency; (latencies in seconds, errors)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0

    async def one(session) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            async with session.request(method, url, data=BODY if method == "POST" else None) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
                    return
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(int(rps * duration_s)):
            delay = start + i / rps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(session)))
        await asyncio.gather(*tasks)
    return latencies, errors


def _scraper(url: str, rps: float, duration_s: float, out) -> None:
    latencies, errors = asyncio.run(_open_loop(url, rps, duration_s, "GET"))
    out.put((latencies, errors))


def run_phase(base: str, path: str | None, args) -> dict:
    queue = multiprocessing.get_context("spawn").Queue()
    scraper = None
    if path is not None:
        scraper = multiprocessing.get_context("spawn").Process(
            target=_scraper, args=(base + path, args.scrape_rps, args.duration, queue), daemon=True)
        scraper.start()
    before, started = _cpu_ticks_by_pid(), time.monotonic()
    latencies, errors = asyncio.run(_open_loop(base + "/linear", args.rps, args.duration))
    wall = time.monotonic() - started
    ours = {os.getpid()} | ({scraper.pid} if scraper else set()) | set(_pids_in(args.server_pgid))
    load = foreign_cpu(before, _cpu_ticks_by_pid(), ours, wall)
    row = {"phase": path or "none", "requests": len(latencies) + errors, "errors": errors,
           "p50_ms": _ms(_percentile(latencies, 0.5)), "p99_ms": _ms(_percentile(latencies, 0.99)),
           "max_ms": _ms(max(latencies, default=None)), "foreign_cpu_pct": load}
    if scraper is not None:
        scrape_latencies, scrape_errors = queue.get(timeout=args.duration + 60)
        scraper.join(30)
        row.update(scrapes=len(scrape_latencies) + scrape_errors, scrape_errors=scrape_errors,
                   scrape_p99_ms=_ms(_percentile(scrape_latencies, 0.99)))
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--rps", type=float, default=100.0, help="POST /linear per second (default 100)")
    parser.add_argument("--scrape-rps", type=float, default=200.0, help="scrapes per second (default 200)")
    parser.add_argument("--gateways", type=int, default=None, help="gateway processes (default: the shipped one)")
    args = parser.parse_args(argv)

    from deploy.embedded import free_port

    work = Path(tempfile.mkdtemp(prefix="rgm-", dir="/tmp"))
    port = free_port()
    cmd = [sys.executable, str(BENCH / "_raygate_server.py"), "--port", str(port), "--work-dir", str(work / "rg")]
    if args.gateways is not None:
        cmd += ["--gateways", str(args.gateways)]
    server = Server("raygate", cmd, work / "raygate.log").start()
    rows = []
    try:
        server.wait_ready(240)
        args.server_pgid = server.proc.pid
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_open_loop(base + "/linear", args.rps, 2.0))  # warm-up
        for path in (None, "/-/healthz", "/metrics"):
            rows.append(run_phase(base, path, args))
    finally:
        notes = server.stop()
    for note in notes:
        print("note:", note)
    print(f"{'phase':<12} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'scrapes':>8} {'scrape p99':>10} {'other cpu %':>11}")
    for row in rows:
        print(f"{row['phase']:<12} {row['requests']:>8} {row['errors']:>6} {row['p50_ms']!s:>8} {row['p99_ms']!s:>8} "
              f"{row['max_ms']!s:>8} {row.get('scrapes', '-')!s:>8} {row.get('scrape_p99_ms', '-')!s:>10} "
              f"{row['foreign_cpu_pct']!s:>11}")
    by_phase = {row["phase"]: row for row in rows}
    healthz, metrics = by_phase["/-/healthz"]["p99_ms"], by_phase["/metrics"]["p99_ms"]
    print(json.dumps({
        "p99_ms_no_scrape": by_phase["none"]["p99_ms"], "p99_ms_healthz": healthz, "p99_ms_metrics": metrics,
        "ratio_metrics_to_healthz": round(metrics / healthz, 3) if healthz and metrics else None,
        "scrape_p99_ms": by_phase["/metrics"].get("scrape_p99_ms"),
        "foreign_cpu_pct": {row["phase"]: row["foreign_cpu_pct"] for row in rows},
        "rps": args.rps, "scrape_rps": args.scrape_rps, "duration_s": args.duration,
        "gateways": args.gateways or "default", "phases": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
