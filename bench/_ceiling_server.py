"""The ceiling for bench/gateway.py: the quickstart's Linear model computed in-process by aiohttp on uvloop.

No Ray, no queue, no second process: parse the JSON body with orjson, call the model, answer {"y": ...}.
Started by bench/gateway.py as its own process; prints `READY <url>` once it listens, stops on SIGTERM.

    python bench/_ceiling_server.py --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/gateway.py would shadow the `gateway` package (and Ray workers inherit the driver's sys.path): drop bench/.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, os.path.dirname(
    os.path.abspath(__file__)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/linear")
    args = parser.parse_args()

    import orjson
    import uvloop
    from aiohttp import web

    from deploy.examples.models import Linear

    model = Linear()
    json_type = "application/json"

    async def handle(request: web.Request) -> web.Response:
        try:
            result = model(orjson.loads(await request.read()))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return web.Response(status=400, body=orjson.dumps({"error": str(exc)}), content_type=json_type)
        return web.Response(body=orjson.dumps(result), content_type=json_type)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post(args.path, handle)
        runner = web.AppRunner(app, access_log=None)  # the ceiling logs nothing per request
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, backlog=1024)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"READY http://{args.host}:{args.port}{args.path}", flush=True)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
