"""Open-loop fixed-rate HTTP load for bench/chaos.py: every request's send time, latency and status.

Requests are scheduled at exactly `rate` per second from the start, whether or not earlier ones have answered
(open loop: a stalled server cannot slow the client down and hide its own latency). Latency is measured from the
*scheduled* send time, so a client that fell behind its schedule (or waited for a free connection) charges that
wait to the request rather than hiding it (no coordinated omission). Connections are kept alive in a pool
(at most --connections); a connection that fails is dropped and the next request opens a new one, so after a
gateway process dies new requests land on the surviving one. Status 0 = connection error or client timeout.

Writes one JSON object to --out: {"t": [wall-clock scheduled send times], "lat": [seconds], "status": [int],
"replica": [index into "replicas" or -1], "replicas": [X-Raygate-Replica values], "lag_max_s": ..., ...}.

    python bench/_chaos_load.py --url http://127.0.0.1:8000/chaos --rate 100 --duration 15 --out /tmp/x.json
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/gateway.py would shadow the `gateway` package: drop bench/ from sys.path (and put the root first).
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, os.path.dirname(
    os.path.abspath(__file__)))]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

BODY = json.dumps({"x": [0.5 * (i + 1) for i in range(16)]}).encode()


async def run(url: str, rate: float, duration_s: float, timeout_s: float, connections: int, start_at: float) -> dict:
    import aiohttp

    n = int(round(rate * duration_s))
    t_sched = [0.0] * n
    lat = [0.0] * n
    status = [0] * n
    replica = [-1] * n
    replicas: dict[str, int] = {}
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Content-Type": "application/json"}
    lag_max = 0.0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)) as s:
        async def one(i: int, due_perf: float) -> None:
            try:
                async with s.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    lat[i] = time.perf_counter() - due_perf
                    status[i] = resp.status
                    rid = resp.headers.get("X-Raygate-Replica")
                    if rid:
                        replica[i] = replicas.setdefault(rid, len(replicas))
            except Exception as exc:  # noqa: BLE001 - every failure is a data point: status 0
                lat[i] = time.perf_counter() - due_perf
                status[i] = 0
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1

        # Align the schedule to the wall clock start the orchestrator asked for (so fault times line up).
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        wall0, perf0 = time.time(), time.perf_counter()
        interval = 1.0 / rate
        tasks = set()
        i = 0
        while i < n:
            now = time.perf_counter()
            while i < n and perf0 + i * interval <= now:
                due = perf0 + i * interval
                lag_max = max(lag_max, now - due)
                t_sched[i] = wall0 + i * interval
                task = asyncio.ensure_future(one(i, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, perf0 + i * interval - time.perf_counter()))
        if tasks:
            await asyncio.wait(list(tasks), timeout=timeout_s + 5)
    return {"t": [round(x, 6) for x in t_sched], "lat": [round(x, 6) for x in lat], "status": status,
            "replica": replica, "replicas": list(replicas), "errors": errors, "lag_max_s": round(lag_max, 4),
            "rate": rate, "duration_s": duration_s, "start": wall0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--timeout", type=float, default=15.0, help="client timeout per request (s)")
    parser.add_argument("--connections", type=int, default=512, help="most open connections")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock time to send the first request")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, args.rate, args.duration, args.timeout, args.connections, args.start_at))
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, separators=(",", ":"))
    os.replace(tmp, args.out)
    ok = sum(1 for s in result["status"] if s == 200)
    print(f"LOAD done: {len(result['status'])} sent, {ok} ok, lag max {result['lag_max_s']} s", flush=True)


if __name__ == "__main__":
    main()
