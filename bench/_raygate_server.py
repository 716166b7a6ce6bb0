"""raygate for bench/gateway.py: embedded Redis + a local Ray on loopback + the Platform serving the quickstart.

The shipped gateway settings (num_gateways "auto", access log on) unless --gateways says how many, on the
given port. Started by bench/gateway.py
as its own process (session leader, so Ray's processes share its process group); prints `PID <pid>` for the
Redis server (which runs in a session of its own), then `READY <url>` once POST /linear answers; on SIGTERM it
stops the Platform, Ray and Redis.

    python bench/_raygate_server.py --port 8123 --work-dir /tmp/rgb-x/rg
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/gateway.py would shadow the `gateway` package (and Ray workers inherit the driver's sys.path): drop bench/.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, os.path.dirname(
    os.path.abspath(__file__)))]

from bench._ready import wait_answering  # noqa: E402  (after the sys.path fix above)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work-dir", required=True, help="short directory for Redis data, Ray's temp dir, metrics")
    parser.add_argument("--spec", default=os.path.join(ROOT, "deploy", "examples", "quickstart.yaml"))
    parser.add_argument("--gateways", type=int, default=None,
                        help="gateway processes sharing the port (default: the shipped default)")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    import ray

    from deploy.controller import ControllerConfig
    from deploy.embedded import EmbeddedRedis, free_port, start_local_ray
    from deploy.platform import Platform
    from deploy.spec import load_spec
    from gateway.config import GatewayConfig

    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    redis = platform = None
    try:
        redis = EmbeddedRedis(data_dir=os.path.join(work, "redis"), port=free_port()).start()
        print(f"PID {redis.process.pid}", flush=True)
        start_local_ray(temp_dir=os.path.join(work, "r"), log_to_driver=False)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # in case ray.init installed its own
        metrics_dir = os.path.join(work, "metrics")
        os.makedirs(metrics_dir, exist_ok=True)
        # As `raygate up` runs it: access log on, written to a file per gateway process.
        count = {} if args.gateways is None else {"num_gateways": args.gateways}
        gateway = GatewayConfig(port=args.port, admin_token="bench-" + os.urandom(8).hex(), **count,
                                access_log=True, metrics_dir=metrics_dir, log_dir=os.path.join(work, "logs"))
        platform = Platform(ControllerConfig(redis_url=redis.url, gateway=gateway)).start()
        platform.apply(load_spec(args.spec))
        url = f"http://127.0.0.1:{args.port}/linear"
        wait_answering(url, 60)
        print(f"READY {url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        if platform is not None:
            try:
                platform.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"platform.stop failed: {exc!r}", flush=True)
        if ray.is_initialized():
            ray.shutdown()
        if redis is not None:
            redis.stop()
        print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
