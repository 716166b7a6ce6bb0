"""The 10,000-event workload of the integration tests and what must come out of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from gateway.events.ingest import append_event
from gateway.events.spec import JoinStage, PipelineSpec


def orders_pipeline(namespace: str, **knobs) -> PipelineSpec:
    """web (a stream) filtered to buys and enriched, joined by user with app (HTTP) events; emit_left."""
    return PipelineSpec.model_validate({
        "name": f"orders-{namespace}",
        "sources": [{"name": "web", "stream": f"{namespace}:in:web"}, {"name": "app", "http": True}],
        "stages": [
            {"name": "only_buys", "filter": "event.kind == 'buy' and event.amount > 0", "sources": ["web"]},
            {"name": "enrich", "convert": "tests.gateway.events.sample_stages:enrich", "sources": ["web"]},
            {"name": "pair", "join": {"sources": ["web", "app"], "key": "user", "window_s": 2,
                                      "unmatched": "emit_left"}},
        ],
        "sink": {"stream": f"{namespace}:out"},
        **{"batch_size": 32, "claim_idle_s": 1.0, **knobs},
    })


@dataclass
class Workload:
    outputs: set[str] = field(default_factory=set)  # output ids that must arrive exactly once
    dead: dict[str, str] = field(default_factory=dict)  # event id -> start of the dead-letter reason
    produced: int = 0


async def produce(client, pipeline: PipelineSpec, namespace: str, web_events: int = 6000) -> Workload:
    """`web_events` web entries and 2/3 as many app events (10,000 in all for 6,000), interleaved in time.

    web i: every 5th is a view (filtered out); every 600th is not JSON; every 997th buy has no user (dead letter:
    missing join key). app events exist for i % 3 != 2. A web buy with an app partner yields 'web:..+app:..';
    without one, 'web:..' on expiry (emit_left); an app event without a web buy is dropped on expiry. The join
    pairs by event time (the entry ids' milliseconds): an app event written more than the window after its web
    buy (a producer slowed by a loaded machine) is no partner, and the expected outputs say so.
    """
    window_ms = 1000 * next(s.join.window_s for s in pipeline.stages if isinstance(s, JoinStage))
    work = Workload()
    stream = f"{namespace}:in:web"
    for start in range(0, web_events, 200):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 200, web_events)):
                if i % 600 == 599:
                    pipe.xadd(stream, {"data": b"{not json"})
                    continue
                data = {"kind": "view" if i % 5 == 0 else "buy", "amount": 1 + i % 7, "user": f"u{i}"}
                if i % 997 == 996 and data["kind"] == "buy":
                    del data["user"]
                pipe.xadd(stream, {"data": orjson.dumps(data)})
            web_ids = [x.decode() for x in await pipe.execute()]
        for offset, entry_id in enumerate(web_ids):
            i = start + offset
            web_id = f"web:{entry_id}"
            app_id = None
            if i % 3 != 2:
                app_id = await append_event(client, pipeline, "app", orjson.dumps({"user": f"u{i}", "n": i}),
                                            namespace)
            if i % 600 == 599:
                work.dead[web_id] = "not JSON"
            elif i % 5 == 0:
                pass
            elif i % 997 == 996:
                work.dead[web_id] = "missing join key 'user'"
            elif app_id is None or abs(_entry_ms(app_id) - _entry_ms(web_id)) > window_ms:
                work.outputs.add(web_id)
            else:
                work.outputs.add(f"{web_id}+{app_id}")
        work.produced += len(web_ids)
    work.produced += sum(1 for i in range(web_events) if i % 3 != 2)
    return work


def _entry_ms(event_id: str) -> int:
    """The stream entry's milliseconds: 'web:1700000000000-3' -> 1700000000000."""
    return int(event_id.split(":", 1)[1].split("-", 1)[0])


async def sink_entries(client, stream: str) -> list[tuple[str, dict]]:
    """(output id, data) of every sink entry, in order."""
    entries = await client.xrange(stream)
    return [(fields[b"id"].decode(), orjson.loads(fields[b"data"])) for _, fields in entries]


async def dead_entries(client, pipeline: PipelineSpec, namespace: str) -> list[dict]:
    entries = await client.xrange(f"{namespace}:events:{pipeline.name}:dead")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
