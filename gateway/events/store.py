"""Redis access of the event pipelines, one small store class per concern; each receives a redis.asyncio client.

Keys (namespace defaults to "raygate"; `p` is the pipeline name):
    {ns}:events:{p}:src:{source}    stream: events POSTed to an HTTP source
    {ns}:events:{p}:dead            stream: dead letters (id, source, stage, reason, data)
    {ns}:events:{p}:seen:{id}       string with TTL: output id already delivered by the sink
    {ns}:events:{p}:counts          hash: running totals (read, emitted, dead)
    {ns}:events:{p}:rate:{second}   hash with a short TTL: the same counts per second, for rates
    {ns}:events:{p}:leader          string with TTL: the consumer that runs a stateful (join) pipeline
    consumer group "{ns}:{p}" on every source stream

The stream sink writes its deduplication markers and its XADDs in one Lua script, so an output id is either
recorded and appended, or neither: a crash between the two cannot lose or duplicate an output.
"""

from __future__ import annotations

import time

import orjson
from redis.exceptions import ResponseError

__all__ = ["EventKeys", "SourceStreams", "StreamSinkStore", "DeliveredIds", "DeadLetterStore", "PipelineCounts",
           "ConsumerLease"]

_HOLD = """
local owner = redis.call('GET', KEYS[1])
if owner == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_APPEND_NEW = """
local added = 0
local maxlen = tonumber(ARGV[2])
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    if maxlen > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'id', ARGV[2 * i - 1], 'data', ARGV[2 * i])
    else
      redis.call('XADD', KEYS[1], '*', 'id', ARGV[2 * i - 1], 'data', ARGV[2 * i])
    end
    added = added + 1
  end
end
return added
"""


class EventKeys:
    """Key names of one pipeline."""

    def __init__(self, pipeline: str, namespace: str = "raygate") -> None:
        self.pipeline = pipeline
        self.prefix = f"{namespace}:events:{pipeline}"
        self.group = f"{namespace}:{pipeline}"

    def http_source(self, source: str) -> str:
        return f"{self.prefix}:src:{source}"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    def seen(self, event_id: str) -> str:
        return f"{self.prefix}:seen:{event_id}"

    @property
    def counts(self) -> str:
        return f"{self.prefix}:counts"

    def rate(self, second: int) -> str:
        return f"{self.prefix}:rate:{second}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}:leader"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SourceStreams:
    """The pipeline's source streams under one consumer group: create, append, read, claim, acknowledge."""

    def __init__(self, client, group: str) -> None:
        self.client = client
        self.group = group

    async def ensure_group(self, stream: str, start_id: str = "0") -> None:
        """Create the group (and the stream) if missing; `start_id` "0" reads what is already there."""
        try:
            await self.client.xgroup_create(stream, self.group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def append(self, stream: str, data: bytes) -> str:
        return _text(await self.client.xadd(stream, {"data": data}))

    async def read(self, consumer: str, streams: list[str], count: int, block_ms: int | None,
                   new: bool = True) -> list[tuple[str, str, dict | None]]:
        """Entries for `consumer`: new ones (`>`), or with new=False its own pending ones. (stream, id, fields)."""
        start = ">" if new else "0"
        reply = await self.client.xreadgroup(self.group, consumer, {s: start for s in streams}, count=count,
                                             block=block_ms if new else None)
        out = []
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append((_text(stream), _text(entry_id), fields or None))
        return out

    async def claim_idle(self, consumer: str, stream: str, min_idle_ms: int, count: int, cursor: str = "0-0"
                         ) -> tuple[str, list[tuple[str, str, dict | None]]]:
        """XAUTOCLAIM entries idle at least `min_idle_ms` on any consumer (a dead one, or us) for `consumer`.
        Returns the cursor for the next call ("0-0" after a full pass) and (stream, id, fields) entries."""
        reply = await self.client.xautoclaim(stream, self.group, consumer, min_idle_time=min_idle_ms,
                                             start_id=cursor, count=count)
        if not reply:
            return "0-0", []
        return _text(reply[0]), [(stream, _text(i), fields or None) for i, fields in reply[1] if i]

    async def ack(self, ids_by_stream: dict[str, list[str]]) -> int:
        if not any(ids_by_stream.values()):
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            self.queue_ack(pipe, ids_by_stream)
            return sum(await pipe.execute())

    def queue_ack(self, pipe, ids_by_stream: dict[str, list[str]]) -> None:
        for stream, ids in ids_by_stream.items():
            if ids:
                pipe.xack(stream, self.group, *ids)

    async def trim_acknowledged(self, stream: str) -> int:
        """XTRIM MINID below the oldest entry still pending (or the last delivered one): only for streams that no
        other group reads. Returns how many entries were dropped."""
        summary = await self.client.xpending(stream, self.group)
        oldest = summary.get("min") if summary and summary.get("pending") else None
        if oldest is None:
            info = await self.group_info(stream)
            last = _text(info.get("last-delivered-id")) if info else "0-0"
            ms, _, seq = last.partition("-")
            oldest = f"{ms}-{int(seq or 0) + 1}"  # everything up to the last delivered entry is acknowledged
        return int(await self.client.xtrim(stream, minid=_text(oldest), approximate=False))

    async def backlog(self, stream: str) -> int:
        return int(await self.client.xlen(stream))

    async def group_info(self, stream: str) -> dict | None:
        """XINFO GROUPS entry of our group on `stream` (lag, pending, consumers), or None."""
        try:
            groups = await self.client.xinfo_groups(stream)
        except ResponseError:
            return None
        for info in groups:
            if _text(info.get("name")) == self.group:
                return info
        return None


class StreamSinkStore:
    """Appends outputs to a sink stream once per output id (SET NX with TTL + XADD in one Lua script)."""

    def __init__(self, client, stream: str, keys: EventKeys, ttl_s: float, maxlen: int | None = None) -> None:
        self.client = client
        self.stream = stream
        self.keys = keys
        self.ttl_s = max(1, int(ttl_s))
        self.maxlen = maxlen or 0  # 0: no cap
        self._script = client.register_script(_APPEND_NEW)

    async def append_new(self, events: list[dict]) -> int:
        """Append the events whose ids were not appended before; returns how many were new."""
        if not events:
            return 0
        keys = [self.stream] + [self.keys.seen(e["id"]) for e in events]
        args: list = [self.ttl_s, self.maxlen]
        for e in events:
            args += [e["id"], orjson.dumps(e.get("data"))]
        return int(await self._script(keys=keys, args=args))


class DeliveredIds:
    """Output ids a non-stream sink (deployment, webhook) has delivered. Check before, mark after delivery: a
    crash between the two re-delivers those outputs (the batch carries ids so the receiver can deduplicate)."""

    def __init__(self, client, keys: EventKeys, ttl_s: float) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = max(1, int(ttl_s))

    async def undelivered(self, events: list[dict]) -> list[dict]:
        if not events:
            return []
        flags = await self.client.mget([self.keys.seen(e["id"]) for e in events])
        return [e for e, flag in zip(events, flags, strict=True) if flag is None]

    async def mark(self, events: list[dict]) -> None:
        if not events:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for e in events:
                pipe.set(self.keys.seen(e["id"]), "1", ex=self.ttl_s)
            await pipe.execute()


class DeadLetterStore:
    """The pipeline's dead-letter stream."""

    def __init__(self, client, keys: EventKeys, maxlen: int = 1_000_000) -> None:
        self.client = client
        self.keys = keys
        self.maxlen = maxlen  # approximate cap: the oldest dead letters are trimmed beyond it

    async def add(self, dead: list[dict]) -> None:
        if not dead:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            self.queue(pipe, dead)
            await pipe.execute()

    def queue(self, pipe, dead: list[dict]) -> None:
        """Add the XADDs to `pipe` (a caller's MULTI, e.g. with the acknowledgements)."""
        for d in dead:
            pipe.xadd(self.keys.dead, {
                "id": str(d.get("id") or ""), "source": str(d.get("source") or ""),
                "stage": str(d.get("stage") or ""), "reason": str(d.get("reason") or "")[:2000],
                "data": orjson.dumps(d.get("data"), default=repr)[:65536]},
                maxlen=self.maxlen, approximate=True)

    async def count(self) -> int:
        return int(await self.client.xlen(self.keys.dead))

    async def read(self, count: int = 100) -> list[dict]:
        entries = await self.client.xrange(self.keys.dead, count=count)
        return [{_text(k): _text(v) for k, v in fields.items()} for _, fields in entries]


class PipelineCounts:
    """Running totals and per-second buckets (for rates) of one pipeline, shared by all its consumers."""

    FIELDS = ("read", "emitted", "dead")

    def __init__(self, client, keys: EventKeys, bucket_ttl_s: int = 120) -> None:
        self.client = client
        self.keys = keys
        self.bucket_ttl_s = bucket_ttl_s

    async def add(self, counts: dict[str, int], now: float | None = None) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            self.queue(pipe, counts, now)
            await pipe.execute()

    def queue(self, pipe, counts: dict[str, int], now: float | None = None) -> None:
        second = int(time.time() if now is None else now)
        for name, value in counts.items():
            if value:
                pipe.hincrby(self.keys.counts, name, value)
                pipe.hincrby(self.keys.rate(second), name, value)
        pipe.expire(self.keys.rate(second), self.bucket_ttl_s)

    async def totals(self) -> dict[str, int]:
        raw = await self.client.hgetall(self.keys.counts)
        got = {_text(k): int(v) for k, v in raw.items()}
        return {name: got.get(name, 0) for name in self.FIELDS}

    async def rates(self, window_s: int = 10, now: float | None = None) -> dict[str, float]:
        """Per-second averages over the last `window_s` complete seconds."""
        last = int(time.time() if now is None else now) - 1
        async with self.client.pipeline(transaction=False) as pipe:
            for second in range(last - window_s + 1, last + 1):
                pipe.hgetall(self.keys.rate(second))
            buckets = await pipe.execute()
        sums = dict.fromkeys(self.FIELDS, 0)
        for bucket in buckets:
            for k, v in bucket.items():
                if _text(k) in sums:
                    sums[_text(k)] += int(v)
        return {f"{name}_per_s": sums[name] / window_s for name in self.FIELDS}


class ConsumerLease:
    """One active consumer per stateful pipeline: a key holding the owner's name with a TTL, taken or renewed
    atomically (Lua). A consumer that stops renewing (killed) loses it after `ttl_s`."""

    def __init__(self, client, keys: EventKeys, owner: str, ttl_s: float) -> None:
        self.client = client
        self.key = keys.leader
        self.owner = owner
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Take the lease if free, renew it if ours; False while another consumer holds it."""
        return bool(await self._hold(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])

    async def holder(self) -> str | None:
        value = await self.client.get(self.key)
        return None if value is None else _text(value)
