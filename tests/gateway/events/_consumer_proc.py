"""A pipeline consumer in a process of its own, with its stages in-process (the integration test SIGKILLs it).

    python -m tests.gateway.events._consumer_proc REDIS_URL NAMESPACE CONSUMER_NAME < pipeline.json
"""

from __future__ import annotations

import asyncio
import sys

import orjson


async def main(url: str, namespace: str, name: str, pipeline_json: bytes) -> None:
    import redis.asyncio as aioredis
    from prometheus_client import CollectorRegistry

    from gateway.events.eventing import PipelineConsumer
    from gateway.events.local import LocalStages
    from gateway.events.metrics import EventMetrics
    from gateway.events.spec import PipelineSpec

    pipeline = PipelineSpec.model_validate(orjson.loads(pipeline_json))
    client = aioredis.Redis.from_url(url)
    stages = LocalStages.for_pipeline(pipeline)
    consumer = PipelineConsumer(pipeline, client, stages.call, name, namespace=namespace,
                                metrics=EventMetrics(CollectorRegistry()))
    await consumer.start()
    print("ready", flush=True)
    await consumer.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.stdin.buffer.read()))
