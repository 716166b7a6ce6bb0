"""Event pipeline benchmark: events/s per stage replica, end-to-end p50/p99 at a fixed rate, and a plain Redis
Streams consumer loop as the baseline, in one run on one machine with its own Redis.

Pipeline (sources web and app, both Redis Streams):
    filter  "event.kind == 'buy' and event.amount > 0"   (web; 1 in 5 web events is a view and is dropped)
    convert {user, cents: event.amount * 100, kind}       (web)
    join    web + app by user, window 5 s, emit_left      (every buy has its app partner)
    sink    a stream, deduplicated by output id

Parts, one after the other:
  stages     each stage class alone, called with batches of 64 through a JSON round trip (what a replica does
             per call, without the network): events/s of one stage replica on one core
  pipeline   N events produced up front, one consumer process running all stages in-process (the consumer and
             every stage "replica" share one core): events/s from first read to the last expected output
  baseline   the same N events through one plain loop: XREADGROUP 64, JSON decode, the filter in Python, XADD,
             XACK; no stages, no dedupe, no join
  latency    a producer process appends web/app pairs at --rate events/s for --seconds; latency of each output =
             sink entry time - later source entry time (both Redis server milliseconds); the same for the
             baseline loop (sink entry - source entry)

Stage calls go in-process here (no router hop); on the platform each stage call adds one round trip through the
router. Figures per core are events per CPU-second of the consumer process (Redis' own CPU not counted; the same
for the baseline).

    .venv/bin/python bench/events.py             # 20,000 events, 200 events/s for 10 s
    .venv/bin/python bench/events.py --quick     # 6,000 events, 200 events/s for 4 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

TARGET_PER_CORE = 270.0  # events/s per core (the seed's 2,100 per 8-core actor, scaled)
TARGET_P99_MS = 90.0


def pipeline_spec(tag: str):
    from gateway.events.spec import PipelineSpec

    return PipelineSpec.model_validate({
        "name": f"bench-{tag}",
        "sources": [{"name": "web", "stream": f"bench:{tag}:web"}, {"name": "app", "stream": f"bench:{tag}:app"}],
        "stages": [
            {"name": "only_buys", "filter": "event.kind == 'buy' and event.amount > 0", "sources": ["web"]},
            {"name": "shape", "convert": {"user": "event.user", "cents": "event.amount * 100", "kind": "event.kind"},
             "sources": ["web"]},
            {"name": "pair", "join": {"sources": ["web", "app"], "key": "user", "window_s": 5,
                                      "unmatched": "emit_left"}},
        ],
        "sink": {"stream": f"bench:{tag}:out"},
        "batch_size": 64, "max_in_flight": 4, "block_ms": 5,
    })


def web_event(i: int) -> bytes:
    return orjson.dumps({"kind": "view" if i % 5 == 0 else "buy", "amount": 1 + i % 9, "user": f"u{i}"})


def app_event(i: int) -> bytes:
    return orjson.dumps({"user": f"u{i}", "device": "ios" if i % 2 else "android"})


def expected_pairs(users: range) -> int:
    return sum(1 for i in users if i % 5 != 0)


def gc_pauses() -> list[float]:
    """Records the length of every garbage collection from now on (seconds), to tell GC stalls in the tail."""
    pauses: list[float] = []
    started = [0.0]

    def callback(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])
    gc.callbacks.append(callback)
    return pauses


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- producer (a process of its own in the latency runs) ---------------------------------------------------------

def produce_upfront(url: str, tag: str, pairs: int) -> int:
    import redis

    client = redis.Redis.from_url(url)
    with client.pipeline(transaction=False) as pipe:
        for i in range(pairs):
            pipe.xadd(f"bench:{tag}:web", {"data": web_event(i)})
            pipe.xadd(f"bench:{tag}:app", {"data": app_event(i)})
            if i % 500 == 499:
                pipe.execute()
        pipe.execute()
    client.close()
    return 2 * pairs


def produce_paced(url: str, tag: str, rate: float, seconds: float) -> None:
    """Pairs at `rate` events/s (rate/2 pairs/s), in 5 ms ticks."""
    import redis

    client = redis.Redis.from_url(url)
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate / 2) + 1
        while sent < due:
            client.xadd(f"bench:{tag}:web", {"data": web_event(sent)})
            client.xadd(f"bench:{tag}:app", {"data": app_event(sent)})
            sent += 1
        time.sleep(0.005)
    print(sent, flush=True)


def start_producer(url: str, tag: str, rate: float, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--produce", url, tag, str(rate), str(seconds)],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})


# -- the parts ---------------------------------------------------------------------------------------------------

def bench_stages(events: int) -> dict[str, float]:
    from gateway.events.local import LocalStages

    pipeline = pipeline_spec("stages")
    local = LocalStages.for_pipeline(pipeline)
    out = {}
    batches = []
    for start in range(0, events, 64):
        batch = []
        for i in range(start, min(start + 64, events)):
            batch.append({"id": f"web:{i}-0", "source": "web", "ts": 1.0, "data": orjson.loads(web_event(i))})
            batch.append({"id": f"app:{i}-0", "source": "app", "ts": 1.0, "data": orjson.loads(app_event(i))})
        batches.append(batch)
    for stage in pipeline.stages:
        instance = local.stage(stage.name)
        began = time.perf_counter()
        for batch in batches:
            payload = orjson.loads(orjson.dumps({"events": batch, "watermark": {"web": 1.0, "app": 1.0}}))
            answer = instance(payload)
            orjson.dumps(answer)
        out[stage.name] = 2 * events / (time.perf_counter() - began)
    return out


def producer_done(producer, expect) -> int | None:
    """None while the producer runs; then the outputs expected from what it sent."""
    if producer.poll() is None:
        return None
    return expect(int(producer.stdout.read().strip() or 0))


async def run_pipeline(url: str, tag: str, until_outputs: int, timeout_s: float, start=None, expect=None) -> dict:
    """Run the consumer until `until_outputs` are in the sink; with `start` (called once the consumer leads, it
    starts the producer), until the producer has exited and `expect(sent)` outputs are in."""
    import redis.asyncio as aioredis
    from prometheus_client import CollectorRegistry

    from gateway.events.eventing import PipelineConsumer
    from gateway.events.local import LocalStages
    from gateway.events.metrics import EventMetrics

    pipeline = pipeline_spec(tag)
    client = aioredis.Redis.from_url(url)
    consumer = PipelineConsumer(pipeline, client, LocalStages.for_pipeline(pipeline).call, "bench",
                                metrics=EventMetrics(CollectorRegistry()))
    await consumer.start()
    began, cpu0 = time.perf_counter(), cpu_s()
    task = asyncio.create_task(consumer.run())
    producer = None
    if start is not None:
        while not consumer.leading:
            await asyncio.sleep(0.01)
        producer = start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if producer is not None and until_outputs == 0:
            until_outputs = producer_done(producer, expect) or 0
        if until_outputs and await client.xlen(pipeline.sink.stream) >= until_outputs:
            break
        await asyncio.sleep(0.01)
    wall, cpu = time.perf_counter() - began, cpu_s() - cpu0
    consumer.stop()
    await asyncio.wait_for(task, 30)
    entries = await client.xrange(pipeline.sink.stream)
    await client.aclose()
    return {"wall_s": wall, "cpu_s": cpu, "entries": entries, "expected": until_outputs}


async def run_baseline(url: str, tag: str, until_outputs: int, timeout_s: float, start=None, expect=None) -> dict:
    """One plain consumer loop: read, decode, filter, XADD, XACK."""
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    client = aioredis.Redis.from_url(url)
    streams = {f"bench:{tag}:web": ">", f"bench:{tag}:app": ">"}
    for stream in streams:
        try:
            await client.xgroup_create(stream, "plain", id="0", mkstream=True)
        except ResponseError:
            pass
    out = f"bench:{tag}:out"
    producer = start() if start is not None else None
    began, cpu0 = time.perf_counter(), cpu_s()
    written = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if producer is not None and until_outputs == 0:
            until_outputs = producer_done(producer, expect) or 0
        if until_outputs and written >= until_outputs:
            break
        reply = await client.xreadgroup("plain", "one", streams, count=64, block=5)
        async with client.pipeline(transaction=False) as pipe:
            for stream, entries in reply or []:
                ids = []
                for entry_id, fields in entries:
                    data = orjson.loads(fields[b"data"])
                    ids.append(entry_id)
                    if data.get("kind", "buy") == "buy":
                        pipe.xadd(out, {"id": entry_id, "data": orjson.dumps(data)})
                        written += 1
                if ids:
                    pipe.xack(stream, "plain", *ids)
            await pipe.execute()
    wall, cpu = time.perf_counter() - began, cpu_s() - cpu0
    entries = await client.xrange(out)
    await client.aclose()
    return {"wall_s": wall, "cpu_s": cpu, "entries": entries, "written": written}


async def baseline_entries(url: str, tag: str):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    entries = await client.xrange(f"bench:{tag}:out")
    await client.aclose()
    return entries


def entry_ms(entry_id) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition(":")[2].split("-")[0] if ":" in text else text.split("-")[0])


def pipeline_latencies(entries) -> list[float]:
    out = []
    for sink_id, fields in entries:
        output_id = fields[b"id"].decode()
        if "+" in output_id:
            out.append(entry_ms(sink_id) - max(entry_ms(m) for m in output_id.split("+")))
    return out


def baseline_latencies(entries) -> list[float]:
    return [entry_ms(sink_id) - entry_ms(fields[b"id"]) for sink_id, fields in entries]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def count_outputs(entries) -> tuple[int, int]:
    ids = [fields[b"id"].decode() for _, fields in entries]
    return len(set(ids)), len(ids) - len(set(ids))


async def main_async(args) -> dict:
    from deploy.embedded import EmbeddedRedis

    data_dir = Path(tempfile.mkdtemp(prefix="rg-events-bench-"))
    server = EmbeddedRedis(data_dir=data_dir).start()
    try:
        url = server.url
        stage_rates = bench_stages(args.events // 2)
        pairs = args.events // 2
        want = expected_pairs(range(pairs))

        produce_upfront(url, "tput", pairs)
        tput = await run_pipeline(url, "tput", want, 300)
        unique, dup_tput = count_outputs(tput["entries"])
        lost_tput = want - unique

        produce_upfront(url, "base", pairs)
        base = await run_baseline(url, "base", want, 300)
        del tput["entries"], base["entries"]  # keep the latency runs' heap small: a full GC scans all of it
        gc.collect()
        pauses = gc_pauses()

        lat = await run_pipeline(url, "lat", 0, args.seconds + 30,
                                 lambda: start_producer(url, "lat", args.rate, args.seconds),
                                 lambda sent: expected_pairs(range(sent)))
        want_lat = lat["expected"]
        unique_lat, dup_lat = count_outputs(lat["entries"])
        latencies = pipeline_latencies(lat["entries"])

        await run_baseline(url, "blat", 0, args.seconds + 30,
                           lambda: start_producer(url, "blat", args.rate, args.seconds),
                           lambda sent: expected_pairs(range(sent)) + sent)
        base_latencies = baseline_latencies((await baseline_entries(url, "blat")))
    finally:
        server.stop()
    events = 2 * pairs
    return {
        "events": events,
        "stage_events_per_s": {k: round(v) for k, v in stage_rates.items()},
        "events_per_s_per_replica": round(events / tput["wall_s"]),
        "events_per_cpu_s": round(events / tput["cpu_s"]) if tput["cpu_s"] else None,
        "baseline_events_per_s": round(events / base["wall_s"]),
        "baseline_events_per_cpu_s": round(events / base["cpu_s"]) if base["cpu_s"] else None,
        "rate_events_per_s": args.rate,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "baseline_p50_ms": percentile(base_latencies, 0.50),
        "baseline_p99_ms": percentile(base_latencies, 0.99),
        "lost": lost_tput + max(0, want_lat - unique_lat),
        "duplicates_after_dedupe": dup_tput + dup_lat,
        "latency_outputs": len(latencies),
        "gc_max_pause_ms": round(1000 * max(pauses, default=0.0), 1),
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def print_table(r: dict) -> None:
    print(f"{'part':<34}{'figure':>14}")
    for name, value in r["stage_events_per_s"].items():
        print(f"{'stage ' + name + ' (events/s, 1 replica)':<34}{value:>14,}")
    print(f"{'pipeline, 1 process (events/s)':<34}{r['events_per_s_per_replica']:>14,}")
    print(f"{'pipeline (events per CPU-s)':<34}{r['events_per_cpu_s'] or 0:>14,}")
    print(f"{'baseline loop (events/s)':<34}{r['baseline_events_per_s']:>14,}")
    print(f"{'baseline loop (events per CPU-s)':<34}{r['baseline_events_per_cpu_s'] or 0:>14,}")
    print(f"{'ratio pipeline / baseline':<34}{r['events_per_s_per_replica'] / r['baseline_events_per_s']:>14.2f}")
    print(f"at {r['rate_events_per_s']} events/s: pipeline p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms "
          f"(mean {r['mean_ms']}, {r['latency_outputs']} outputs); baseline p50 {r['baseline_p50_ms']} ms "
          f"p99 {r['baseline_p99_ms']} ms")
    print(f"lost {r['lost']}, duplicates after dedupe {r['duplicates_after_dedupe']}; "
          f"{r['cores']} cores, load {r['load_avg_1m']}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":
        produce_paced(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events in the throughput runs")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in the latency runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency runs")
    parser.add_argument("--quick", action="store_true", help="6,000 events, 4 s latency runs")
    args = parser.parse_args()
    if args.quick:
        args.events, args.seconds = 6000, 4.0
    result = asyncio.run(main_async(args))
    result["targets"] = {"events_per_cpu_s": TARGET_PER_CORE, "p99_ms": TARGET_P99_MS}
    result["targets_met"] = bool((result["events_per_cpu_s"] or 0) >= TARGET_PER_CORE
                                 and result["p99_ms"] < TARGET_P99_MS and result["lost"] == 0
                                 and result["duplicates_after_dedupe"] == 0)
    print_table(result)
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["duplicates_after_dedupe"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
